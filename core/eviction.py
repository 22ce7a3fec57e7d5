"""Eviction: when a store is over capacity, how far to shrink it and which entries go.

The victims' order is SQL (see ``storage.sql.EVICTION_ORDER``), so several processes agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .storage.sql import SQLStore

__all__ = ["target_size", "victims"]


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
    shielded = protect if len(protect) <= target else ()  # a bulk load larger than the target
    return store.eviction_order(policy, count - target, partition_id, shielded)
