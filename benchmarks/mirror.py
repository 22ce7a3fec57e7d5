"""Semantic lookups answered from the in-memory copy of small partitions vs from Chroma's query.

Method (printed with the results): for each size, one partition of distinct Quora questions
from ``../shared/data/qqp_train.jsonl`` (read by path, never copied) stored with
``Cache.insert_many`` (the shipped all-MiniLM-L6-v2 under ONNX Runtime, SQLite + embedded
Chroma, the default configuration). Two caches of the same process then open that folder and
share the embedder: one with the default ``vectors_in_memory`` (queries answered by the copy,
``vectors/mirror.py``), one with ``vectors_in_memory=0`` (Chroma's query). Probes are stored
questions lower-cased with the ``?`` moved (semantic hits, never exact ones); each probe is
looked up by both caches in turn, the order alternating, after a warm-up, with the default
lookup deadline. Reported: p50/p95 of wall (``perf_counter``) and CPU (``process_time``) per
lookup, the bare query embedding (``embed([text])`` of the same probes) and the vector query
stage alone (the store's ``query_vectors`` for the probe's recall vector).

Usage: ``python benchmarks/mirror.py [--sizes 1000,5000,10000] [--probes 300] [--out FILE]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import add_data_option, proc_rss, write_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def _questions(data: Path, count: int) -> list[str]:
    seen: dict[str, None] = {}
    with open(data / "qqp_train.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            for text in (row["a"], row["b"]):
                if text.strip() and text.lower() not in seen:
                    seen[text.lower()] = None
            if len(seen) >= count:
                break
    return list(seen)[:count]


def _probe(text: str) -> str:
    return text.lower().replace("?", "").strip() + " ?"


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def run_size(size: int, probes: int, data: Path) -> list[str]:
    """The table rows of one partition size."""
    from modelcache import Cache, CacheConfig, Request

    questions = _questions(data, size)
    folder = Path(tempfile.mkdtemp(prefix="mc-mirror-"))
    filler = Cache(CacheConfig(path=str(folder)))
    started = time.perf_counter()
    filler.insert_many([(Request(query=q), {"q": i}) for i, q in enumerate(questions)])
    fill_s = time.perf_counter() - started
    embedder = filler.embedder
    copy = Cache(CacheConfig(path=str(folder)), embedder=embedder)
    chroma = Cache(CacheConfig(path=str(folder), vectors_in_memory=0), embedder=embedder)
    texts = [_probe(q) for q in questions[: probes + 30]]
    for text in texts[:30]:  # warm-up; the first lookup starts the copy in the background
        copy.lookup(Request(query=text))
        chroma.lookup(Request(query=text))
    time.sleep(1.0)
    store = copy._vectors
    partition = Request(query="x").partition.id
    wait = time.monotonic() + 60
    while not store._mirror.copied(partition) and time.monotonic() < wait:  # type: ignore[attr-defined]
        time.sleep(0.05)
    times: dict[str, tuple[list[float], list[float]]] = {
        k: ([], []) for k in ("copy", "chroma", "embed", "query copy", "query chroma")
    }
    hits = {"copy": 0, "chroma": 0}
    for n, text in enumerate(texts[30:]):
        request = Request(query=text)
        order = [("copy", copy), ("chroma", chroma)]
        for name, cache in order if n % 2 == 0 else order[::-1]:
            found: list[object] = []
            wall, cpu = _timed(lambda c=cache, r=request, f=found: f.append(c.lookup(r)))
            times[name][0].append(wall)
            times[name][1].append(cpu)
            hits[name] += found[0] is not None
        vector = embedder.embed([text + " "])[0]
        wall, cpu = _timed(lambda t=text: embedder.embed([t + "  "]))
        times["embed"][0].append(wall)
        times["embed"][1].append(cpu)
        for name, cache in (("query copy", copy), ("query chroma", chroma)):
            wall, cpu = _timed(lambda c=cache, v=vector: c._vectors.query_vectors(partition, v, 5))
            times[name][0].append(wall)
            times[name][1].append(cpu)
    rss = proc_rss()
    for cache in (copy, chroma, filler):
        cache.close()
    rows = []
    for name, label in (
        ("copy", "semantic lookup, answered by the copy"),
        ("chroma", "semantic lookup, answered by Chroma (`vectors_in_memory=0`)"),
        ("embed", "bare query embedding"),
        ("query copy", "vector query alone: the copy"),
        ("query chroma", "vector query alone: Chroma"),
    ):
        wall, cpu = times[name]
        hit = f"{hits[name]}/{len(texts) - 30}" if name in hits else ""
        rows.append(
            f"| {size:,} | {label} | {statistics.median(wall):.3f} | {_p(wall, 95):.3f} | "
            f"{statistics.median(cpu):.3f} | {hit} |"
        )
    copy_p50 = statistics.median(times["copy"][0])
    chroma_p50 = statistics.median(times["chroma"][0])
    embed_p50 = statistics.median(times["embed"][0])
    rows.append(
        f"| {size:,} | ratio to the bare embedding (wall p50): copy / Chroma | "
        f"{copy_p50 / embed_p50:.2f}x / {chroma_p50 / embed_p50:.2f}x | | | |"
    )
    print(f"# {size}: fill {fill_s:.0f} s, RSS {rss['rss_mib']:.0f} MiB", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--out", default=None)
    add_data_option(parser)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    lines = [
        "# Semantic lookups: the in-memory copy vs Chroma's query",
        "",
        __doc__.split("\n\n", 1)[1].split("\n\nUsage")[0],
        "",
        f"Run: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, load average "
        f"{os.getloadavg()[0]:.1f}; `python benchmarks/mirror.py --sizes {args.sizes} "
        f"--probes {args.probes}`",
        "",
        "| entries | measure | wall p50 ms | wall p95 ms | CPU p50 ms | hits |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for size in sizes:
        lines += run_size(size, args.probes, args.data)
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
