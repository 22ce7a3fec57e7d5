"""Vector-store latency: milvus-lite vs embedded Chroma, same vectors, same queries.

Method: one partition is filled with N random unit vectors of dimension 384 (MiniLM's) through
each store's ``upsert`` in batches of 1,000; then the same queries run on every store:
near-duplicates of stored vectors (the stored vector plus noise, so a semantic hit exists) as a
top-5 search, and the same search returning the stored vectors (``query_vectors``, the path of
every semantic lookup). Reported: insert rate, p50/p90/p99/max latency in ms, and recall@1
(the source vector ranked first). Stores: Chroma ``PersistentClient`` in a temporary folder;
milvus-lite with a collection per partition (its default) and with a partition key.

Usage: ``python benchmarks/milvus.py [--sizes 10000,100000] [--queries 300]
[--stores chroma,milvus-lite,milvus-lite-key] [--out benchmarks/results/milvus.md]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import write_report

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import numpy as np

from modelcache.vectors import ChromaVectorStore, MilvusVectorStore, VectorStore

DIM = 384
BATCH = 1_000


def _open(kind: str, folder: Path) -> VectorStore:
    if kind == "chroma":
        return ChromaVectorStore(path=str(folder / "chroma"))
    return MilvusVectorStore(
        str(folder / "milvus.db"), partition_key=kind == "milvus-lite-key", timeout=120.0
    )


def _data(n: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sources = [int(i) for i in rng.integers(0, n, size=queries)]
    noisy = vectors[sources] + 0.02 * rng.standard_normal((queries, DIM)).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    return vectors, noisy, sources


def _pcts(ms: list[float]) -> tuple[float, float, float, float]:
    a = np.asarray(ms)
    return (
        float(np.percentile(a, 50)),
        float(np.percentile(a, 90)),
        float(np.percentile(a, 99)),
        float(a.max()),
    )


def _run(kind: str, n: int, queries: int) -> dict[str, Any]:
    vectors, noisy, sources = _data(n, queries, seed=n)
    ids = [f"e{i}" for i in range(n)]
    folder = Path(tempfile.mkdtemp(prefix="mc-vbench-"))
    store = _open(kind, folder)
    try:
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            end = start + BATCH
            store.upsert("bench", ids[start:end], vectors[start:end])
        insert_s = time.perf_counter() - started
        store.query("bench", noisy[0], 5)  # warm-up: loads, caches
        result: dict[str, Any] = {"insert_per_s": n / insert_s}
        for label, search in (("top5", store.query), ("top5_vectors", store.query_vectors)):
            times, found = [], 0
            for q, src in zip(noisy, sources, strict=True):
                t0 = time.perf_counter()
                hits = search("bench", q, 5)
                times.append((time.perf_counter() - t0) * 1000)
                found += bool(hits) and hits[0][0] == ids[src]
            result[label] = (*_pcts(times), found / len(sources))
        return result
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--stores", default="chroma,milvus-lite,milvus-lite-key")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    lines = [
        "# Vector-store latency: milvus-lite vs Chroma",
        "",
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} CPUs shared with other jobs, Python {platform.python_version()}; "
        f"random unit vectors dim {DIM}, one partition, {args.queries} near-duplicate queries "
        "(top-5), the same queries returning the stored vectors.",
        "",
        "| store | entries | insert/s | query | p50 ms | p90 ms | p99 ms | max ms | recall@1 |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in [int(x) for x in args.sizes.split(",")]:
        for kind in args.stores.split(","):
            r = _run(kind, n, args.queries)
            for label in ("top5", "top5_vectors"):
                p50, p90, p99, mx, recall = r[label]
                lines.append(
                    f"| {kind} | {n:,} | {r['insert_per_s']:,.0f} | {label} | {p50:.2f} | "
                    f"{p90:.2f} | {p99:.2f} | {mx:.2f} | {recall:.2f} |"
                )
                print(lines[-1], flush=True)
    write_report([*lines, ""], args.out)


if __name__ == "__main__":
    main()
