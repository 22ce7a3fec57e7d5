"""Helpers of the engine tests: instrumented embedders and white-box store probes."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from modelcache import Cache, FakeEmbedder


def record_texts(monkeypatch: pytest.MonkeyPatch, owner: object, method: str) -> list[str]:
    """Every text passed to ``owner.method`` (an embedding call) from now on."""
    seen: list[str] = []
    real = getattr(owner, method)

    def recording(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return np.asarray(real(texts))

    monkeypatch.setattr(owner, method, recording)
    return seen


class CountingEmbedder(FakeEmbedder):
    """FakeEmbedder that counts calls and texts, to prove which path computed an embedding."""

    def __init__(self, dimension: int = 256) -> None:
        super().__init__(dimension)
        self.calls = 0
        self.texts: list[str] = []
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Count, then embed like FakeEmbedder."""
        with self._lock:
            self.calls += 1
            self.texts.extend(texts)
        return super().embed(texts)


class BrokenEmbedder(FakeEmbedder):
    """FakeEmbedder whose ``embed`` raises once ``broken`` is set (a crashed model)."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Raise when broken, else embed."""
        if self.broken:
            raise RuntimeError("embedding model crashed")
        return super().embed(texts)


def collections(cache: Cache) -> set[str]:
    """Partition ids that have a Chroma collection (white-box: the vector store)."""
    return set(cache._vectors.collections())


def vector_ids(cache: Cache, partition_id: str) -> set[str]:
    """Entry ids stored as vectors in one partition (white-box: the vector store)."""
    return set(cache._vectors.ids(partition_id))
