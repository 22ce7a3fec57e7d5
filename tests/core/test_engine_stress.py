"""Stress: threads inserting, looking up and removing at once leave both stores consistent."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from modelcache import Cache, Request

THREADS = 8
ROUNDS = 40
TOPICS = [f"topic{i}" for i in range(12)]


def hammer(cache: Cache, seed: int, errors: list[BaseException]) -> None:
    """One worker: mixed inserts (some keys shared by every worker), lookups and removes."""
    rnd = random.Random(seed)
    try:
        for i in range(ROUNDS):
            topic = rnd.choice(TOPICS)
            tenant = rnd.choice(["t1", "t2"])
            shared = Request.from_text(f"how do I configure {topic}?", tenant=tenant)
            own = Request.from_text(f"worker {seed} question {i} on {topic}", tenant=tenant)
            op = rnd.random()
            if op < 0.35:
                cache.insert(shared, {"by": seed, "i": i})
            elif op < 0.55:
                cache.insert_many([(own, i), (shared, {"by": seed, "i": i})])
            elif op < 0.65:
                cache.remove([own.exact_key])  # only this worker writes its own keys
            else:
                hit = cache.lookup(Request.from_text(f"how can I configure {topic}", tenant=tenant))
                if hit is not None:
                    assert hit.answer is not None
                cache.lookup(shared)
    except BaseException as exc:  # collected and re-raised in the main thread
        errors.append(exc)


def run_workers(cache: Cache) -> None:
    """Run THREADS workers to completion and re-raise the first failure."""
    errors: list[BaseException] = []
    workers = [
        threading.Thread(target=hammer, args=(cache, seed, errors)) for seed in range(THREADS)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers), "a worker hung (deadlock?)"
    if errors:
        raise errors[0]


def test_concurrent_inserts_lookups_and_removes_keep_stores_consistent(
    make_cache: Callable[..., Cache],
) -> None:
    cache = make_cache()
    run_workers(cache)
    report = cache.check()
    assert report.ok, report
    stats = cache.stats()
    assert stats["errors"] == 0
    assert stats["entries"] == sum(p["entries"] for p in stats["partitions"])
    for topic in TOPICS:  # every surviving shared key is served exactly
        for tenant in ("t1", "t2"):
            req = Request.from_text(f"how do I configure {topic}?", tenant=tenant)
            hit = cache.lookup(req)
            assert hit is None or (hit.exact and hit.entry_id == req.exact_key)


def _remove_with_insert_in_between(remover: Cache, inserter: Cache, req: Request) -> None:
    """Remove ``req`` while, just before its vector delete, another thread re-inserts it."""
    real_delete = remover._vectors.delete
    threads: list[threading.Thread] = []

    def let_insert_run_then_delete(collection: str, ids: Sequence[str]) -> Any:
        if not threads:
            other = threading.Thread(target=inserter.insert, args=(req, "new"))
            threads.append(other)
            other.start()
            other.join(timeout=1)  # runs to completion unless it waits for the remove
        return real_delete(collection, ids)

    remover._vectors.delete = let_insert_run_then_delete  # type: ignore[method-assign]
    try:
        remover.remove([req.exact_key])
    finally:
        del remover._vectors.delete  # back to the class method
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()


def test_insert_racing_a_remove_in_one_cache_keeps_stores_consistent(
    make_cache: Callable[..., Cache],
) -> None:
    cache = make_cache()
    req = Request.from_text("How do I reset my password?")
    cache.insert(req, "old")
    _remove_with_insert_in_between(cache, cache, req)
    report = cache.check()
    assert report.ok, report


def test_insert_racing_a_remove_in_another_cache_leaves_at_most_an_orphan(
    make_cache: Callable[..., Cache], clock: Any
) -> None:
    """Two processes share no lock: the worst outcome must be an orphan vector, never a row
    that semantic lookups cannot find."""
    remover, inserter = make_cache(), make_cache()
    req = Request.from_text("How do I reset my password?")
    remover.insert(req, "old")
    _remove_with_insert_in_between(remover, inserter, req)
    report = remover.check()
    assert not report.rows_without_vector, report
    remover.lookup(Request.from_text("How do I reset my password please?"))  # notes orphans
    clock.advance(61)  # still without a row a minute later: deleted by the next pass
    remover.flush()
    assert remover.check().ok


def _pause_before_the_row(cache: Cache) -> tuple[threading.Event, threading.Event]:
    """Make the cache's inserts stop between their vector and their row: the first event is
    set when an insert gets there, the second lets it go on."""
    vectors_written, go_on = threading.Event(), threading.Event()
    real_upsert = cache._sql.upsert

    def row_after_a_pause(*args: Any, **kwargs: Any) -> Any:
        vectors_written.set()
        go_on.wait(10)
        return real_upsert(*args, **kwargs)

    cache._sql.upsert = row_after_a_pause  # type: ignore[method-assign]
    return vectors_written, go_on


def test_a_lookup_in_another_cache_spares_the_vector_of_an_insert_under_way(
    make_cache: Callable[..., Cache], clock: Any
) -> None:
    """An insert writes its vector, then its row. Another cache of the folder (or another
    process) holds none of its locks: a lookup meeting the vector in between must not delete
    it, or the acknowledged entry is left without a vector, lost to semantic lookups."""
    inserter, looker = make_cache(), make_cache()
    vectors_written, go_on = _pause_before_the_row(inserter)
    req = Request.from_text("what is write ahead logging in sqlite")
    writing = threading.Thread(target=inserter.insert, args=(req, "WAL answer"))
    writing.start()
    assert vectors_written.wait(10)
    paraphrase = Request.from_text("what is write-ahead logging in sqlite?")
    assert looker.lookup(paraphrase) is None  # meets a vector without its row yet
    go_on.set()
    writing.join(10)
    clock.advance(61)
    looker.flush()
    assert inserter.check().ok
    hit = looker.lookup(paraphrase)
    assert hit is not None and hit.answer == "WAL answer"


def test_a_clear_waits_for_an_insert_under_way(make_cache: Callable[..., Cache]) -> None:
    """A clear between an insert's vector and its row dropped the vector, and the row that came
    after it had none: the clear now waits for the insert, then removes both."""
    cache = make_cache()
    vectors_written, go_on = _pause_before_the_row(cache)
    req = Request.from_text("what is write ahead logging in sqlite")
    inserting = threading.Thread(target=cache.insert, args=(req, "WAL answer"))
    inserting.start()
    assert vectors_written.wait(10)
    clearing = threading.Thread(target=cache.clear)
    clearing.start()
    time.sleep(0.1)  # the clear, if it did not wait, would drop the vector now
    go_on.set()
    inserting.join(10)
    clearing.join(10)
    report = cache.check()
    assert not report.rows_without_vector, report
    assert cache.lookup(req) is None
