"""A small program written the way a user would, checked by mypy (`make typecheck`).

The ``assert_type`` lines pin the public types; each ``type: ignore`` marks a mistake mypy must
report, and ``warn_unused_ignores`` fails the check if it stops reporting it. Also run as a
test, so the script stays true at runtime.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from langchain_core.outputs import Generation
from typing_extensions import assert_type

from modelcache import (
    Cache,
    CacheClosedError,
    CacheConfig,
    CacheStats,
    ConfigError,
    FakeEmbedder,
    Hit,
    ModelCacheError,
    PartitionStats,
    Request,
)
from modelcache_langchain import ModelCache


def main(path: str) -> CacheStats:
    """Store an answer, hit it, read the statistics, close; returns the statistics."""
    config = CacheConfig.load(None, {}, path=path, top_k=3)
    assert_type(config, CacheConfig)
    assert_type(config.top_k, int)
    assert_type(config.similarity_threshold, float | None)
    with Cache(config, embedder=FakeEmbedder()) as cache:
        request = Request.from_text("How do I reset my password?", tenant="acme")
        assert_type(cache.insert(request, {"text": "Use the reset link."}), str)
        hit = cache.lookup(request)
        assert_type(hit, Hit | None)
        assert hit is not None and hit.exact
        assert_type(hit.similarity, float)
        stats = cache.stats()
        assert_type(stats, CacheStats)
        assert_type(stats.hits, int)
        assert_type(stats.latency_ms_p50, float | None)
        assert_type(stats.partitions, tuple[PartitionStats, ...])
        assert_type(stats.to_dict(), dict[str, Any])
        assert stats["hits"] == stats.hits == 1  # a read-only mapping too
        with contextlib.suppress(AttributeError):
            print(stats.hitz)  # type: ignore[attr-defined]
        adapter = ModelCache(cache, tenant="acme")
        adapter.update("q", "llm", [Generation(text="a")])
        assert_type(adapter.lookup("q", "llm"), Sequence[Generation] | None)
    try:
        cache.lookup(request)
    except CacheClosedError as exc:
        assert_type(exc, CacheClosedError)
        assert isinstance(exc, ModelCacheError)
    try:
        CacheConfig(top_kk=3)  # type: ignore[call-arg]
    except ConfigError as exc:
        assert isinstance(exc, ValueError)
    assert CacheConfig(top_k="3").top_k == 3  # type: ignore[arg-type]  # parsed, but not typed
    return stats


async def amain(path: str) -> CacheStats:
    """The async twins, typed as their sync methods awaited; returns the statistics."""
    with Cache(CacheConfig(path=path), embedder=FakeEmbedder()) as cache:
        request = Request.from_text("How do I reset my password?", tenant="acme")
        assert_type(await cache.ainsert(request, "Use the reset link.", ttl=60.0), str)
        assert_type(await cache.ainsert_many([(request, "Use the link.")]), list[str])
        hit = await cache.alookup(request, exact_only=True)
        assert_type(hit, Hit | None)
        assert hit is not None and hit.answer == "Use the link."
        with contextlib.suppress(TypeError):
            await cache.alookup(request, exactonly=True)  # type: ignore[call-arg]
        assert_type(await cache.aregister(request.scope), str)
        stats = await cache.astats()
        assert_type(stats, CacheStats)
        assert_type(await cache.aremove([hit.entry_id]), int)
        assert_type(await cache.aclear(tenant="acme"), int)
    return stats
