"""Memory and speed of the ONNX embedding session with and without its CPU allocator options.

Each variant runs in a fresh process: load the shipped model (one thread), embed 200 QQP
questions one at a time; reported: RSS added by the model (after one probe embedding), RSS
after the 200, the process's peak, wall p50 and CPU per embedding. ``enable_cpu_mem_arena``
and ``enable_mem_pattern`` are onnxruntime ``SessionOptions``; variants alternate order by round.

Usage: ``python benchmarks/onnx_options.py [--rounds 3] [--out FILE.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import add_data_option, proc_rss

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {
    "defaults": {},
    "arena off": {"enable_cpu_mem_arena": False},
    "mem pattern off": {"enable_mem_pattern": False},
    "both off": {"enable_cpu_mem_arena": False, "enable_mem_pattern": False},
}


def _rss() -> tuple[float, float]:
    """Current and peak RSS of this process, MiB."""
    rss = proc_rss()
    return rss["rss_mib"], rss["peak_mib"]


def child(name: str, texts: list[str]) -> dict[str, Any]:
    """(In a fresh process.) Load the model with the variant's options and embed ``texts``."""
    import onnxruntime as ort

    from modelcache.embedding import build_embedder

    original = ort.SessionOptions

    def options() -> Any:
        opts = original()
        for key, value in VARIANTS[name].items():
            setattr(opts, key, value)
        return opts

    ort.SessionOptions = options  # the module builds its options through this name
    base = _rss()[0]
    embedder = build_embedder("minilm", threads=1, backend="onnx")
    embedder.embed(["model probe"])
    loaded = _rss()[0]
    times = []
    cpu0 = time.process_time()
    for text in texts:
        t0 = time.perf_counter()
        embedder.embed([text])
        times.append((time.perf_counter() - t0) * 1000)
    cpu = (time.process_time() - cpu0) * 1000 / len(texts)
    rss, peak = _rss()
    return {
        "model_mib": loaded - base,
        "after_mib": rss - base,
        "peak_mib": peak,
        "p50_ms": statistics.median(times),
        "cpu_ms": cpu,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run every variant ``--rounds`` times in fresh processes, order alternating."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    add_data_option(parser)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, json.loads(sys.stdin.read()))))
        return 0
    from modelcache.lab.latency import load_workload

    work = load_workload(args.data, 200, 100_000, 500)
    texts = json.dumps(work.semantic[:100] + work.miss[:100])
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name in list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS)):
            done = subprocess.run(
                [sys.executable, __file__, "--child", name],
                input=texts,
                capture_output=True,
                text=True,
                check=True,
            )
            results[name].append(json.loads(done.stdout.splitlines()[-1]))
    lines = [
        "| session options | model RSS MiB (runs) | RSS after 200 MiB | peak MiB | wall p50 ms |"
        " CPU ms per embedding |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        models = ", ".join(f"{r['model_mib']:.0f}" for r in runs)
        lines.append(
            f"| {name} | {models} |"
            f" {med['after_mib']:.0f} | {med['peak_mib']:.0f} | {med['p50_ms']:.2f} |"
            f" {med['cpu_ms']:.2f} |"
        )
    load = os.getloadavg()[0]
    text = "\n".join(lines) + f"\n\n{args.rounds} rounds, medians; load average {load:.1f}.\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
