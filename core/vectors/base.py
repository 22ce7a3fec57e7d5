"""The VectorStore protocol: the extension point for another vector database.

A store holds only vectors, keyed by entry id inside a *partition* (the engine's isolation
unit); rows live in SQL. Chroma and Milvus implement it; another store is a class with these
methods, passed as ``Cache(config, vector_store=MyStore(...))``. tests/vectors/test_contract.py
states the contract as tests: add the new store to its fixture and they run on it too
(docs/vector-stores.md is the guide).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = ["NoVectors", "VectorStore"]


class VectorStore(Protocol):
    """Holds only vectors; rows live in SQL. Scores are cosine similarity in [-1, 1].

    The contract the engine relies on:

    * Partitions never mix: a query searches one partition only, *before* taking the top k
      (a pre-filter), and the same id in two partitions is two vectors.
    * A partition that does not exist answers like an empty one ([] from ``query`` and
      ``ids``); ``delete`` and ``drop`` of missing things are no-ops.
    * Writes are idempotent: ``upsert`` of an existing id replaces its vector.
    * Ids are any Unicode strings (up to 1 KB).
    * A vector of another dimension than the partition's raises; nothing is stored.
    * Backend faults raise (preferably :class:`modelcache.BackendError`); the engine turns
      them into logged misses on lookup and typed errors on insert. Every call must end in
      bounded time (a timeout), so a dead server cannot hang the caller.
    """

    def create(self, collection: str) -> None:
        """Make a partition ready (idempotent; called before every write, so keep it cheap).

        A store that needs the dimension may defer the real creation to the first upsert.
        """
        ...

    def upsert(self, collection: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace vectors."""
        ...

    def query(self, collection: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k nearest ids with cosine similarity, best first; [] for a missing partition.
        Like the partition, nothing else filters after the top k is taken."""
        ...

    def query_vectors(
        self, collection: str, vector: np.ndarray, k: int
    ) -> list[tuple[str, float, np.ndarray]]:
        """Like :meth:`query`, with each stored vector (a follow-up's query part is derived
        from it)."""
        ...

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Remove vectors; unknown ids are ignored."""
        ...

    def drop(self, collection: str) -> None:
        """Drop a whole partition; a missing one is ignored."""
        ...

    def ids(self, collection: str) -> list[str]:
        """Every id in a partition, however many (``Cache.check`` and repair compare them
        with the SQL rows)."""
        ...

    def collections(self) -> list[str]:
        """Partitions this cache has vectors in (a store may also list empty ones)."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


class NoVectors:
    """Stand-in vector store that holds nothing: a cache whose Chroma could not be opened runs
    exact-only on it."""

    def create(self, collection: str) -> None:
        return None

    def upsert(self, collection: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        return None

    def query(self, collection: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        return []

    def query_vectors(
        self, collection: str, vector: np.ndarray, k: int
    ) -> list[tuple[str, float, np.ndarray]]:
        return []

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        return None

    def drop(self, collection: str) -> None:
        return None

    def ids(self, collection: str) -> list[str]:
        return []

    def collections(self) -> list[str]:
        return []

    def close(self) -> None:
        return None
