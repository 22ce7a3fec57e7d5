"""The ``bench`` command: the latency benchmark of :mod:`modelcache.lab.latency`.

It runs from the installed package, no source checkout needed; the lab loads when it runs.
"""

from __future__ import annotations

import typer

from ._common import friendly


@friendly
def bench(ctx: typer.Context) -> None:
    """Run the latency benchmark; extra arguments are passed on.

    Its options (--data, default $MODELCACHE_DATA; --sizes, --queries, --out, ...):
    [bold]python -m modelcache.lab.latency --help[/]
    """
    from ..lab.latency import main as run_benchmark

    code = run_benchmark(list(ctx.args), prog="modelcache bench")
    if code:
        raise typer.Exit(code)
