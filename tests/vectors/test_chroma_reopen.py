"""A cache closed and opened again in one process reads its Chroma folder afresh: another
process may have written there meanwhile (the folder lock was free)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelcache import BackendError, Cache, CacheConfig, FakeEmbedder, Request


def _in_another_process(folder: Path, code: str) -> None:
    script = (
        "from modelcache import Cache, CacheConfig, FakeEmbedder, Request\n"
        f"cache = Cache(CacheConfig(path={str(folder)!r}), embedder=FakeEmbedder())\n"
        f"{code}\ncache.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)


def test_entries_another_process_stored_while_closed_are_found_after_reopening(
    tmp_path: Path,
) -> None:
    """Chroma's state of the folder stayed in memory after close(), so a reopened cache missed
    the entries another process had added meanwhile (and its copy of the partition failed)."""
    config = CacheConfig(path=str(tmp_path))
    cache = Cache(config, embedder=FakeEmbedder())
    cache.insert(Request("How do I bake sourdough bread at home?"), "bread")
    assert cache.lookup(Request("how do i bake sourdough bread at home please")) is not None
    cache.close()
    _in_another_process(
        tmp_path, "cache.insert(Request('What is the best way to learn the violin?'), 'violin')"
    )
    cache = Cache(config, embedder=FakeEmbedder())
    try:
        hit = cache.lookup(Request("what is the best way to learn the violin please"))
        assert hit is not None and hit.answer == "violin"
        hit = cache.lookup(Request("how do i bake sourdough bread at home please"))
        assert hit is not None and hit.answer == "bread"
    finally:
        cache.close()


def test_the_last_of_two_caches_on_a_folder_stops_its_chroma(tmp_path: Path) -> None:
    """Only a store that had opened Chroma itself stopped it: with two caches of one folder, the
    one closed last had often never opened it, and a cache opened later read stale state."""
    from chromadb.api.shared_system_client import SharedSystemClient

    config = CacheConfig(path=str(tmp_path))
    first = Cache(config, embedder=FakeEmbedder())
    second = Cache(config, embedder=FakeEmbedder())
    first.insert(Request("How do I bake sourdough bread at home?"), "bread")
    first.close()
    second.close()
    assert not any(str(tmp_path) in key for key in SharedSystemClient._identifier_to_system)
    with pytest.raises(BackendError, match="closed"):
        second._vectors.upsert("p", ["x"], np.ones((1, FakeEmbedder().dimension), np.float32))
