"""Caps against one key exhausting memory: partitions per tenant, params size, and bounded
collection handles / loaded indexes in Chroma (idle ones are released and reloaded)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from modelcache import Cache, CacheConfig, ConfigError, FakeEmbedder, Request, Scope
from modelcache.server import ServerSettings, create_app
from modelcache.vectors.chroma import ChromaVectorStore


def _req(i: int, tenant: str = "acme", text: str = "how do I reset my password") -> Request:
    return Request.from_text(text, tenant=tenant, params={"seed": i})


def test_partitions_per_tenant_are_capped(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache(max_partitions_per_tenant=3)
    for i in range(3):
        cache.insert(_req(i), f"a{i}")
    with pytest.raises(ConfigError, match="cap is 3"):
        cache.insert(_req(3), "one too many")
    with pytest.raises(ConfigError, match="cap is 3"):
        cache.register(Scope(tenant="acme", params={"seed": 99}))
    cache.insert(_req(1, text="another question"), "existing partitions still take writes")
    cache.insert(_req(3, tenant="globex"), "other tenants have their own cap")
    assert cache.lookup(_req(3)) is None  # the refused write left nothing behind
    cache.clear(tenant="acme", params={"seed": 0})
    cache.insert(_req(3), "room again after a clear")
    assert cache.lookup(_req(3)) is not None


def test_params_size_is_capped(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache(max_params_chars=64)
    big = Request.from_text("q", params={"stop": "x" * 100})
    with pytest.raises(ConfigError, match="longer than 64"):
        cache.insert(big, "a")
    with pytest.raises(ConfigError, match="longer than 64"):
        cache.lookup(big)


def test_caps_are_4xx_over_http(tmp_path: Path) -> None:
    config = CacheConfig(path=str(tmp_path), max_partitions_per_tenant=2, max_params_chars=100)
    with Cache(config, embedder=FakeEmbedder()) as cache:
        client = TestClient(create_app(cache, ServerSettings()))
        for i in range(2):
            r = client.post("/v1/entries", json={"query": "q", "params": {"i": i}, "answer": 1})
            assert r.status_code == 201
        r = client.post("/v1/entries", json={"query": "q", "params": {"i": 2}, "answer": 1})
        assert r.status_code == 422 and "cap is 2" in r.json()["errorDesc"]
        envelope = {"type": "insert", "scope": {"model": "default", "params": {"i": 3}},
                    "chat_info": [{"query": "q", "answer": "a"}]}  # fmt: skip
        r = client.post("/modelcache", json=envelope)
        assert r.status_code == 400 and "cap is 2" in r.json()["errorDesc"]
        r = client.post("/v1/lookup", json={"query": "q", "params": {"p": "x" * 200}})
        assert r.status_code == 422 and "longer than 100" in r.json()["errorDesc"]
        r = client.post("/modelcache", json={"type": "register", "scope": {"model": "m"}})
        assert r.status_code == 400 and r.json()["errorCode"] == 502


def test_collection_handles_are_bounded_and_reopened(tmp_path: Path) -> None:
    store = ChromaVectorStore(path=str(tmp_path), max_open_collections=4)
    vec = np.ones((1, 8), dtype=np.float32)
    for i in range(10):
        store.upsert(f"p{i}", [f"id{i}"], vec)
        assert store.open_collections <= 4
    for i in range(10):  # every partition still answers, idle handles reopened on demand
        assert store.query(f"p{i}", vec[0], 1)[0][0] == f"id{i}"
    store.drop("p0")
    assert store.query("p0", vec[0], 1) == []


def test_semantic_hits_survive_index_eviction(make_cache: Callable[..., Cache]) -> None:
    """More partitions than embedded Chroma keeps loaded: evicted indexes are reloaded."""
    cache = make_cache()
    partitions = 80  # more than the 64 HNSW indexes kept in memory
    for i in range(partitions):
        cache.insert(_req(i, text=f"what is the refund policy for order {i}"), f"a{i}")
    for i in (0, 1, 2, partitions - 1):
        hit = cache.lookup(_req(i, text=f"what's the refund policy for order {i}"))
        assert hit is not None and hit.answer == f"a{i}" and not hit.exact
    assert cache.check().ok


def test_upsert_survives_a_collection_dropped_repeatedly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clear loop in another process can drop the collection again right after recreation."""
    store = ChromaVectorStore(path=str(tmp_path))
    vec = np.ones((1, 8), dtype=np.float32)
    store.upsert("p", ["a"], vec)
    real_get = store._get
    drops = {"left": 2}

    class NotFoundError(Exception):
        pass

    class Dropped:
        def upsert(self, **kwargs: object) -> None:
            raise NotFoundError("Collection mc-p not found")

    def flaky_get(collection: str, create: bool) -> object:
        if drops["left"]:
            drops["left"] -= 1
            return Dropped()
        return real_get(collection, create)

    monkeypatch.setattr(store, "_get", flaky_get)
    store.upsert("p", ["b"], vec)
    assert sorted(store.ids("p")) == ["a", "b"]
