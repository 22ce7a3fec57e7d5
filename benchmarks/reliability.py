"""Reliability probes of issue 13: a hung database, a clear racing an insert, deadline cost.

Method (printed with the results):

* ``hang``: a cache on MariaDB or PostgreSQL reached through a TCP proxy (the one of
  ``tests/reliability``) that is switched to *blackhole* (accepts, never answers). Each
  operation runs in a thread and is timed, capped at ``--cap`` seconds ("hung" past it). Then
  the link is restored and the time until a lookup hits again is measured.
* ``race``: two caches on one SQLite store (two processes' view); per round a thread clears
  the tenant while the main thread inserts one entry, then a scoped clear runs: a round fails
  when an entry survives it (undeletable by scope).
* ``overhead``: exact-hit lookup latency (p50/p90/p99) with ``lookup_timeout`` set and unset.
* ``deadlock``: two caches (own connection pools) on one MariaDB / PostgreSQL database: one
  thread hits random entries and flushes the hit counts, the other removes and re-inserts
  random entries; counted are failed removes/inserts and lost hit-count batches.

The script runs against whichever ``modelcache`` is importable, so the same probes measure the
code before and after a change. Usage: ``python benchmarks/reliability.py [--probes
hang,race,overhead] [--cap 15] [--rounds 100]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import numpy as np

from modelcache import Cache, CacheConfig, FakeEmbedder, Request

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))
from reliability_support import FaultProxy

FAST = {"lookup_timeout": 0.5, "sql_timeout": 2.0, "sql_connect_timeout": 2.0}


def config(**fields: Any) -> CacheConfig:
    """A config with only the fields this version of CacheConfig knows."""
    known = CacheConfig.model_fields
    return CacheConfig(**{k: v for k, v in fields.items() if k in known})


def throwaway_database(kind: str) -> tuple[str, Callable[[], None]]:
    """A new empty MariaDB or PostgreSQL database: (URL, drop function)."""
    name = f"mc_probe_{secrets.token_hex(4)}"
    if kind == "mariadb":
        import pymysql

        admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
        admin.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")

        def drop() -> None:
            admin.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
            admin.close()

        return f"mysql+pymysql://root@127.0.0.1:3306/{name}", drop
    import psycopg

    for user in ("root", "postgres"):
        try:
            pg = psycopg.connect(host="127.0.0.1", user=user, dbname="test", autocommit=True)
            break
        except psycopg.Error:
            continue
    pg.execute(f'CREATE DATABASE "{name}"')

    def drop_pg() -> None:
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        pg.close()

    return f"postgresql+psycopg://{user}@127.0.0.1:5432/{name}", drop_pg


def capped(fn: Callable[[], Any], cap: float) -> str:
    """Seconds ``fn`` took (and how it ended), or "hung" past ``cap``."""
    outcome: list[str] = []

    def run() -> None:
        started = time.monotonic()
        try:
            result = fn()
            end = "miss" if result is None else "ok"
        except Exception as exc:
            end = type(exc).__name__
        outcome.append(f"{time.monotonic() - started:.2f} s ({end})")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(cap)
    return outcome[0] if outcome else f"> {cap:.0f} s (hung)"


def probe_hang(cap: float) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for kind in ("mariadb", "postgres"):
        rows += _hang_one(kind, cap)
    return rows


def _hang_one(kind: str, cap: float) -> list[tuple[str, ...]]:
    url, drop = throwaway_database(kind)
    port = 3306 if kind == "mariadb" else 5432
    proxy = FaultProxy("127.0.0.1", port)
    proxied = url.replace(f":{port}/", f":{proxy.port}/")
    folder = tempfile.mkdtemp(prefix="mc-hang-")
    cache = Cache(config(path=folder, sql_url=proxied, **FAST), embedder=FakeEmbedder())
    known = Request.from_text("how do I reset my password")
    cache.insert(known, "reset it")
    proxy.blackhole()
    ops: dict[str, Callable[[], Any]] = {
        "lookup (exact)": lambda: cache.lookup(known),
        "lookup (semantic)": lambda: cache.lookup(Request.from_text("how to reset password")),
        "insert": lambda: cache.insert(Request.from_text("a new question"), "x"),
        "remove": lambda: cache.remove([known.exact_key + "0"]),
        "clear (scoped)": lambda: cache.clear(tenant="nobody"),
        "stats": cache.stats,
    }
    rows = [(kind, name, capped(op, cap)) for name, op in ops.items()]
    proxy.restore()
    started = time.monotonic()
    back = "not within 60 s"
    while time.monotonic() - started < 60:
        if capped(lambda: cache.lookup(known), 5).endswith("(ok)"):
            back = f"{time.monotonic() - started:.2f} s"
            break
        time.sleep(0.2)
    rows.append((kind, "recovery after restore", back))
    proxy.close()
    threading.Thread(target=cache.close, daemon=True).start()  # may hang on old code
    drop_safe(drop)
    return rows


def drop_safe(drop: Callable[[], None]) -> None:
    try:
        drop()
    except Exception as exc:  # a hung connection of the old code may hold a lock
        print(f"(could not drop a probe database: {type(exc).__name__})", file=sys.stderr)


def probe_race(rounds: int) -> list[tuple[str, ...]]:
    folder = tempfile.mkdtemp(prefix="mc-race-")
    writer = Cache(config(path=folder), embedder=FakeEmbedder())
    admin = Cache(config(path=folder), embedder=FakeEmbedder())
    failed = errors = 0
    for r in range(rounds):
        clearer = threading.Thread(target=admin.clear, kwargs={"tenant": "acme"})
        clearer.start()
        try:
            writer.insert(Request.from_text(f"question {r}", tenant="acme"), r)
        except Exception:
            errors += 1
        clearer.join()
        admin.clear(tenant="acme")
        if writer.stats()["entries"]:
            failed += 1
            writer.clear()
    writer.close()
    admin.close()
    return [("sqlite", f"{rounds} rounds", f"{failed} left entries behind, {errors} insert errors")]


def probe_overhead(n: int = 2000) -> list[tuple[str, ...]]:
    rows = []
    for deadline in (None, 0.5):
        folder = tempfile.mkdtemp(prefix="mc-overhead-")
        fields = {"path": folder, "lookup_timeout": deadline}
        cache = Cache(config(**fields), embedder=FakeEmbedder())
        requests = [Request.from_text(f"question {i}") for i in range(200)]
        cache.insert_many([(r, i) for i, r in enumerate(requests)])
        times = []
        for i in range(n):
            started = time.perf_counter()
            cache.lookup(requests[i % len(requests)])
            times.append((time.perf_counter() - started) * 1000)
        cache.close()
        p50, p90, p99 = np.percentile(times, [50, 90, 99])
        label = "unset" if deadline is None else f"{deadline} s"
        rows.append(("exact hit, lookup_timeout " + label, f"{p50:.3f}/{p90:.3f}/{p99:.3f} ms"))
    return rows


class _LostHits(logging.Handler):
    """Counts hit-count batches the engine reports as lost."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lost = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lost += "could not record" in record.getMessage()


def probe_deadlock(rounds: int) -> list[tuple[str, ...]]:
    return [_deadlock_one(kind, rounds) for kind in ("mariadb", "postgres")]


def _deadlock_one(kind: str, rounds: int) -> tuple[str, ...]:
    url, drop = throwaway_database(kind)
    counter = _LostHits()
    logging.getLogger("modelcache").addHandler(counter)
    folder = tempfile.mkdtemp(prefix="mc-deadlock-")
    hitter = Cache(config(path=folder, sql_url=url), embedder=FakeEmbedder())
    remover = Cache(config(path=folder, sql_url=url), embedder=FakeEmbedder())
    requests = [Request.from_text(f"question {i}") for i in range(200)]
    hitter.insert_many([(r, i) for i, r in enumerate(requests)])
    failed = 0

    def hit_loop() -> None:
        rng = random.Random(13)
        for _ in range(rounds):
            for r in rng.sample(requests, 100):
                hitter.lookup(r)
            hitter.flush()

    def remove_loop() -> None:
        nonlocal failed
        rng = random.Random(7)
        for _ in range(rounds):
            chosen = rng.sample(requests, 20)
            try:
                remover.remove([r.exact_key for r in chosen])
                remover.insert_many([(r, 0) for r in chosen])
            except Exception:
                failed += 1

    threads = [threading.Thread(target=hit_loop), threading.Thread(target=remove_loop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logging.getLogger("modelcache").removeHandler(counter)
    hitter.close()
    remover.close()
    drop_safe(drop)
    return (kind, str(rounds), str(failed), str(counter.lost))


def table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", default="hang,race,deadlock,overhead")
    parser.add_argument("--cap", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    import modelcache

    print(f"modelcache from {Path(modelcache.__file__).parent}; {platform.platform()}; ")
    print(f"{os.cpu_count()} CPUs; lookup_timeout/sql_timeout/connect: {FAST} where known\n")
    probes = args.probes.split(",")
    if "hang" in probes:
        print(table("Blackholed database", ("db", "operation", "time"), probe_hang(args.cap)))
    if "race" in probes:
        print(table("Clear racing insert", ("db", "rounds", "result"), probe_race(args.rounds)))
    if "deadlock" in probes:
        header = ("db", "rounds", "failed remove+insert", "lost hit batches")
        print(table("Hit counts against removes", header, probe_deadlock(args.rounds // 2)))
    if "overhead" in probes:
        print(table("Lookup deadline cost", ("lookup", "p50/p90/p99"), probe_overhead()))
    sys.stdout.flush()
    os._exit(0)  # threads of the old code may still hang on the blackholed link


if __name__ == "__main__":
    main()
