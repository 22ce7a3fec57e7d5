"""/metrics: admin key, tenant labels only on request, and cheap (cached) store readings."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from modelcache import Cache, ConfigError
from modelcache.server import ServerSettings, create_app


def _client(cache: Cache, **settings: object) -> TestClient:
    return TestClient(create_app(cache, ServerSettings.create(**settings)))


def _seed(client: TestClient) -> None:
    for tenant in ("acme", "globex"):
        body = {"query": "q", "answer": 1, "tenant": tenant}
        assert client.post("/v1/entries", json=body).status_code == 201


def test_no_tenant_names_by_default(cache: Cache) -> None:
    client = _client(cache)
    _seed(client)
    text = client.get("/metrics").text
    assert "modelcache_entries 2.0" in text and "modelcache_partitions 2.0" in text
    assert "acme" not in text and "globex" not in text


def test_tenant_labels_on_request(cache: Cache) -> None:
    client = _client(cache, metrics_tenant_labels=True)
    _seed(client)
    text = client.get("/metrics").text
    assert 'modelcache_scope_entries{env="prod",model="default",tenant="acme"} 1.0' in text


def test_admin_key_protects_metrics(cache: Cache) -> None:
    keys = {"k-acme": "acme"}
    client = _client(cache, admin_key="s3cret", api_keys=keys, metrics_tenant_labels=True)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer k-acme"}).status_code == 401
    r = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and "modelcache_entries" in r.text
    assert client.get("/metrics", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_scrapes_reuse_one_store_reading(cache: Cache) -> None:
    app = create_app(cache, ServerSettings.create(metrics_max_age=60))
    client = TestClient(app)
    for _ in range(5):
        assert client.get("/metrics").status_code == 200
    assert app.state.metrics.store.passes == 1
    app0 = create_app(cache, ServerSettings.create(metrics_max_age=0))
    client0 = TestClient(app0)
    for _ in range(3):
        client0.get("/metrics")
    assert app0.state.metrics.store.passes == 3


def test_tenant_labels_behind_keys_need_the_admin_key() -> None:
    """/metrics needs no API key, so tenant and model names there need the admin key."""
    for exposed in ({"api_keys": {"k": "acme"}}, {"open_mode": True, "allowed_clients": ["::/0"]}):
        with pytest.raises(ConfigError, match=r"metrics_tenant_labels .* set admin_key"):
            ServerSettings.create(metrics_tenant_labels=True, **exposed)
        assert ServerSettings.create(metrics_tenant_labels=True, admin_key="a", **exposed)
        assert ServerSettings.create(**exposed).admin_key is None  # no labels: no names to hide
