"""Chroma writes racing a clear in another process: the collection is recreated, not a 503."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelcache.vectors import ChromaVectorStore


class _Dropping:
    """A collection handle whose first writes fail as a Chroma server answers a collection that
    another client is deleting at that moment."""

    def __init__(self, message: str, failures: int) -> None:
        self.message, self.failures, self.written = message, failures, 0

    def upsert(self, **args: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError(self.message)
        self.written += len(args["ids"])


@pytest.mark.parametrize(
    "message",
    [
        "Missing field: [Missing metadata segment]",  # a server mid-way through the delete
        "Error getting collection: Collection [0f] does not exist.",
    ],
)
def test_upsert_recreates_a_collection_dropped_mid_write(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, message: str
) -> None:
    store = ChromaVectorStore(path=str(tmp_path / "chroma"))
    handle = _Dropping(message, failures=2)
    monkeypatch.setattr(store, "_get", lambda collection, create: handle)
    store.upsert("p1", ["a"], np.ones((1, 4), dtype=np.float32))
    assert handle.written == 1


def test_other_write_errors_are_not_retried(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ChromaVectorStore(path=str(tmp_path / "chroma"))
    handle = _Dropping("disk I/O error", failures=1)
    monkeypatch.setattr(store, "_get", lambda collection, create: handle)
    with pytest.raises(RuntimeError, match="disk I/O"):
        store.upsert("p1", ["a"], np.ones((1, 4), dtype=np.float32))


class _Unflushed:
    """A collection handle whose first queries fail as an embedded Chroma answers a query while
    the index files of a write it just took are not on disk yet."""

    def __init__(self, failures: int, message: str = "Nothing found on disk") -> None:
        self.failures, self.message, self.queries = failures, message, 0

    def query(self, **args: Any) -> dict[str, Any]:
        self.queries += 1
        if self.failures:
            self.failures -= 1
            raise RuntimeError(
                f"Error executing plan: Internal error: Error creating hnsw segment reader: "
                f"{self.message}"
            )
        return {"ids": [["a"]], "distances": [[0.0]]}


def test_a_query_racing_the_index_flush_is_asked_again(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ChromaVectorStore(path=str(tmp_path / "chroma"))
    handle = _Unflushed(failures=2)
    monkeypatch.setattr(store, "_get", lambda collection, create: handle)
    assert [i for i, _ in store.query("p1", np.ones(4, dtype=np.float32), k=1)] == ["a"]
    assert handle.queries == 3


def test_an_index_that_stays_missing_or_other_query_errors_are_raised(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ChromaVectorStore(path=str(tmp_path / "chroma"))
    for handle in (_Unflushed(failures=10), _Unflushed(failures=1, message="Error loading index")):
        monkeypatch.setattr(store, "_get", lambda collection, create, h=handle: h)
        with pytest.raises(RuntimeError, match="hnsw segment reader"):
            store.query("p1", np.ones(4, dtype=np.float32), k=1)
    assert handle.queries == 1
