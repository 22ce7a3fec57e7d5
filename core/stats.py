"""Typed results of :meth:`modelcache.Cache.stats`.

Both classes are frozen dataclasses for type checkers and also read-only mappings of their
JSON shape, so ``cache.stats()["hits"]`` and ``{**cache.stats()}`` keep working; ``to_dict()``
is the plain JSON value the CLI and the HTTP service print. The engine counts events in a
:class:`_Recorder` and :func:`_collect` joins them with the store's counts into a result.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BackendError, ModelCacheError
from .redact import describe_error

if TYPE_CHECKING:
    from .maintenance import BackgroundWriter
    from .storage import SQLStore

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


# the events the engine counts; the rates and latency percentiles are derived from them
_EVENTS = tuple(f.name for f in fields(_Counters) if f.type in ("int", int))


class _Tally:
    """Event counts and a window of lookup latencies, of one partition or of the whole cache."""

    def __init__(self, window: int) -> None:
        self.values: dict[str, int] = dict.fromkeys(_EVENTS, 0)
        self.latencies: deque[float] = deque(maxlen=window)

    def add(self, deltas: dict[str, int], latency_ms: float | None = None) -> None:
        for key, value in deltas.items():
            self.values[key] += value
        if latency_ms is not None:
            self.latencies.append(latency_ms)

    def snapshot(self) -> dict[str, Any]:
        """The :class:`_Counters` fields as keyword arguments."""
        values: dict[str, Any] = dict(self.values)
        lookups = values["lookups"]
        lat = np.fromiter(self.latencies, dtype=np.float64)
        values["hit_rate"] = values["hits"] / lookups if lookups else 0.0
        values["exact_hit_rate"] = values["exact_hits"] / lookups if lookups else 0.0
        values["semantic_hit_rate"] = values["semantic_hits"] / lookups if lookups else 0.0
        values["latency_ms_p50"] = float(np.percentile(lat, 50)) if lat.size else None
        values["latency_ms_p95"] = float(np.percentile(lat, 95)) if lat.size else None
        return values


class _Recorder:
    """This process's counters, overall and per partition, behind one lock: a lookup counts
    in memory and never writes to the store."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = _Tally(10_000)
        self.partitions: dict[str, _Tally] = {}

    def add(self, partition_id: str | None, latency_ms: float | None = None, **deltas: int) -> None:
        """Count events (``lookups=1, hits=1`` ...) overall and, given an id, for a partition."""
        with self.lock:
            self.total.add(deltas, latency_ms)
            if partition_id is not None:
                tally = self.partitions.get(partition_id)
                if tally is None:
                    tally = self.partitions[partition_id] = _Tally(1_000)
                tally.add(deltas, latency_ms)

    def snapshot(self, partition_id: str | None = None) -> dict[str, Any]:
        """The counters of one partition, or of the whole cache, as keyword arguments."""
        with self.lock:
            if partition_id is None:
                return self.total.snapshot()
            return (self.partitions.get(partition_id) or _Tally(1)).snapshot()


def _collect(
    store: SQLStore,
    recorder: _Recorder,
    log: BackgroundWriter,
    *,
    embedder: str,
    token_price_per_1k: float,
) -> CacheStats:
    """Join the store's counts (every process) with this process's counters and query-log
    health; an outage is a :class:`BackendError` (the service's 503), not a raw driver error."""
    try:
        counts = store.partition_counts()
        stored = store.find_partitions()
    except ModelCacheError:
        raise
    except Exception as exc:
        raise BackendError(f"stats failed: {describe_error(exc)}") from exc
    price = token_price_per_1k / 1000
    partitions = []
    for p in stored:
        entries, hits, tokens = counts.get(p.id, (0, 0, 0))
        partitions.append(
            PartitionStats(
                id=p.id,
                tenant=p.tenant,
                env=p.env,
                model=p.model,
                params=json.loads(p.params_json),
                entries=entries,
                stored_hits=hits,
                tokens_saved=tokens,
                cost_saved=tokens * price,
                **recorder.snapshot(p.id),
            )
        )
    tokens = sum(t for _, _, t in counts.values())
    return CacheStats(
        entries=sum(n for n, _, _ in counts.values()),
        stored_hits=sum(h for _, h, _ in counts.values()),
        tokens_saved=tokens,
        cost_saved=tokens * price,
        embedder=embedder,
        log_written=log.written,
        log_dropped=log.dropped,
        log_pending=log.pending(),
        partitions=tuple(partitions),
        **recorder.snapshot(),
    )
