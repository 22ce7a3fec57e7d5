"""The VectorStore protocol: vectors keyed by entry id, one collection per partition."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = ["VectorStore"]


class VectorStore(Protocol):
    """Holds only vectors; rows live in SQL. Scores are cosine similarity in [-1, 1]."""

    def create(self, collection: str) -> None:
        """Create a collection up front (idempotent)."""
        ...

    def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        tags: Sequence[str] | None = None,
    ) -> None:
        """Insert or replace vectors; a non-empty tag (one per id) can restrict a query."""
        ...

    def query(
        self, collection: str, vector: np.ndarray, k: int, tag: str | None = None
    ) -> list[tuple[str, float]]:
        """The k nearest ids (only those tagged ``tag`` when given) with cosine similarity,
        best first; [] for a missing collection."""
        ...

    def query_vectors(
        self, collection: str, vector: np.ndarray, k: int
    ) -> list[tuple[str, float, np.ndarray]]:
        """Like :meth:`query`, with each stored vector (a follow-up's query part is derived
        from it)."""
        ...

    def tag(self, collection: str, ids: Sequence[str], tags: Sequence[str]) -> None:
        """Set the tags of stored vectors; unknown ids are ignored."""
        ...

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Remove vectors; unknown ids are ignored."""
        ...

    def drop(self, collection: str) -> None:
        """Drop a whole collection; a missing one is ignored."""
        ...

    def ids(self, collection: str) -> list[str]:
        """Every id in a collection (integrity checks and orphan clean-up)."""
        ...

    def collections(self) -> list[str]:
        """Names of all collections this cache owns."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...
