"""Memory with many partitions: RSS of one process as one key creates N partitions.

Method: an embedded cache (Chroma folder + SQLite) with the FakeEmbedder (no model in memory),
one entry and one lookup per partition (a new ``params`` value each, as a hostile key would
send), RSS read from /proc after each step; then the median cost of a /metrics scrape with a
stats pass per scrape and with one reused reading. Prints tables; `--partitions 500`.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from modelcache import Cache, CacheConfig, FakeEmbedder, Request


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--partitions", type=int, default=500)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = CacheConfig(path=folder)
        with Cache(config, embedder=FakeEmbedder()) as cache:
            if getattr(cache, "degraded", None):  # exact-only: the numbers would mean nothing
                raise SystemExit(f"the cache started degraded: {cache.degraded}")
            cache.insert(Request.from_text("warm up", params={"seed": -1}), "x")
            base = _rss_mb()
            print("| partitions | RSS MB | growth MB | s per partition |")
            print("|---:|---:|---:|---:|")
            print(f"| 1 | {base:.0f} | 0 | - |")
            step = max(1, args.partitions // args.steps)
            started = time.perf_counter()
            for i in range(args.partitions):
                request = Request.from_text(f"question {i}", params={"seed": i})
                cache.insert(request, f"answer {i}")
                cache.lookup(request)
                if (i + 1) % step == 0:
                    gc.collect()
                    rss = _rss_mb()
                    per = (time.perf_counter() - started) / (i + 1)
                    print(f"| {i + 1} | {rss:.0f} | {rss - base:.0f} | {per:.3f} |")
            _scrape_table(cache)


def _median_ms(func: Callable[[], object], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _scrape_table(cache: Cache) -> None:
    """Cost of one /metrics scrape: a store reading per scrape vs one reused reading."""
    from modelcache.server.metrics import ServerMetrics

    every = ServerMetrics(cache, max_age=0)
    reused = ServerMetrics(cache, max_age=3600)
    reused.render()  # the one reading the next scrapes reuse
    print()
    print("| /metrics scrape | p50 ms |")
    print("|---|---:|")
    print(f"| stats pass per scrape (before) | {_median_ms(every.render):.1f} |")
    print(f"| reading reused (max_age) | {_median_ms(reused.render):.2f} |")


if __name__ == "__main__":
    main()
