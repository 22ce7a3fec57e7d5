"""The vector an entry is stored and recalled by, and the embedding of entries into it.

A follow-up is stored under its query plus its context (every earlier turn); a standalone
entry under its query. Inserts, lookups, ``repair`` and the schema upgrade all embed through
:func:`embed_entries`, so the stored vectors of one entry never depend on who wrote them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendError

if TYPE_CHECKING:
    from ..embedding import Embedder

__all__ = ["embed_entries", "query_part", "recall_vector"]


def recall_vector(query: np.ndarray, context: np.ndarray | None) -> np.ndarray:
    """The vector an entry is stored and recalled by: its query plus its context, normalised.

    A generic follow-up ("when did it begin") stored in many conversations then recalls the
    conversations nearest to the request's first, instead of an arbitrary top-k of identical
    queries. A standalone entry keeps its query vector.
    """
    if context is None:
        return query
    summed = np.asarray(query, dtype=np.float32) + np.asarray(context, dtype=np.float32)
    norm = float(np.linalg.norm(summed))
    return summed / norm if norm > 1e-6 else query


def query_part(recall: np.ndarray, context: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`recall_vector` given the context: the stored query vector.

    With unit vectors, recall = (q + c) / |q + c| and |q + c| = 2 (recall . c), so the query
    vector needs no storage of its own.
    """
    if context is None:
        return recall
    return (2.0 * float(np.dot(recall, context))) * recall - context


def _checked(vectors: Any, count: int, dimension: int) -> np.ndarray:
    """Embeddings as a (count, dimension) finite matrix, or BackendError before any write."""
    array = np.asarray(vectors, dtype=np.float32)
    expected = (count, dimension)
    if array.shape != expected:
        raise BackendError(f"the embedder returned shape {array.shape}, expected {expected}")
    if not np.isfinite(array).all():
        raise BackendError("the embedder returned non-finite values (NaN or infinity)")
    return array


def embed_entries(
    embedder: Embedder,
    queries: Sequence[str],
    contexts: Sequence[str],
    *,
    embed_queries: Callable[[list[str]], np.ndarray] | None = None,
) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Context vectors (None where the context is empty) and recall vectors of entries, from
    two model calls (queries, then the non-empty contexts); checked before any write.
    ``embed_queries`` replaces the embedder for the queries (an insert keeps its long prompts'
    question parts for the long-text check)."""
    dimension = embedder.dimension
    embed = embed_queries or embedder.embed
    query_vectors = _checked(embed(list(queries)), len(queries), dimension)
    texts = [text for text in contexts if text]
    embedded = iter(_checked(embedder.embed(texts), len(texts), dimension) if texts else ())
    context_vectors = [next(embedded) if text else None for text in contexts]
    recall = np.stack(
        [recall_vector(q, c) for q, c in zip(query_vectors, context_vectors, strict=True)]
    )
    return context_vectors, recall
