"""The row format of an entry: vectors as base64 text, the row a write stores, the plain entry
a lookup reads and the JSON record an export yields.

Lookups never see ORM objects: building a validated model per row costs more than the read
itself, and the acceptance checks need only a few decoded fields.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .models import EntryRow, PartitionRow

__all__ = [
    "ENTRY_COLUMNS",
    "Entry",
    "chunk_digest",
    "decode_vector",
    "encode_vector",
    "entry_of",
    "export_record",
    "new_row",
]


_UNIT_SLACK = 1e-3  # float32 rounding of a normalised embedding


def encode_vector(vector: np.ndarray) -> str:
    """Base64 of a float32 vector: compact, JSON-safe, never pickled."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    """Inverse of :func:`encode_vector`; ``ValueError`` (or ``TypeError``) for a value that is
    not base64 of float32 values, rather than decoding what is left once stray bytes go."""
    return np.frombuffer(base64.b64decode(text, validate=True), dtype="<f4")


def chunk_digest(text: str) -> str:
    """Key of a stored chunk vector: a digest of the chunk's text (the text is not stored)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


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


def entry_of(values: Sequence[Any], dimension: int | None = None) -> Entry:
    """An :class:`Entry` from the values of :data:`ENTRY_COLUMNS`, in that order.

    Raises ``ValueError`` saying what is wrong (never the stored text) when the context vector
    is corrupt: not base64, empty, not ``dimension`` values long (when known), not finite, or
    longer than a unit vector (its cosines would pass thresholds that a real one does not).
    """
    (id_, partition_id, query, history_json, context, attachments, answer, metadata, ttl) = values
    return Entry(
        id_,
        partition_id,
        query,
        history_json,
        None if context is None else _context_vector(context, dimension),
        attachments,
        answer,
        metadata,
        ttl,
    )


def _context_vector(text: Any, dimension: int | None) -> np.ndarray:
    try:
        vector = decode_vector(text)
    except (TypeError, ValueError):  # binascii.Error is a ValueError
        raise ValueError("its context vector is not base64 of float32 values") from None
    if vector.size == 0 or (dimension is not None and vector.size != dimension):
        wanted = "" if dimension is None else f", not {dimension}"
        raise ValueError(f"its context vector has {vector.size} values{wanted}")
    if not np.isfinite(vector).all():
        raise ValueError("its context vector is not finite")
    if float(np.linalg.norm(vector)) > 1.0 + _UNIT_SLACK:
        raise ValueError("its context vector is longer than a unit vector")
    return vector


def new_row(
    *,
    entry_id: str,
    partition_id: str,
    query: str,
    history_json: str,
    context_text: str,
    context_vector: np.ndarray | None,
    attachments: str,
    answer_json: str,
    metadata_json: str,
    now: float,
    ttl: float | None,
) -> EntryRow:
    """The row an insert stores: no hits yet, expiry and token estimate derived here."""
    # the values are built here, so the model's per-field validation is skipped
    return EntryRow.model_construct(
        id=entry_id,
        partition_id=partition_id,
        query=query,
        history_json=history_json,
        context_text=context_text,
        context_vector=None if context_vector is None else encode_vector(context_vector),
        attachments=attachments,
        answer_json=answer_json,
        metadata_json=metadata_json,
        answer_tokens=_estimate_tokens(answer_json),
        created_at=now,
        last_hit_at=now,
        hit_count=0,
        ttl=ttl,
        expires_at=now + ttl if ttl is not None else None,
    )


def _estimate_tokens(answer_json: str) -> int:
    """About four characters per token: enough for a savings estimate."""
    return max(1, len(answer_json) // 4)


def export_record(partition: PartitionRow, row: Mapping[str, Any]) -> dict[str, Any]:
    """One stored entry as a JSON-able dict: its partition's fields, query, history, answer,
    and the digest of its attachments (so that an import restores the same entry).

    Raises ``ValueError`` naming the field when a stored JSON value is corrupt.
    """
    return {
        "id": row["id"],
        "tenant": partition.tenant,
        "env": partition.env,
        "model": partition.model,
        "params": _stored_json(partition.params_json, "params"),
        "system": partition.system or None,
        "query": row["query"],
        "history": _stored_json(row["history_json"], "history"),
        "attachments": row["attachments"] or "",
        "answer": _stored_json(row["answer_json"], "answer"),
        "metadata": _stored_json(row["metadata_json"] or "{}", "metadata"),
        "created_at": row["created_at"],
        "hit_count": row["hit_count"],
        "ttl": row["ttl"],
        "expires_at": row["expires_at"],
    }


def _stored_json(text: Any, field: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field} is not valid JSON ({exc})") from None
