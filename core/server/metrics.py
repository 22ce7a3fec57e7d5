"""Prometheus metrics of one app: hits, misses, latency, entries, evictions.

Each app owns its registry (no global state), so several apps can live in one process
(tests, embedding in a larger service). Store-level numbers are read from ``Cache.stats()``
when Prometheus scrapes, so they are right across processes sharing one store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..engine import Cache, Hit

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
log = logging.getLogger("modelcache.server")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _StoreCollector(Collector):
    """Entries and evictions as the store reports them, collected at scrape time."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._cache.stats()
        except Exception as exc:  # a scrape must not fail because the store hiccups
            log.warning("modelcache metrics: stats failed: %r", exc)
            return
        yield GaugeMetricFamily(
            "modelcache_entries",
            "Entries stored in the cache.",
            value=float(stats.get("entries", 0)),
        )
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
        yield scoped
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


class ServerMetrics:
    """The counters and histograms the routes update, in a private registry."""

    def __init__(self, cache: Cache) -> None:
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
        self.registry.register(_StoreCollector(cache))

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
