"""Fail-open: backend and embedding faults under a live cache become logged, counted misses.

Also: orphan vectors (a row deleted behind the engine's back) are ignored and cleaned, and a
cache folder remembers the embedder it was written with.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from core_support import BrokenEmbedder, vector_ids

from modelcache import BackendError, Cache, FakeEmbedder, IncompatibleCacheError, Request

Q = "How do I reset my password?"
PARAPHRASE = "How do I reset my password please?"


def rq(text: str = Q, **scope: Any) -> Request:
    """A single-turn request."""
    return Request.from_text(text, **scope)


def sql(tmp_path: Path, statement: str, *args: Any) -> int:
    """Run a statement on the cache's SQLite file directly, behind the engine's back."""
    with sqlite3.connect(tmp_path / "cache" / "modelcache.db") as conn:
        cur = conn.execute(statement, args)
        return cur.rowcount


def warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Warnings the modelcache logger emitted."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("modelcache") and r.levelno >= logging.WARNING
    ]


# ---- vector store faults -----------------------------------------------------------------------
def test_vector_query_raising_is_a_logged_counted_miss(
    cache: Cache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache.insert(rq(), "answer")

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("vector store down")

    monkeypatch.setattr(cache._vectors, "query_vectors", boom)
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        assert cache.lookup(rq(PARAPHRASE)) is None
    assert any("RuntimeError" in m for m in warned(caplog)), "the warning names the failure"
    assert not any("vector store down" in m for m in warned(caplog)), "messages stay at DEBUG"
    stats = cache.stats()
    assert (stats["errors"], stats["misses"], stats["lookups"]) == (1, 1, 1)
    hit = cache.lookup(rq())
    assert hit is not None and hit.exact, "the exact path needs no vector store"


def test_collection_dropped_under_a_live_cache_fails_open(
    make_cache: Callable[..., Cache], caplog: pytest.LogCaptureFixture
) -> None:
    # Chroma answers the query here: a partition copied into memory would still answer from
    # the copy, rightly so, since the SQL row is still there
    cache = make_cache(vectors_in_memory=0)
    cache.insert(rq(), "answer")
    assert cache.lookup(rq(PARAPHRASE)) is not None
    cache._vectors._client.delete_collection("mc-" + rq().partition.id)  # behind the engine
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        assert cache.lookup(rq(PARAPHRASE)) is None
    assert warned(caplog)
    assert cache.stats()["errors"] == 1
    assert cache.lookup(rq()) is not None


def test_closed_vector_store_never_raises_into_lookup(cache: Cache) -> None:
    cache.insert(rq(), "answer")
    cache._vectors.close()
    for text in (Q, PARAPHRASE, "something unrelated"):
        cache.lookup(rq(text))  # a hit or a miss, never an exception
    assert cache.lookup(rq()) is not None


def test_failed_vector_write_raises_a_typed_error(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(cache._vectors, "upsert", boom)
    with pytest.raises(BackendError, match="RuntimeError") as info:
        cache.insert(rq(), "answer")
    assert "disk full" in str(info.value.__cause__)  # details on the chain, not in the text
    cache.lookup(rq(PARAPHRASE))  # must not raise


# ---- scalar store faults -----------------------------------------------------------------------
def test_sql_store_failure_is_a_logged_counted_miss(
    cache: Cache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache.insert(rq(), "answer")

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise OSError("database is locked")

    monkeypatch.setattr(cache._sql, "get_live", boom)
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        assert cache.lookup(rq()) is None
    assert any("OSError" in m for m in warned(caplog)), "the warning names the failure"
    assert not any("database is locked" in m for m in warned(caplog)), "messages stay at DEBUG"
    assert cache.stats()["errors"] == 1


def test_dropped_entry_table_is_a_miss(cache: Cache, tmp_path: Path) -> None:
    cache.insert(rq(), "answer")
    sql(tmp_path, "DROP TABLE modelcache_entry")
    assert cache.lookup(rq()) is None
    assert cache.lookup(rq(PARAPHRASE)) is None


def test_corrupt_answer_row_is_a_logged_miss(
    cache: Cache, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry_id = cache.insert(rq(), "answer")
    cache.insert(rq("What is the capital of France?"), "Paris")
    corrupt = "UPDATE modelcache_entry SET answer_json = '{not json' WHERE id = ?"
    assert sql(tmp_path, corrupt, entry_id) == 1
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        assert cache.lookup(rq()) is None, "exact path: corrupt row is not served"
        assert cache.lookup(rq(PARAPHRASE)) is None, "semantic path: corrupt row is not served"
    assert any(entry_id in m for m in warned(caplog))
    hit = cache.lookup(rq("What is the capital of France?"))
    assert hit is not None and hit.answer == "Paris"


def test_corrupt_answer_row_is_counted_as_an_error(cache: Cache, tmp_path: Path) -> None:
    entry_id = cache.insert(rq(), "answer")
    sql(tmp_path, "UPDATE modelcache_entry SET answer_json = ? WHERE id = ?", "{not json", entry_id)
    assert cache.lookup(rq()) is None
    assert cache.stats()["errors"] >= 1


def test_corrupt_metadata_does_not_break_a_hit(cache: Cache, tmp_path: Path) -> None:
    entry_id = cache.insert(rq(), "answer", metadata={"a": 1})
    sql(tmp_path, "UPDATE modelcache_entry SET metadata_json = '[oops' WHERE id = ?", entry_id)
    hit = cache.lookup(rq())
    assert hit is not None and hit.answer == "answer" and hit.metadata == {}


# ---- embedding faults --------------------------------------------------------------------------
def test_embedder_raising_is_a_logged_counted_miss(
    make_cache: Callable[..., Cache], caplog: pytest.LogCaptureFixture
) -> None:
    embedder = BrokenEmbedder()
    cache = make_cache(embedder=embedder)
    cache.insert(rq(), "answer")
    embedder.broken = True
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        assert cache.lookup(rq(PARAPHRASE)) is None
    assert any("RuntimeError" in m for m in warned(caplog)), "the warning names the failure"
    assert not any("embedding model crashed" in m for m in warned(caplog)), "messages stay at DEBUG"
    assert cache.stats()["errors"] == 1
    hit = cache.lookup(rq())
    assert hit is not None and hit.exact, "exact hits survive a broken model"
    with pytest.raises(BackendError, match="RuntimeError"):
        cache.insert(rq("new question"), "x")
    embedder.broken = False
    assert cache.lookup(rq(PARAPHRASE)) is not None, "recovers once the model does"


def test_embedder_returning_garbage_is_a_miss(
    make_cache: Callable[..., Cache], monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = FakeEmbedder()
    cache = make_cache(embedder=embedder)
    cache.insert(rq(), "answer")
    monkeypatch.setattr(embedder, "embed", lambda texts: np.zeros((len(texts), 3), np.float32))
    assert cache.lookup(rq(PARAPHRASE)) is None
    assert cache.stats()["errors"] == 1


# ---- orphans -----------------------------------------------------------------------------------
def test_orphan_vectors_are_ignored_and_cleaned(cache: Cache, tmp_path: Path, clock: Any) -> None:
    gone = cache.insert(rq(), "answer")
    keep = cache.insert(rq("How do I reset my password quickly please?"), "kept")
    pid = rq().partition.id
    assert sql(tmp_path, "DELETE FROM modelcache_entry WHERE id = ?", gone) == 1
    report = cache.check()
    assert report.vectors_without_row == [gone] and not report.rows_without_vector
    hit = cache.lookup(rq(PARAPHRASE), threshold=0.5)
    assert hit is not None and hit.answer == "kept", "the orphan is skipped, not served"
    assert vector_ids(cache, pid) == {gone, keep}, "its row may still be on the way"
    clock.advance(61)
    cache.flush()
    assert vector_ids(cache, pid) == {keep}, "still without a row a minute later: deleted"
    assert cache.check().ok


def test_lone_orphan_is_a_miss(cache: Cache, tmp_path: Path, clock: Any) -> None:
    gone = cache.insert(rq(), "answer")
    sql(tmp_path, "DELETE FROM modelcache_entry WHERE id = ?", gone)
    assert cache.lookup(rq()) is None
    assert cache.lookup(rq(PARAPHRASE)) is None
    clock.advance(61)
    cache.flush()
    assert cache.check().ok
    assert cache.stats()["errors"] == 0


# ---- the data remembers its settings -----------------------------------------------------------
class RenamedEmbedder(FakeEmbedder):
    """Same dimension as FakeEmbedder, another model name."""

    @property
    def name(self) -> str:
        """A different model identity."""
        return "another-model"


@pytest.mark.parametrize("other", [FakeEmbedder(128), RenamedEmbedder()])
def test_reopening_with_another_embedder_raises(
    make_cache: Callable[..., Cache], other: FakeEmbedder
) -> None:
    make_cache().insert(rq(), "answer")
    with pytest.raises(IncompatibleCacheError, match=r"embedder|dimension"):
        make_cache(embedder=other)
    reopened = make_cache(embedder=FakeEmbedder())
    assert reopened.lookup(rq()) is not None


# ---- two caches on one store (several processes in production) ---------------------------------
def test_a_clear_from_another_cache_does_not_break_this_one(
    make_cache: Callable[..., Cache],
) -> None:
    writer, admin = make_cache(), make_cache()
    writer.insert(rq(), "first")
    assert admin.clear() == 1
    writer.insert(rq("What is the capital of France?"), "Paris")  # raises BackendError today
    assert writer.lookup(rq("What is the capital of France please?")) is not None
    assert admin.stats()["entries"] == 1
    assert admin.clear() == 1
    assert admin.stats()["entries"] == 0
    assert writer.lookup(rq("What is the capital of France?")) is None
    assert admin.check().ok
