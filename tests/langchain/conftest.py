"""LangChain adapter fixtures: a fake-embedder cache per test, the real model per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.globals import set_llm_cache
from modelcache import Cache, CacheConfig, FakeEmbedder

from modelcache_langchain import ModelCache


@pytest.fixture(autouse=True)
def _reset_global_llm_cache() -> Iterator[None]:
    """Every test starts and ends without a global LangChain cache."""
    set_llm_cache(None)
    yield
    set_llm_cache(None)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Cache]:
    """A fresh, empty engine on ``tmp_path`` with the deterministic fake embedder."""
    with Cache(CacheConfig(path=str(tmp_path)), embedder=FakeEmbedder()) as cache:
        yield cache


@pytest.fixture
def lc_cache(engine: Cache) -> ModelCache:
    """The adapter over the per-test engine."""
    return ModelCache(engine)


@pytest.fixture(scope="session")
def real_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    """One engine with the shipped MiniLM model for the whole session (loading it takes seconds)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = tmp_path_factory.mktemp("langchain-minilm")
    with Cache(CacheConfig(path=str(path), embedder="minilm")) as cache:
        yield cache


@pytest.fixture
def real_cache(real_engine: Cache) -> Iterator[ModelCache]:
    """The adapter over the real-model engine, isolated by a tenant of its own."""
    cache = ModelCache(real_engine, tenant=f"t-{uuid.uuid4().hex[:12]}")
    yield cache
    cache.clear()
