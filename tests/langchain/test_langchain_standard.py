"""The langchain-tests standard cache suites, sync and async, against ModelCache."""

from __future__ import annotations

import pytest
from langchain_core.caches import BaseCache
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite

from modelcache import Cache
from modelcache_langchain import ModelCache


class TestModelCacheSync(SyncCacheTestSuite):
    """Sync ``BaseCache`` contract."""

    @pytest.fixture
    def cache(self, engine: Cache) -> BaseCache:
        """A fresh, empty adapter per test; without hit markers, which the suite's equality
        checks of stored and returned generations would count as a difference."""
        return ModelCache(engine, hit_markers=False)


class TestModelCacheAsync(AsyncCacheTestSuite):
    """Async ``BaseCache`` contract (native alookup / aupdate / aclear)."""

    @pytest.fixture
    async def cache(self, engine: Cache) -> BaseCache:
        """A fresh, empty adapter per test; without hit markers, which the suite's equality
        checks of stored and returned generations would count as a difference."""
        return ModelCache(engine, hit_markers=False)
