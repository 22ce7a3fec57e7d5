"""The ``bench`` command: the latency benchmark."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import typer

from ._common import UserError, friendly


@friendly
def bench(ctx: typer.Context) -> None:
    """Run the latency benchmark (benchmarks/latency.py); extra arguments are passed on."""
    candidates = [
        Path.cwd() / "benchmarks" / "latency.py",
        Path(__file__).resolve().parents[2] / "benchmarks" / "latency.py",
    ]
    script = next((p for p in candidates if p.is_file()), None)
    if script is None:
        raise UserError("benchmarks/latency.py not found (run from a ModelCache source checkout)")
    spec = importlib.util.spec_from_file_location("modelcache_bench_latency", script)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    # dataclasses (and typing) look the module up in sys.modules while it executes
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    entry = getattr(module, "main", None)
    if not callable(entry):
        raise UserError(f"{script} has no main()")
    args = list(ctx.args)
    if inspect.signature(entry).parameters:
        result = entry(args)
    else:
        saved, sys.argv = sys.argv, [str(script), *args]
        try:
            result = entry()
        finally:
            sys.argv = saved
    if isinstance(result, int) and result:
        raise typer.Exit(result)
