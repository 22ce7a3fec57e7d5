"""How to map cache partitions onto Milvus: a collection per partition or one partition-key field.

Method: on milvus-lite (embedded, the same client API as a Milvus server) with random unit
vectors of dimension 384 (MiniLM's), build P partitions of N vectors each, once as P
collections (HNSW, cosine) and once as one collection whose ``partition`` field is a Milvus
partition key (the search filters on it). Report the creation cost per partition, the p50/p90
latency of a top-5 search in one partition, and the cost of dropping one partition.

Usage: ``python benchmarks/milvus_partitions.py [--partitions 20,200] [--per 50]
[--queries 200] [--out benchmarks/results/milvus_partitions.md]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import write_report

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import numpy as np

DIM = 384


def _vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _run(mode: str, partitions: int, per: int, queries: int, seed: int) -> dict[str, float]:
    from modelcache.vectors import MilvusVectorStore

    rng = np.random.default_rng(seed)
    folder = Path(tempfile.mkdtemp(prefix="mc-milvus-bench-"))
    store = MilvusVectorStore(str(folder / "milvus.db"), partition_key=(mode == "partition_key"))
    try:
        names = [f"p{i:05d}" for i in range(partitions)]
        create_ms = []
        for name in names:
            vecs = _vectors(rng, per)
            started = time.perf_counter()
            store.create(name)
            store.upsert(name, [f"{name}-{j}" for j in range(per)], vecs)
            create_ms.append((time.perf_counter() - started) * 1000)
        query_ms = []
        for _ in range(queries):
            name = names[int(rng.integers(partitions))]
            q = _vectors(rng, 1)[0]
            started = time.perf_counter()
            found = store.query(name, q, 5)
            query_ms.append((time.perf_counter() - started) * 1000)
            assert all(i.startswith(name + "-") for i, _ in found), "a partition leaked"
        drop_ms = []
        for name in names[:5]:
            started = time.perf_counter()
            store.drop(name)
            drop_ms.append((time.perf_counter() - started) * 1000)
        return {
            "create_p50": statistics.median(create_ms),
            "create_total_s": sum(create_ms) / 1000,
            "query_p50": statistics.median(query_ms),
            "query_p90": _pct(query_ms, 0.9),
            "drop_p50": statistics.median(drop_ms),
        }
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", default="20,200")
    parser.add_argument("--per", type=int, default=50)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    lines = [
        "# Milvus partition mapping (milvus-lite)",
        "",
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared), Python {platform.python_version()}; "
        f"{args.per} random unit vectors (dim {DIM}) per partition, {args.queries} top-5 "
        "searches in random partitions.",
        "",
        "| mapping | partitions | create+fill p50 ms | total create s | search p50 ms "
        "| search p90 ms | drop p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for count in [int(x) for x in args.partitions.split(",")]:
        for mode in ("collection", "partition_key"):
            r = _run(mode, count, args.per, args.queries, seed=count)
            lines.append(
                f"| {mode} | {count} | {r['create_p50']:.1f} | {r['create_total_s']:.1f} | "
                f"{r['query_p50']:.2f} | {r['query_p90']:.2f} | {r['drop_p50']:.1f} |"
            )
            print(lines[-1], flush=True)
    write_report([*lines, ""], args.out)


if __name__ == "__main__":
    main()
