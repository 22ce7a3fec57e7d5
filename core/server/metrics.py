"""Prometheus metrics of one app: hits, misses, latency, entries, evictions.

Each app owns its registry (no global state), so several apps can live in one process
(tests, embedding in a larger service). Store-level numbers are read from ``Cache.stats()``
(at most every ``max_age`` seconds), so they are right across processes sharing one store.
Per-tenant labels name every tenant and model, so they are off unless asked for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..redact import log_failure

if TYPE_CHECKING:
    from ..engine import Cache, Hit
    from ..stats import CacheStats

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
log = logging.getLogger("modelcache.server")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _StoreCollector(Collector):
    """Entries and evictions as the store reports them, read at most every ``max_age`` s.

    A stats pass reads every partition, so scrapes reuse the last one while it is fresh:
    scrapes stay cheap with thousands of partitions and several Prometheus servers.
    """

    def __init__(
        self,
        cache: Cache,
        *,
        tenant_labels: bool,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._tenant_labels = tenant_labels
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._stats: CacheStats | None = None
        self._read_at = float("-inf")
        self.passes = 0  # stats passes run (observability of the cache itself)

    def _fresh_stats(self) -> CacheStats | None:
        with self._lock:  # concurrent scrapes wait for one pass instead of running their own
            if self._stats is not None and self._clock() - self._read_at < self._max_age:
                return self._stats
            try:
                self._stats = self._cache.stats()
                self.passes += 1
            except Exception as exc:  # a scrape must not fail because the store hiccups
                log_failure(log, "modelcache metrics: stats failed", exc)
                return self._stats  # the last numbers, if any, beat none
            self._read_at = self._clock()
            return self._stats

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: registering must not read the store (nor fill the reading cache)."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        stats = self._fresh_stats()
        if stats is None:
            return
        yield GaugeMetricFamily(
            "modelcache_entries",
            "Entries stored in the cache.",
            value=float(stats.get("entries", 0)),
        )
        yield GaugeMetricFamily(
            "modelcache_partitions",
            "Partitions stored in the cache.",
            value=float(len(stats.get("partitions", []))),
        )
        if self._tenant_labels:
            yield self._per_scope(stats)
        yield CounterMetricFamily(
            "modelcache_evictions",
            "Entries evicted for capacity by this process.",
            value=float(stats.get("evictions", 0) or 0),
        )
        yield CounterMetricFamily(
            "modelcache_expirations",
            "Entries dropped for TTL by this process.",
            value=float(stats.get("expirations", 0) or 0),
        )

    @staticmethod
    def _per_scope(stats: CacheStats) -> Metric:
        """Entries per tenant, env and model: names who uses the cache, so opt-in."""
        per_scope: dict[tuple[str, str, str], int] = {}
        for p in stats.get("partitions", []):
            key = (str(p.get("tenant")), str(p.get("env")), str(p.get("model")))
            per_scope[key] = per_scope.get(key, 0) + int(p.get("entries", 0))
        scoped = GaugeMetricFamily(
            "modelcache_scope_entries",
            "Entries stored per tenant, env and model.",
            labels=["tenant", "env", "model"],
        )
        for key, value in sorted(per_scope.items()):
            scoped.add_metric(list(key), value)
        return scoped


class ServerMetrics:
    """The counters and histograms the routes update, in a private registry."""

    def __init__(self, cache: Cache, *, tenant_labels: bool = False, max_age: float = 15.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.hits = Counter(
            "modelcache_hits", "Cache hits served.", ["api", "kind"], registry=self.registry
        )
        self.misses = Counter(
            "modelcache_misses", "Cache misses served.", ["api"], registry=self.registry
        )
        self.inserts = Counter(
            "modelcache_inserts", "Entries written.", ["api"], registry=self.registry
        )
        self.errors = Counter(
            "modelcache_request_errors",
            "Requests refused, by ModelCache error code.",
            ["code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelcache_request_latency_seconds",
            "Time spent in the engine per operation.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.store = _StoreCollector(cache, tenant_labels=tenant_labels, max_age=max_age)
        self.registry.register(self.store)

    def lookup(self, api: str, hit: Hit | None, seconds: float) -> None:
        """Count one lookup and its latency."""
        if hit is None:
            self.misses.labels(api).inc()
        else:
            self.hits.labels(api, hit.kind).inc()
        self.latency.labels("lookup").observe(seconds)

    def observe(self, operation: str, seconds: float) -> None:
        """Record the latency of a non-lookup operation."""
        self.latency.labels(operation).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
