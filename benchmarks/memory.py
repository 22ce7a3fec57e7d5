"""Peak RSS of a process serving lookups at a large size, per component, and its lookup times.

Reuses ``peers.py``'s workload, fill-vector cache and serving probe without GPTCache: fills a
ModelCache folder to ``--size`` entries from the cached vectors (once; ``--workdir`` keeps it
between runs), then starts ``--runs`` fresh processes that open it and serve the same 151
lookups (``peers.py --serve-probe``), RSS after each stage (``/proc/self/status``) and the
whole process's peak from ``/usr/bin/time``. Settings to compare are passed to the probe as
environment variables (``--variant NAME=VAR=VALUE,...``) and run alternating.

Usage: ``python benchmarks/memory.py [--size 100000] [--runs 3] [--workdir DIR]
[--variant name=ENV=VALUE] [--out benchmarks/results/memory.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from _common import add_data_option
from peers import vectors_upto
from runtime import run_child

from modelcache import Cache, CacheConfig, Request
from modelcache.embedding import build_embedder
from modelcache.lab.latency import PrecomputedEmbedder, load_workload

PEERS = Path(__file__).with_name("peers.py")


def fill(folder: Path, work: Any, size: int, vector_cache: Path) -> None:
    """Fill ``folder`` to ``size`` entries from the cached vectors (skipped when already full)."""
    if folder.is_dir():
        with Cache(CacheConfig(path=str(folder))) as cache:
            if cache.stats()["entries"] == size:
                return
        raise SystemExit(f"{folder} holds another fill; remove it or pick another --workdir")
    model = build_embedder("minilm", threads=1, backend="onnx")
    keys = [Request.from_text(t).query_text for t in work.fill[:size]]
    all_keys = [Request.from_text(t).query_text for t in work.fill]
    vectors = vectors_upto(model, all_keys, vector_cache, size)
    embedder = PrecomputedEmbedder(model, keys, vectors)
    t0 = time.perf_counter()
    with Cache(CacheConfig(path=str(folder)), embedder=embedder) as cache:
        for start in range(0, size, 1000):
            chunk = work.fill[start : start + 1000]
            cache.insert_many([(Request.from_text(t), {"answer": t}) for t in chunk])
        cache.flush()
        assert cache.stats()["entries"] == size
    print(f"filled {size:,} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def probe(folder: Path, queries: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One fresh serving process (``peers.py --serve-probe``) under ``env``: its stages and peak."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
        fh.write(json.dumps(queries))
        fh.flush()
        assigns = " ".join(f"{k}={v}" for k, v in env.items())
        wall, peak, out = run_child(
            [
                "sh",
                "-c",
                f'{assigns} "{sys.executable}" "{PEERS}" --serve-probe "{folder}" < "{fh.name}"',
            ]
        )
    return {"wall": wall, "peak": peak, **json.loads(out.splitlines()[-1])}


def parse_variants(specs: Sequence[str]) -> dict[str, dict[str, str]]:
    """``name=VAR=VALUE,VAR2=VALUE2`` specs; the default variant sets nothing."""
    variants: dict[str, dict[str, str]] = {"default": {}}
    for spec in specs:
        name, _, rest = spec.partition("=")
        variants[name] = dict(item.split("=", 1) for item in rest.split(",") if item)
    return variants


def render(size: int, results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: stages per variant (medians), peaks, lookup times."""
    lines = [
        f"### Serving process at {size:,} entries (medians of {len(next(iter(results.values())))}"
        " alternating runs)",
        "",
        "| variant | stage | seconds since start | RSS MiB | +MiB | CPU s (process) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        stages = list(runs[0]["marks"])
        prev = 0.0
        for st in stages:
            rss = statistics.median(r["marks"][st]["rss_mib"] for r in runs)
            secs = statistics.median(r["marks"][st]["s"] for r in runs)
            cpu = statistics.median(r["marks"][st].get("cpu_s", float("nan")) for r in runs)
            lines.append(
                f"| {name} | {st} | {secs:.2f} | {rss:,.0f} | {rss - prev:+,.0f} | {cpu:.2f} |"
            )
            prev = rss
    lines += [
        "",
        "| variant | peak RSS MiB (/usr/bin/time), runs | median | lookup ms p50 (150) |"
        " jieba loaded |",
        "|---|---|---:|---:|---|",
    ]
    for name, runs in results.items():
        peaks = [r["peak"] for r in runs]
        p50 = statistics.median(statistics.median(r["lookup_ms"]) for r in runs if r["lookup_ms"])
        jieba = sorted({str("jieba" in r["heavy"]) for r in runs})
        lines.append(
            f"| {name} | {', '.join(f'{p:,.0f}' for p in peaks)} | {statistics.median(peaks):,.0f}"
            f" | {p50:.2f} | {'/'.join(jieba)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Fill once, then measure the serving processes of each variant, alternating."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mc-memory")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--fill-only", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    add_data_option(parser)
    parser.add_argument(
        "--vector-cache", type=Path, default=Path(tempfile.gettempdir()) / "modelcache-peers"
    )
    args = parser.parse_args(argv)
    # the same workload as peers.py's defaults, so its vector cache answers the fill
    work = load_workload(args.data, 200, args.size, 500)
    folder = args.workdir / "modelcache"
    args.workdir.mkdir(parents=True, exist_ok=True)
    fill(folder, work, args.size, args.vector_cache)
    if args.fill_only:
        return 0
    queries = work.semantic[:50] + work.fill[:50] + work.miss[:50]
    random.Random(1).shuffle(queries)
    queries.insert(0, work.semantic[0])
    variants = parse_variants(args.variant)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for r in range(args.runs):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            results[name].append(probe(folder, queries, variants[name]))
            print(f"run {r + 1} {name}: peak {results[name][-1]['peak']:,.0f} MiB", file=sys.stderr)
    load = os.getloadavg()
    text = render(args.size, results)
    text += (
        f"\nload average at the end {load[0]:.1f}; variants: "
        + "; ".join(f"{n}: {v or 'defaults'}" for n, v in variants.items())
        + ".\n"
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
