"""Write races (issue 13, items 2 and 3): deadlocks are retried, a remove that fails half way
leaves both stores as they were, and a clear racing an insert leaves nothing undeletable."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event

from modelcache import BackendError, Cache, CacheConfig, FakeEmbedder, Request

Q = "How do I reset my password?"
PARAPHRASE = "How do I reset my password please?"


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def open_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Cache]]:
    """Caches on SQLite, MariaDB or PostgreSQL (embedded Chroma in ``tmp_path``)."""
    sql_url = None
    if request.param != "sqlite":
        sql_url = str(request.getfixturevalue(f"{request.param}_url"))
    made: list[Cache] = []

    def factory(embedder: FakeEmbedder | None = None) -> Cache:
        config = CacheConfig(path=str(tmp_path / "cache"), sql_url=sql_url)
        cache = Cache(config, embedder=embedder or FakeEmbedder())
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        cache.close()


def _deadlock(dialect: str) -> Exception:
    """The driver's own deadlock / busy error, as the database raises it."""
    if dialect == "mysql":
        import pymysql

        return pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")
    if dialect == "postgresql":
        import psycopg

        return psycopg.errors.DeadlockDetected("deadlock detected")
    return sqlite3.OperationalError("database is locked")


def fail_statements(cache: Cache, verb: str, times: int, error: Exception | None = None) -> None:
    """Make the next ``times`` statements starting with ``verb`` that this thread runs fail (a
    deadlock by default); the cache's background pass (purge, log retention) is left alone, or
    it could take the failure meant for the operation under test."""
    left = [times]
    error = error or _deadlock(cache._sql.dialect)
    thread = threading.get_ident()

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if (
            left[0] > 0
            and threading.get_ident() == thread
            and statement.lstrip().upper().startswith(verb)
        ):
            left[0] -= 1
            raise error

    event.listen(cache._sql._engine, "before_cursor_execute", before)


@pytest.mark.parametrize("verb", ["INSERT", "DELETE", "UPDATE"])
def test_write_transactions_are_retried_after_a_deadlock(
    open_cache: Callable[..., Cache], verb: str
) -> None:
    cache = open_cache()
    request = Request.from_text(Q)
    cache.insert(request, "old")
    fail_statements(cache, verb, times=2)
    cache.insert(request, "new")
    hit = cache.lookup(request)  # a pending hit: flushed as an UPDATE
    assert hit is not None and hit.answer == "new"
    cache.flush()
    assert cache.stats()["partitions"][0]["stored_hits"] == 1
    assert cache.remove([request.exact_key]) == 1
    assert cache.clear() == 0
    assert cache.check().ok


def test_a_remove_that_fails_half_way_changes_nothing(open_cache: Callable[..., Cache]) -> None:
    """Before the fix the vectors went first: a failed row delete left an entry served by
    exact lookups only."""
    cache = open_cache()
    request = Request.from_text(Q)
    cache.insert(request, "answer")
    fail_statements(cache, "DELETE", times=1, error=RuntimeError("connection lost"))
    with pytest.raises(BackendError):
        cache.remove([request.exact_key])
    assert cache.check().ok
    hit = cache.lookup(Request.from_text(PARAPHRASE), threshold=0.5)
    assert hit is not None and hit.kind == "semantic"


def test_a_remove_whose_vector_delete_fails_still_removes_the_entry(
    open_cache: Callable[..., Cache],
) -> None:
    cache = open_cache()
    request = Request.from_text(Q)
    cache.insert(request, "answer")

    def broken(*_: Any) -> None:
        raise RuntimeError("Chroma is down")

    cache._vectors.delete = broken  # type: ignore[method-assign]
    assert cache.remove([request.exact_key]) == 1
    del cache._vectors.delete
    assert cache.lookup(request) is None
    assert cache.lookup(Request.from_text(PARAPHRASE), threshold=0.5) is None
    assert not cache.check().rows_without_vector  # at most an orphan vector, then cleaned
    cache.repair()
    assert cache.check().ok


class ClearsWhileEmbedding(FakeEmbedder):
    """Runs ``during`` once, while an insert embeds: between the insert's checks and writes."""

    def __init__(self) -> None:
        super().__init__()
        self.during: Callable[[], object] | None = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        during, self.during = self.during, None
        if during is not None:
            during()
        return super().embed(texts)


def test_a_clear_racing_an_insert_leaves_nothing_behind(open_cache: Callable[..., Cache]) -> None:
    """Before the fix the insert created its partition row first and wrote its entry after a
    concurrent clear had deleted that row: scoped clears then found nothing to delete."""
    embedder = ClearsWhileEmbedding()
    cache, admin = open_cache(embedder), open_cache()
    cache.insert(Request.from_text("an earlier question", tenant="acme"), "a")
    embedder.during = lambda: admin.clear(tenant="acme")
    late = Request.from_text(Q, tenant="acme")
    cache.insert(late, "answer")
    assert cache.lookup(late) is not None
    assert admin.clear(tenant="acme") == 1, "the late entry belongs to a known partition"
    assert cache.lookup(late) is None
    assert cache.lookup(Request.from_text(PARAPHRASE, tenant="acme"), threshold=0.5) is None
    assert cache.stats()["entries"] == 0
    assert cache.check().ok


def test_clears_and_inserts_in_a_tight_loop(open_cache: Callable[..., Cache]) -> None:
    """Two caches (two processes' view of one store), threads inserting and clearing.

    An insert whose collection is dropped under it may fail (BackendError, dropped by the
    adapters); what must never happen is an entry that the scoped clear cannot find.
    """
    import threading

    writer, admin = open_cache(), open_cache()
    stop = threading.Event()
    failures: list[BaseException] = []

    def clear_loop() -> None:
        while not stop.is_set():
            try:
                admin.clear(tenant="acme")
            except BaseException as exc:
                failures.append(exc)
                return

    thread = threading.Thread(target=clear_loop)
    thread.start()
    stored = 0
    try:
        for i in range(40):
            try:
                writer.insert(Request.from_text(f"question number {i}", tenant="acme"), i)
                stored += 1
            except BackendError:
                pass
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not failures, failures[0]
    assert stored > 0
    admin.clear(tenant="acme")
    assert writer.stats()["entries"] == 0, "every entry was found by the scoped clear"
    assert not writer.check().rows_without_vector
