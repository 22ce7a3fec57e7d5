"""LangChain adapter fixtures: a fake-embedder cache per test, the real model per session."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from langchain_core.globals import set_llm_cache

from modelcache import Cache, CacheConfig, SentenceTransformerEmbedder
from modelcache_langchain import ModelCache

# Behaviour tests, not speed tests: a generous lookup deadline, so that a loaded CI machine (or
# the guard warming its word lists at cache start) never turns a slow lookup into a miss. The
# deadline itself is tested in tests/reliability.
_DEADLINE = 10.0


@pytest.fixture(autouse=True)
def _reset_global_llm_cache() -> Iterator[None]:
    """Every test starts and ends without a global LangChain cache."""
    set_llm_cache(None)
    yield
    set_llm_cache(None)


@pytest.fixture
def engine(make_cache: Callable[..., Cache]) -> Cache:
    """A fresh, empty engine on ``tmp_path`` with the deterministic fake embedder."""
    return make_cache()


@pytest.fixture
def lc_cache(engine: Cache) -> ModelCache:
    """The adapter over the per-test engine."""
    return ModelCache(engine)


@pytest.fixture(scope="session")
def real_engine(
    tmp_path_factory: pytest.TempPathFactory, minilm: SentenceTransformerEmbedder
) -> Iterator[Cache]:
    """One engine with the shipped MiniLM model (the session's ``minilm``) for the session."""
    path = tmp_path_factory.mktemp("langchain-minilm")
    with Cache(
        CacheConfig(path=str(path), embedder="minilm", lookup_timeout=_DEADLINE), embedder=minilm
    ) as cache:
        yield cache


@pytest.fixture
def real_cache(real_engine: Cache) -> Iterator[ModelCache]:
    """The adapter over the real-model engine, isolated by a tenant of its own."""
    cache = ModelCache(real_engine, tenant=f"t-{uuid.uuid4().hex[:12]}")
    yield cache
    cache.clear()
