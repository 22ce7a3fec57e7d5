"""Eviction and expiry as SQL: each policy is an ordering over indexed columns.

State (hit counts, last-hit times, expiry) lives in the store, so several processes agree on
what to evict, and nothing has to be rebuilt in memory at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from .storage.models import EntryRow
from .storage.sql import SQLStore

__all__ = ["POLICIES", "expired", "target_size", "victims"]

#: Victims come first in these orderings; ties fall back to the entry id for determinism.
POLICIES: dict[str, tuple[Any, ...]] = {
    "lru": (col(EntryRow.last_hit_at).asc(), col(EntryRow.created_at).asc()),
    "lfu": (col(EntryRow.hit_count).asc(), col(EntryRow.last_hit_at).asc()),
    "fifo": (col(EntryRow.created_at).asc(),),
}


def target_size(capacity: int, low_water: float) -> int:
    """Size a full store is shrunk to, so that eviction is not paid on every insert."""
    return max(0, min(capacity - 1, math.floor(capacity * low_water)))


def victims(
    store: SQLStore,
    policy: str,
    capacity: int,
    low_water: float,
    partition_id: str | None,
    protect: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """The policy's victims, as (id, partition), when a store is over capacity.

    Selection only: the caller deletes vectors, then rows. ``partition_id=None`` applies the
    capacity to the whole cache. ``protect`` holds the entries just written: under LFU a new
    entry has no hits yet and would otherwise be its own first victim.
    """
    if policy == "none":
        return []
    count = store.count(partition_id)
    if count <= capacity:
        return []
    target = target_size(capacity, low_water)
    excess = count - target
    stmt = select(EntryRow.id, EntryRow.partition_id)
    if partition_id is not None:
        stmt = stmt.where(EntryRow.partition_id == partition_id)
    if protect and len(protect) <= target:  # a bulk load larger than the target is not shielded
        stmt = stmt.where(col(EntryRow.id).not_in(list(protect)))
    stmt = stmt.order_by(*POLICIES[policy], col(EntryRow.id).asc()).limit(excess)
    with store.session() as s:
        return [(i, p) for i, p in s.exec(stmt)]


def expired(store: SQLStore, now: float, limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` expired entries, as (id, partition); selection only."""
    stmt = (
        select(EntryRow.id, EntryRow.partition_id)
        .where(col(EntryRow.expires_at).is_not(None), col(EntryRow.expires_at) <= now)
        .order_by(sa.asc(EntryRow.expires_at))
        .limit(limit)
    )
    with store.session() as s:
        return [(i, p) for i, p in s.exec(stmt)]
