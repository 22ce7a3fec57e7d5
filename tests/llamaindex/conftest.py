"""Fixtures for the LlamaIndex adapter: a fake-embedder cache per test, the real model per
session, and a guard that restores LlamaIndex's global Settings."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Settings

from modelcache import Cache, CacheConfig, FakeEmbedder

# Behaviour tests, not speed tests: a generous lookup deadline, so that a loaded CI machine (or
# the guard warming its word lists at cache start) never turns a slow lookup into a miss. The
# deadline itself is tested in tests/reliability.
_DEADLINE = 10.0


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    """A fresh engine on ``tmp_path`` with the deterministic fake embedder."""
    with Cache(
        CacheConfig(path=str(tmp_path), lookup_timeout=_DEADLINE), embedder=FakeEmbedder()
    ) as engine:
        yield engine


@pytest.fixture(scope="session")
def real_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    """One engine with the shipped MiniLM model for the whole session (offline)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    path = tmp_path_factory.mktemp("llamaindex-minilm")
    with Cache(CacheConfig(path=str(path), embedder="minilm", lookup_timeout=_DEADLINE)) as engine:
        yield engine


@pytest.fixture
def tenant() -> str:
    """A tenant of its own, isolating a test inside the shared real-model engine."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def llama_settings() -> Iterator[Any]:
    """LlamaIndex's global Settings, restored after the test."""
    saved = (Settings._llm, Settings._embed_model, Settings._callback_manager)
    try:
        yield Settings
    finally:
        Settings._llm, Settings._embed_model, Settings._callback_manager = saved
