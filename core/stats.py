"""Typed results of :meth:`modelcache.Cache.stats`.

Both classes are frozen dataclasses for type checkers and also read-only mappings of their
JSON shape, so ``cache.stats()["hits"]`` and ``{**cache.stats()}`` keep working; ``to_dict()``
is the plain JSON value the CLI and the HTTP service print.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["CacheStats", "PartitionStats"]


class _MappingView(Mapping[str, Any]):
    """The read-only mapping protocol over ``to_dict()`` (computed once per object)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, keys in declaration order."""
        raise NotImplementedError

    @functools.cached_property
    def _view(self) -> dict[str, Any]:
        return self.to_dict()

    def __getitem__(self, key: str) -> Any:
        return self._view[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view)

    def __len__(self) -> int:
        return len(self._view)


@dataclass(frozen=True, kw_only=True)
class _Counters:
    """This process's lookup counters (since the cache was opened)."""

    lookups: int
    hits: int
    exact_hits: int
    semantic_hits: int
    misses: int
    errors: int
    timeouts: int
    inserts: int
    evictions: int
    expirations: int
    hit_rate: float
    exact_hit_rate: float
    semantic_hit_rate: float
    latency_ms_p50: float | None
    latency_ms_p95: float | None


_COUNTERS = tuple(f.name for f in fields(_Counters))


def _plain(obj: _Counters) -> dict[str, Any]:
    """Stored numbers first, then the counters (the JSON shape the service always had)."""
    names = [f.name for f in fields(obj)]
    order = [n for n in names if n not in _COUNTERS] + list(_COUNTERS)
    return {name: getattr(obj, name) for name in order}


@dataclass(frozen=True, kw_only=True)
class PartitionStats(_Counters, _MappingView):
    """One partition: stored counts (every process) and this process's counters."""

    id: str
    tenant: str
    env: str
    model: str
    params: Mapping[str, Any]
    entries: int
    stored_hits: int
    tokens_saved: int
    cost_saved: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, one flat object."""
        return {**_plain(self), "params": dict(self.params)}


@dataclass(frozen=True, kw_only=True)
class CacheStats(_Counters, _MappingView):
    """The whole cache: stored totals, query-log health, partitions and this process's counters.

    Stored numbers (entries, stored hits, tokens saved) come from the store and so count every
    process; ``lookups``, ``hits``, latency and the other counters are this process's.
    """

    entries: int
    stored_hits: int
    tokens_saved: int
    cost_saved: float
    embedder: str
    log_written: int
    log_dropped: int
    log_pending: int
    partitions: tuple[PartitionStats, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, the shape ``modelcache stats --json`` and ``/v1/stats`` print."""
        return {**_plain(self), "partitions": [p.to_dict() for p in self.partitions]}
