"""Fixtures of the engine tests."""

from __future__ import annotations

import pytest
from core_support import CountingEmbedder


@pytest.fixture
def counting_embedder() -> CountingEmbedder:
    """A FakeEmbedder that counts its calls."""
    return CountingEmbedder()
