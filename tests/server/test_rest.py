"""The /v1 REST API, health, metrics and the OpenAPI document."""

from __future__ import annotations

from fastapi.testclient import TestClient

from modelcache import Cache


def insert(client: TestClient, query: str, answer: object, **scope: object) -> str:
    r = client.post("/v1/entries", json={"query": query, "answer": answer, **scope})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def lookup(client: TestClient, query: str, **scope: object) -> dict:
    r = client.post("/v1/lookup", json={"query": query, **scope})
    assert r.status_code == 200, r.text
    return r.json()


def test_insert_then_exact_and_semantic_hits(client: TestClient) -> None:
    entry_id = insert(
        client, "How do I reset my password?", {"text": "Use the link", "n": 1}, model="gpt-4o"
    )
    exact = lookup(client, "How do I reset my password?", model="gpt-4o")
    assert exact["hit"] and exact["kind"] == "exact" and exact["similarity"] == 1.0
    assert exact["answer"] == {"text": "Use the link", "n": 1} and exact["entry_id"] == entry_id
    assert exact["tenant"] == "default" and exact["env"] == "prod" and exact["model"] == "gpt-4o"
    semantic = lookup(client, "how do I reset my password", model="gpt-4o", threshold=0.5)
    assert semantic["hit"] and semantic["kind"] == "semantic"
    assert 0.5 <= semantic["similarity"] <= 1.0
    assert semantic["matched_query"] == "How do I reset my password?"
    miss = lookup(client, "How do I reset my password?", model="gpt-4o-mini")
    assert miss == {**miss, "hit": False, "kind": None, "similarity": None, "answer": None}


def test_tenant_env_system_history_isolation(client: TestClient) -> None:
    scope = {"tenant": "acme", "env": "dev", "model": "m", "system": "be brief"}
    insert(client, "what is the refund policy", "30 days", **scope)
    assert lookup(client, "what is the refund policy", **scope)["hit"]
    for change in ({"tenant": "globex"}, {"env": "prod"}, {"system": "be verbose"}):
        assert not lookup(client, "what is the refund policy", **{**scope, **change})["hit"]
    # a conversation on the same topic: the question depends on it (an unrelated one would not)
    history = [
        {"role": "user", "content": "the refund policy for shoes"},
        {"role": "assistant", "content": "ok"},
    ]
    assert not lookup(client, "what is the refund policy", history=history, **scope)["hit"]


def test_delete_entry_and_clear(client: TestClient, cache: Cache) -> None:
    a = insert(client, "question alpha", "a", model="m1")
    insert(client, "question beta", "b", model="m2")
    r = client.delete(f"/v1/entries/{a}")
    assert r.status_code == 200 and r.json() == {"id": a, "deleted": True}
    r = client.delete(f"/v1/entries/{a}")
    assert r.status_code == 404 and r.json()["errorCode"] == 401
    assert not lookup(client, "question alpha", model="m1")["hit"]
    assert client.post("/v1/clear", json={"model": "m1"}).json() == {"deleted": 0}
    assert client.post("/v1/clear", json={"model": "m2"}).json() == {"deleted": 1}
    assert cache.stats()["entries"] == 0


def test_stats(client: TestClient) -> None:
    insert(client, "one question", 1, tenant="t1", model="m")
    insert(client, "two question", 2, tenant="t2", model="m")
    lookup(client, "one question", tenant="t1", model="m")
    body = client.get("/v1/stats").json()
    assert body["entries"] == 2 and {p["tenant"] for p in body["partitions"]} == {"t1", "t2"}
    assert body["process"]["hits"] >= 1
    body = client.get("/v1/stats", params={"tenant": "t1"}).json()
    assert body["entries"] == 1 and body["partitions"][0]["tenant"] == "t1"


def test_validation_errors_carry_modelcache_codes(client: TestClient, cache: Cache) -> None:
    cases = [
        ({"query": "q", "env": "qa"}, 422, 103),
        ({"query": "q", "tenant": ""}, 422, 103),
        ({"query": "   "}, 422, 201),
        ({"query": "q", "threshold": 2}, 422, 201),
        ({"query": "q", "threshold": True}, 422, 201),
        ({"query": "q", "history": [{"role": "system", "content": "x"}]}, 422, 201),
        ({"query": "q", "surprise": 1}, 422, 201),
        ({}, 422, 201),
    ]
    for body, status, code in cases:
        r = client.post("/v1/lookup", json=body)
        assert (r.status_code, r.json()["errorCode"]) == (status, code), (body, r.text)
        assert r.json()["errorDesc"]
    r = client.post("/v1/entries", json={"query": "q"})
    assert (r.status_code, r.json()["errorCode"]) == (422, 301)
    r = client.post("/v1/entries", json={"query": "q", "answer": 1, "ttl": -5})
    assert (r.status_code, r.json()["errorCode"]) == (422, 301)
    r = client.post(
        "/v1/lookup", content=b'{"query": ', headers={"content-type": "application/json"}
    )
    assert (r.status_code, r.json()["errorCode"]) == (400, 101)
    r = client.post("/v1/clear", json={"env": "nope"})
    assert (r.status_code, r.json()["errorCode"]) == (422, 103)
    r = client.delete("/v1/entries/not an id!")
    assert r.status_code == 422
    r = client.post("/v1/entries", json={"query": "q", "answer": "x" * 70_000})
    assert (r.status_code, r.json()["errorCode"]) == (413, 101)
    assert cache.stats()["entries"] == 0


def test_ttl_and_metadata_round_trip(client: TestClient) -> None:
    r = client.post(
        "/v1/entries",
        json={"query": "cached with ttl", "answer": "x", "ttl": 60, "metadata": {"s": 1}},
    )
    assert r.status_code == 201
    assert lookup(client, "cached with ttl")["metadata"] == {"s": 1}


def test_healthz_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    doc = client.get("/openapi.json").json()
    for path in ("/modelcache", "/v1/lookup", "/v1/entries", "/v1/entries/{entry_id}", "/v1/clear"):
        assert path in doc["paths"]
    env = doc["components"]["schemas"]["LookupBody"]["properties"]["env"]
    assert "prod" in str(env)
    body = doc["paths"]["/modelcache"]["post"]["requestBody"]["content"]["application/json"]
    assert any(s.get("type") == "string" for s in body["schema"]["anyOf"])
    assert "ModelCacheEnvelope" in doc["components"]["schemas"]


def test_metrics_count_hits_misses_latency_entries(client: TestClient) -> None:
    insert(client, "metric question", "m")
    lookup(client, "metric question")
    lookup(client, "metric question")
    lookup(client, "completely different words")
    client.post(
        "/modelcache",
        json={"type": "query", "scope": {"model": "default"}, "query": "metric question"},
    )
    text = client.get("/metrics").text
    assert 'modelcache_hits_total{api="rest",kind="exact"} 2.0' in text
    assert 'modelcache_hits_total{api="modelcache",kind="exact"} 1.0' in text
    assert 'modelcache_misses_total{api="rest"} 1.0' in text
    assert 'modelcache_request_latency_seconds_count{operation="lookup"} 4.0' in text
    assert "modelcache_entries 1.0" in text
    assert "modelcache_scope_entries" not in text  # tenant labels are opt-in
    assert "modelcache_evictions_total" in text
    client.post("/modelcache", content=b"{")
    assert 'modelcache_request_errors_total{code="101"} 1.0' in client.get("/metrics").text
