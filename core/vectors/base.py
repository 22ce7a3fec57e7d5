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

    def upsert(self, collection: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace vectors."""
        ...

    def query(self, collection: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k nearest ids with cosine similarity, best first; [] for a missing collection."""
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
