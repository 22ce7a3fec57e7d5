"""The row format of an entry: vectors as base64 text, and the plain entry a lookup reads.

Lookups never see ORM objects: building a validated model per row costs more than the read
itself, and the acceptance checks need only a few decoded fields.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ENTRY_COLUMNS", "Entry", "decode_vector", "encode_vector", "entry_of"]


def encode_vector(vector: np.ndarray) -> str:
    """Base64 of a float32 vector: compact, JSON-safe, never pickled."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    """Inverse of :func:`encode_vector`."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


@dataclass(frozen=True, eq=False, slots=True)
class Entry:
    """A live entry as the lookup path reads it: the fields it serves and checks, decoded.

    Compared by identity: an array field has no plain equality.
    """

    id: str
    partition_id: str
    query: str
    history_json: str  # "[]" for a standalone entry
    context_vector: np.ndarray | None  # a follow-up's earlier turns, embedded; else None
    attachments: str
    answer_json: str
    metadata_json: str
    ttl: float | None


#: The columns of ``modelcache_entry`` an :class:`Entry` is read from, in field order.
ENTRY_COLUMNS = (
    "id",
    "partition_id",
    "query",
    "history_json",
    "context_vector",
    "attachments",
    "answer_json",
    "metadata_json",
    "ttl",
)


def entry_of(values: Sequence[Any]) -> Entry:
    """An :class:`Entry` from the values of :data:`ENTRY_COLUMNS`, in that order."""
    (id_, partition_id, query, history_json, context, attachments, answer, metadata, ttl) = values
    return Entry(
        id_,
        partition_id,
        query,
        history_json,
        None if context is None else decode_vector(context),
        attachments,
        answer,
        metadata,
        ttl,
    )
