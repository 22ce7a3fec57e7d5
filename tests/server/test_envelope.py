"""POST /modelcache with CodeFuse-ModelCache's request bodies (README and examples/flask)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelcache import Cache, CacheConfig, FakeEmbedder
from modelcache.server import ServerSettings, create_app

SYSTEM = (
    "You are an AI code assistant and you must provide neutral and harmless answers to help "
    "users solve code-related problems."
)
MODEL = "CODEGPT-1008"


def post(client: TestClient, data: dict[str, Any], *, double: bool = True) -> Any:
    """Send like ModelCache's README: requests.post(url, json=json.dumps(data))."""
    return client.post("/modelcache", json=json.dumps(data) if double else data)


def insert_body(query: str, answer: str, model: str = MODEL, system: str = SYSTEM) -> dict:
    return {
        "type": "insert",
        "scope": {"model": model},
        "chat_info": [
            {
                "query": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": query},
                ],
                "answer": answer,
            }
        ],
    }


def query_body(query: str, model: str = MODEL, system: str = SYSTEM) -> dict:
    return {
        "type": "query",
        "scope": {"model": model},
        "query": [{"role": "system", "content": system}, {"role": "user", "content": query}],
    }


def snapshot(cache: Cache) -> list[tuple[str, Any]]:
    return sorted((row["id"], row["answer"]) for row in cache.export())


def test_readme_write_then_query_double_encoded(client: TestClient) -> None:
    r = post(client, insert_body("你是谁?", "Hello, I am an intelligent assistant."))
    assert r.status_code == 200
    body = r.json()
    assert body["errorCode"] == 0 and body["errorDesc"] == "" and body["writeStatus"] == "success"
    assert len(body["id_list"]) == 1

    r = post(client, query_body("你是谁?"))
    body = r.json()
    assert r.status_code == 200
    assert body["errorCode"] == 0
    assert body["cacheHit"] is True
    assert body["hit_query"] == "你是谁?"
    assert body["answer"] == "Hello, I am an intelligent assistant."
    assert re.fullmatch(r"\d+(\.\d+)?s", body["delta_time"])
    assert body["hit_kind"] == "exact" and body["similarity"] == 1.0


def test_plain_json_object_body_and_miss_shape(client: TestClient) -> None:
    r = post(client, query_body("Who are you?"), double=False)
    assert r.status_code == 200
    body = r.json()
    assert {k: body[k] for k in ("errorCode", "errorDesc", "cacheHit", "hit_query", "answer")} == {
        "errorCode": 0,
        "errorDesc": "",
        "cacheHit": False,
        "hit_query": "",
        "answer": "",
    }


def test_every_chat_info_row_is_stored(client: TestClient) -> None:
    rows = [
        {"query": [{"role": "user", "content": f"question number {i}"}], "answer": f"answer {i}"}
        for i in range(5)
    ]
    r = post(client, {"type": "insert", "scope": {"model": MODEL}, "chat_info": rows})
    assert r.json()["writeStatus"] == "success" and len(r.json()["id_list"]) == 5
    for i in range(5):
        q = {"type": "query", "scope": {"model": MODEL}, "query": rows[i]["query"]}
        assert post(client, q).json()["answer"] == f"answer {i}"


def test_system_prompt_and_history_partition_answers(client: TestClient) -> None:
    post(
        client, insert_body("explain the error", "a Python answer", system="You are a Python tutor")
    )
    assert post(client, query_body("explain the error", system="You are a Python tutor")).json()[
        "cacheHit"
    ]
    assert not post(client, query_body("explain the error", system="You are a Java tutor")).json()[
        "cacheHit"
    ]
    turns = [
        {"role": "user", "content": "tell me about tax law"},
        {"role": "assistant", "content": "Tax law is ..."},
        {"role": "user", "content": "explain more"},
    ]
    r = post(
        client,
        {
            "type": "insert",
            "scope": {"model": MODEL},
            "chat_info": [{"query": turns, "answer": "tax"}],
        },
    )
    assert r.status_code == 200
    assert (
        post(client, {"type": "query", "scope": {"model": MODEL}, "query": turns}).json()["answer"]
        == "tax"
    )
    football = [
        {"role": "user", "content": "tell me about football rules"},
        {"role": "assistant", "content": "Football is ..."},
        {"role": "user", "content": "explain more"},
    ]
    q = {"type": "query", "scope": {"model": MODEL}, "query": football}
    assert post(client, q).json()["cacheHit"] is False


def test_model_names_kept_as_given(client: TestClient) -> None:
    post(client, insert_body("what is 2+2?", "4", model="gpt-4"))
    assert post(client, query_body("what is 2+2?", model="gpt-4")).json()["cacheHit"] is True
    assert post(client, query_body("what is 2+2?", model="gpt_4")).json()["cacheHit"] is False
    assert post(client, query_body("what is 2+2?", model="gpt.4")).json()["cacheHit"] is False


def test_remove_truncate_by_model_only_that_model(client: TestClient, cache: Cache) -> None:
    post(client, insert_body("first question here", "a1", model="m1"))
    post(client, insert_body("second question here", "a2", model="m2"))
    r = post(
        client, {"type": "remove", "scope": {"model": "m1"}, "remove_type": "truncate_by_model"}
    )
    body = r.json()
    assert r.status_code == 200 and body["errorCode"] == 0 and body["writeStatus"] == "success"
    assert body["response"]["status"] == "success"
    assert body["response"]["delete_count"] == 1
    assert post(client, query_body("first question here", model="m1")).json()["cacheHit"] is False
    assert post(client, query_body("second question here", model="m2")).json()["cacheHit"] is True


def test_remove_delete_by_id(client: TestClient) -> None:
    ids = post(client, insert_body("delete me please", "x")).json()["id_list"]
    r = post(
        client,
        {
            "type": "remove",
            "scope": {"model": MODEL},
            "remove_type": "delete_by_id",
            "id_list": ids,
        },
    )
    assert r.json()["response"]["status"] == "success"
    assert r.json()["response"]["delete_count"] == 1
    assert post(client, query_body("delete me please")).json()["cacheHit"] is False


def test_register(client: TestClient, cache: Cache) -> None:
    r = post(client, {"type": "register", "scope": {"model": "CODEGPT-1117"}})
    assert r.json() == {
        "errorCode": 0,
        "errorDesc": "",
        "response": "create_success",
        "writeStatus": "success",
    }
    assert any(p["model"] == "CODEGPT-1117" for p in cache.stats()["partitions"])


def test_scope_extensions_tenant_env_params(client: TestClient) -> None:
    scope = {"model": MODEL, "tenant": "acme", "env": "dev", "params": {"temperature": 0}}
    body = insert_body("scoped question", "scoped answer")
    body["scope"] = scope
    assert post(client, body).status_code == 200
    q = query_body("scoped question")
    q["scope"] = scope
    assert post(client, q).json()["cacheHit"] is True
    for other in ({"tenant": "other"}, {"env": "prod"}, {"params": {"temperature": 1}}):
        q["scope"] = {**scope, **other}
        assert post(client, q).json()["cacheHit"] is False, other


def _remove(**extra: Any) -> dict:
    return {"type": "remove", "scope": {"model": MODEL}, **extra}


BAD_BODIES: list[tuple[str, bytes | dict | str, int, int]] = [
    ("malformed JSON", b'{"type": "query", ', 400, 101),
    ("not UTF-8", b'{"type": "\xff"}', 400, 101),
    ("JSON array", b"[1, 2]", 400, 101),
    ("double-encoded garbage", json.dumps("{not json").encode(), 400, 101),
    ("NaN constant", b'{"type": "query", "x": NaN}', 400, 101),
    ("empty body", b"", 400, 101),
    ("type missing", {"scope": {"model": MODEL}}, 400, 102),
    ("type detox", {"type": "detox", "scope": {"model": MODEL}}, 400, 102),
    ("type not a string", {"type": ["query"], "scope": {"model": MODEL}}, 400, 102),
    ("scope missing", {"type": "query", "query": "hi"}, 400, 103),
    ("scope not object", {"type": "query", "scope": "gpt", "query": "hi"}, 400, 103),
    ("model missing", {"type": "query", "scope": {}, "query": "hi"}, 400, 103),
    ("model not string", {"type": "query", "scope": {"model": 4}, "query": "hi"}, 400, 103),
    ("model blank", {"type": "query", "scope": {"model": "  "}, "query": "hi"}, 400, 103),
    (
        "unknown env",
        {"type": "query", "scope": {"model": "m", "env": "qa"}, "query": "hi"},
        400,
        103,
    ),
    (
        "params not object",
        {"type": "query", "scope": {"model": "m", "params": 3}, "query": "x"},
        400,
        103,
    ),
    ("query missing", {"type": "query", "scope": {"model": MODEL}}, 400, 201),
    ("query empty list", {"type": "query", "scope": {"model": MODEL}, "query": []}, 400, 201),
    ("query blank text", {"type": "query", "scope": {"model": MODEL}, "query": " \n "}, 400, 201),
    (
        "query ends with assistant",
        {
            "type": "query",
            "scope": {"model": MODEL},
            "query": [{"role": "assistant", "content": "x"}],
        },
        400,
        201,
    ),
    (
        "query unknown role",
        {"type": "query", "scope": {"model": MODEL}, "query": [{"role": "boss", "content": "x"}]},
        400,
        201,
    ),
    (
        "query content object",
        {"type": "query", "scope": {"model": MODEL}, "query": [{"role": "user", "content": {}}]},
        400,
        201,
    ),
    ("query a number", {"type": "query", "scope": {"model": MODEL}, "query": 7}, 400, 201),
    ("chat_info missing", {"type": "insert", "scope": {"model": MODEL}}, 400, 301),
    ("chat_info empty", {"type": "insert", "scope": {"model": MODEL}, "chat_info": []}, 400, 301),
    (
        "chat_info row without answer",
        {"type": "insert", "scope": {"model": MODEL}, "chat_info": [{"query": "q"}]},
        400,
        301,
    ),
    (
        "chat_info query blank",
        {"type": "insert", "scope": {"model": MODEL}, "chat_info": [{"query": [], "answer": "a"}]},
        400,
        301,
    ),
    ("remove_type missing", _remove(), 400, 401),
    ("remove_type unknown", _remove(remove_type="drop_all"), 400, 401),
    ("id_list missing", _remove(remove_type="delete_by_id"), 400, 401),
    ("id_list not list", _remove(remove_type="delete_by_id", id_list="abc"), 400, 401),
    ("id_list of objects", _remove(remove_type="delete_by_id", id_list=[{}]), 400, 401),
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Cache]]:
    """One seeded app for the read-only bad-input cases (each must leave the data as is)."""
    path = tmp_path_factory.mktemp("bad-input")
    with Cache(CacheConfig(path=str(path)), embedder=FakeEmbedder()) as cache:
        app = create_app(cache, ServerSettings(max_body_bytes=64 * 1024))
        with TestClient(app) as client:
            post(client, insert_body("seed question", "seed answer"))
            yield client, cache


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [pytest.param(b, s, c, id=name) for name, b, s, c in BAD_BODIES],
)
def test_bad_input_is_4xx_with_modelcache_code_and_changes_nothing(
    seeded: tuple[TestClient, Cache], body: bytes | dict | str, status: int, code: int
) -> None:
    client, cache = seeded
    before = snapshot(cache)
    assert len(before) == 1
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post("/modelcache", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    data = r.json()
    assert data["errorCode"] == code
    assert isinstance(data["errorDesc"], str) and data["errorDesc"]
    if code < 300:  # query-shaped error body, as ModelCache sends
        assert data["cacheHit"] is False and data["answer"] == "" and data["hit_query"] == ""
    elif code < 400:
        assert data["writeStatus"] == "exception"
    else:
        assert data["removeStatus"] == "exception"
    assert snapshot(cache) == before


def test_invalid_row_means_no_row_is_written(client: TestClient, cache: Cache) -> None:
    rows = [
        {"query": [{"role": "user", "content": "good row"}], "answer": "ok"},
        {"query": [{"role": "user", "content": "   "}], "answer": "bad"},
    ]
    r = post(client, {"type": "insert", "scope": {"model": MODEL}, "chat_info": rows})
    assert r.status_code == 400 and r.json()["errorCode"] == 301
    assert "chat_info[1]" in r.json()["errorDesc"]
    assert snapshot(cache) == []


def test_body_over_limit_is_413_code_101(client: TestClient, cache: Cache) -> None:
    big = insert_body("big question", "x" * 70_000)
    r = post(client, big, double=False)
    assert r.status_code == 413
    assert r.json()["errorCode"] == 101 and r.json()["cacheHit"] is False
    assert snapshot(cache) == []


def test_blocked_and_unknown_models(cache: Cache) -> None:
    settings = ServerSettings(
        blocked_models=("DI_COPILOT_LAB",), allowed_models=("a", "DI_COPILOT_LAB")
    )
    with TestClient(create_app(cache, settings)) as c:
        r = post(c, query_body("hello", model="DI_COPILOT_LAB"))
        assert r.status_code == 403 and r.json()["errorCode"] == 105
        assert r.json()["errorDesc"] == "model: DI_COPILOT_LAB in blacklist"
        r = post(c, insert_body("hello", "x", model="DI_COPILOT_LAB"))
        assert r.status_code == 403 and r.json()["errorCode"] == 305
        r = post(c, query_body("hello", model="b"))
        assert r.status_code == 400 and r.json()["errorCode"] == 105
        assert post(c, query_body("hello", model="a")).status_code == 200


def test_welcome_page(client: TestClient) -> None:
    assert client.get("/welcome").text == "hello, modelcache!"
