"""Hostile input over HTTP, and secrets/content kept out of error bodies and logs."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from modelcache import BackendError, Cache, Request
from modelcache.redact import describe_error, mask_url
from modelcache.server import ServerSettings, create_app

SECRET = "TOP-SECRET-SYSTEM-PROMPT"


@pytest.fixture
def quiet_client(cache: Cache) -> TestClient:
    """A client that gets the server's 500 response instead of the exception."""
    return TestClient(create_app(cache, ServerSettings()), raise_server_exceptions=False)


def _post(client: TestClient, path: str, raw: bytes) -> Any:
    return client.post(path, content=raw, headers={"content-type": "application/json"})


LONG = "m" * 192
_TRUNCATE = b'"remove_type":"truncate_by_model"}'
HOSTILE: list[tuple[str, bytes]] = [
    ("/v1/lookup", b'{"query":"a\\ud800","model":"m"}'),
    ("/v1/lookup", b'{"query":"a","model":"m","tenant":"x\\ud800"}'),
    ("/v1/lookup", b'{"query":"a","model":"m","system":"\\udfff"}'),
    ("/v1/lookup", b'{"query":"a","model":"m","params":{"k":"\\ud800"}}'),
    ("/v1/entries", b'{"query":"a","model":"m\\ud800","answer":"x"}'),
    ("/v1/entries", b'{"query":"a","model":"m","tenant":"acme\\u0000prod","answer":"x"}'),
    ("/v1/clear", b'{"tenant":"\\ud800"}'),
    ("/v1/lookup", json.dumps({"query": "a", "model": LONG}).encode()),
    ("/v1/entries", json.dumps({"query": "a", "tenant": LONG, "answer": 1}).encode()),
    ("/modelcache", b'{"type":"query","scope":{"model":"m"},"query":"\\ud800"}'),
    (
        "/modelcache",
        b'{"type":"query","scope":{"model":"m"},"query":[{"role":"user","content":"\\ud800"}]}',
    ),
    ("/modelcache", b'{"type":"remove","scope":{"model":"m\\ud800"},' + _TRUNCATE),
    ("/modelcache", b'{"type":"remove","scope":{"model":"m","tenant":"t\\u0001"},' + _TRUNCATE),
    ("/modelcache", b'{"type":"register","scope":{"model":"m","params":{"a":"\\ud800"}}}'),
    ("/modelcache", b'{"type":"register","scope":{"model":"m","tenant":"\\ud800"}}'),
    ("/modelcache", json.dumps({"type": "insert", "scope": {"model": LONG},
                                "chat_info": [{"query": "q", "answer": "a"}]}).encode()),
]  # fmt: skip


@pytest.mark.parametrize(("path", "raw"), HOSTILE)
def test_hostile_input_is_a_clear_4xx(quiet_client: TestClient, path: str, raw: bytes) -> None:
    r = _post(quiet_client, path, raw)
    assert 400 <= r.status_code < 500, r.text
    body = r.json()
    assert body["errorCode"] > 0 and "Traceback" not in r.text


def test_delete_by_id_with_undecodable_ids_deletes_nothing(quiet_client: TestClient) -> None:
    raw = b'{"type":"remove","scope":{"model":"m"},"remove_type":"delete_by_id",'
    raw += b'"id_list":["\\ud800"]}'
    r = _post(quiet_client, "/modelcache", raw)
    assert r.status_code == 200 and r.json()["response"]["delete_count"] == 0


def test_longest_names_are_served(client: TestClient) -> None:
    name = "n" * 191
    r = client.post("/v1/entries", json={"query": "q", "model": name, "tenant": name, "answer": 1})
    assert r.status_code == 201, r.text
    r = client.post("/v1/lookup", json={"query": "q", "model": name, "tenant": name})
    assert r.json()["hit"] is True


def _driver_error() -> sa.exc.OperationalError:
    """What a driver raises, with SQL text and bound parameters holding user content."""
    return sa.exc.OperationalError(
        "INSERT INTO partitionrow (system) VALUES (%(system)s)",
        {"system": SECRET, "password": "hunter2"},
        Exception(2013, "Lost connection to server"),
    )


def test_backend_failures_answer_generically_with_an_error_id(
    quiet_client: TestClient, cache: Cache, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise _driver_error()

    monkeypatch.setattr(cache._sql, "ensure_partition", broken)
    monkeypatch.setattr(cache._sql, "upsert", broken)
    monkeypatch.setattr(cache._sql, "partition_counts", broken)
    caplog.set_level(logging.INFO)
    body = {"query": "q", "model": "m", "system": SECRET, "answer": "a"}
    responses = [
        quiet_client.post("/v1/entries", json=body),
        quiet_client.get("/v1/stats"),
        quiet_client.post(
            "/modelcache",
            json={
                "type": "insert",
                "scope": {"model": "m"},
                "chat_info": [
                    {
                        "query": [
                            {"role": "system", "content": SECRET},
                            {"role": "user", "content": "q"},
                        ],
                        "answer": "a",
                    }
                ],
            },
        ),
        quiet_client.post("/modelcache", json={"type": "register", "scope": {"model": "m"}}),
    ]
    for r in responses:
        assert r.status_code == 503, r.text
        assert SECRET not in r.text and "hunter2" not in r.text and "INSERT" not in r.text
        assert "error id" in r.json()["errorDesc"]
    assert SECRET not in caplog.text and "hunter2" not in caplog.text
    assert "OperationalError" in caplog.text  # the log still says what failed


def test_stats_during_an_outage_raises_backend_error(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise _driver_error()

    monkeypatch.setattr(cache._sql, "partition_counts", broken)
    with pytest.raises(BackendError):
        cache.stats()


def test_lookup_failure_warning_does_not_quote_the_query(
    cache: Cache, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    query = "my private medical question"

    def broken(texts: Any) -> Any:
        raise RuntimeError(f"cannot embed {texts!r}")

    monkeypatch.setattr(cache._embedder, "embed", broken)
    caplog.set_level(logging.WARNING)
    assert cache.lookup(Request.from_text(query)) is None
    assert "lookup failed" in caplog.text and "RuntimeError" in caplog.text
    assert query not in caplog.text


def test_unexpected_errors_are_a_generic_500(
    quiet_client: TestClient, cache: Cache, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"unexpected with {SECRET}")

    monkeypatch.setattr(cache, "astats", boom)
    r = quiet_client.get("/v1/stats")
    assert r.status_code == 500 and "error id" in r.json()["errorDesc"]
    assert SECRET not in r.text and SECRET not in caplog.text


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("mysql+pymysql://root:hunter2@db:3306/mc", "mysql+pymysql://root:***@db:3306/mc"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        (
            "postgresql://h/db?user=u&password=hunter2",
            "postgresql://h/db?user=u&password=%2A%2A%2A",
        ),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        (None, ""),
    ],
)
def test_mask_url(url: str | None, masked: str) -> None:
    assert mask_url(url) == masked


def test_describe_error_names_types_and_codes_only() -> None:
    text = describe_error(_driver_error())
    assert text.startswith("OperationalError") and SECRET not in text


def test_engine_backend_errors_name_the_failure_not_the_data(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adapters log BackendError text at WARNING: it must not quote SQL parameters."""

    def broken(*args: Any, **kwargs: Any) -> None:
        raise _driver_error()

    monkeypatch.setattr(cache._sql, "upsert", broken)
    with pytest.raises(BackendError) as info:
        cache.insert(Request.from_text("q", system=SECRET), "a")
    assert "OperationalError" in str(info.value) and SECRET not in str(info.value)
    assert SECRET in str(info.value.__cause__)  # the details stay on the chain, for DEBUG
