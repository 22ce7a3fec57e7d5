"""Every route answers the engine's exceptions the same way: a caller's mistake is a 4xx with the
ModelCache code of the request, a backend fault a 503 with an error id and no backend text."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelcache import BackendError, Cache, CacheClosedError, ConfigError
from modelcache.server.errors import ApiError, Codes, map_errors

SECRET = "backend text with a user's question"

# (route, engine method it calls, request) — every route that reaches the engine.
ROUTES: dict[str, tuple[str, str, str, Any]] = {
    "rest lookup": ("alookup", "POST", "/v1/lookup", {"query": "q", "model": "m"}),
    "rest insert": ("ainsert", "POST", "/v1/entries", {"query": "q", "model": "m", "answer": "a"}),
    "rest delete": ("aremove", "DELETE", "/v1/entries/abc", None),
    "rest clear": ("aclear", "POST", "/v1/clear", {"model": "m"}),
    "rest stats": ("astats", "GET", "/v1/stats", None),
    "envelope query": (
        "alookup",
        "POST",
        "/modelcache",
        {"type": "query", "scope": {"model": "m"}, "query": "q"},
    ),
    "envelope insert": (
        "ainsert_many",
        "POST",
        "/modelcache",
        {
            "type": "insert",
            "scope": {"model": "m"},
            "chat_info": [{"query": [{"role": "user", "content": "q"}], "answer": "a"}],
        },
    ),
    "envelope delete_by_id": (
        "aremove",
        "POST",
        "/modelcache",
        {
            "type": "remove",
            "scope": {"model": "m"},
            "remove_type": "delete_by_id",
            "id_list": ["a"],
        },
    ),
    "envelope truncate_by_model": (
        "aclear",
        "POST",
        "/modelcache",
        {"type": "remove", "scope": {"model": "m"}, "remove_type": "truncate_by_model"},
    ),
    "envelope register": (
        "register",
        "POST",
        "/modelcache",
        {"type": "register", "scope": {"model": "m"}},
    ),
}

QUERY_BODY = {"cacheHit": False, "delta_time": 0, "hit_query": "", "answer": ""}
WRITE_BODY = {"writeStatus": "exception"}
REMOVE_FAILED_BODY = {"response": "adapt_remove_exception", "removeStatus": "exception"}
REMOVE_ERROR_BODY = {"response": {"status": "failed"}, **WRITE_BODY}
REGISTER_BODY = {"response": "create_failed", "writeStatus": "exception"}

# route -> errorCode and the rest of the body for a ConfigError (422 on REST, 400 in the
# envelope), then for a backend fault (503)
EXPECTED: dict[str, tuple[int, dict[str, Any], int, dict[str, Any]]] = {
    "rest lookup": (Codes.QUERY_FAILED, {}, Codes.QUERY_ERROR, {}),
    "rest insert": (Codes.INSERT_FAILED, {}, Codes.INSERT_ERROR, {}),
    "rest delete": (Codes.REMOVE_FAILED, {}, Codes.REMOVE_ERROR, {}),
    "rest clear": (Codes.REMOVE_FAILED, {}, Codes.REMOVE_ERROR, {}),
    "rest stats": (Codes.QUERY_FAILED, {}, Codes.QUERY_ERROR, {}),
    "envelope query": (Codes.QUERY_FAILED, QUERY_BODY, Codes.QUERY_ERROR, QUERY_BODY),
    "envelope insert": (Codes.INSERT_FAILED, WRITE_BODY, Codes.INSERT_ERROR, WRITE_BODY),
    "envelope delete_by_id": (
        Codes.REMOVE_FAILED,
        REMOVE_FAILED_BODY,
        Codes.REMOVE_ERROR,
        REMOVE_ERROR_BODY,
    ),
    "envelope truncate_by_model": (
        Codes.REMOVE_FAILED,
        REMOVE_FAILED_BODY,
        Codes.REMOVE_ERROR,
        REMOVE_ERROR_BODY,
    ),
    "envelope register": (Codes.REGISTER_ERROR, REGISTER_BODY, Codes.REGISTER_ERROR, REGISTER_BODY),
}


def _call(client: TestClient, cache: Cache, monkeypatch: Any, route: str, exc: Exception) -> Any:
    method_name, verb, path, body = ROUTES[route]

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    async def afail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    monkeypatch.setattr(cache, method_name, fail if method_name == "register" else afail)
    return client.request(verb, path, json=body)


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_config_error_is_the_callers_mistake(
    client: TestClient, cache: Cache, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    r = _call(client, cache, monkeypatch, route, ConfigError("bad value 'x'"))
    code, rest, _, _ = EXPECTED[route]
    assert r.status_code == (422 if route.startswith("rest") else 400), r.text
    assert r.json() == {"errorCode": code, "errorDesc": "bad value 'x'", **rest}


@pytest.mark.parametrize("error", [BackendError, CacheClosedError])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_backend_fault_is_a_503_with_an_error_id_and_no_backend_text(
    client: TestClient,
    cache: Cache,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    route: str,
    error: type[Exception],
) -> None:
    caplog.set_level(logging.INFO)
    r = _call(client, cache, monkeypatch, route, error(SECRET))
    _, _, code, rest = EXPECTED[route]
    assert r.status_code == 503, r.text
    body = r.json()
    desc = body.pop("errorDesc")
    assert body == {"errorCode": code, **rest}
    assert desc.startswith("the cache backend failed (error id ") and SECRET not in r.text
    assert error.__name__ in caplog.text and SECRET not in caplog.text


def test_map_errors_leaves_other_exceptions_alone() -> None:
    with pytest.raises(KeyError), map_errors("rest", Codes.QUERY_FAILED, Codes.QUERY_ERROR):
        raise KeyError("a bug, not a request error")
    with pytest.raises(BackendError), map_errors("query", Codes.BAD_PARAMS):
        raise BackendError("no backend step here: nothing to map it to")  # an unexpected 500
    with pytest.raises(ApiError) as info, map_errors("rest", Codes.BAD_PARAMS):
        raise ApiError(403, Codes.UNAUTHORIZED, "another tenant")
    assert info.value.status == 403


def test_map_errors_names_what_was_invalid() -> None:
    with (
        pytest.raises(ApiError) as info,
        map_errors("insert", Codes.INSERT_FAILED, invalid_types=(TypeError,), what="chat_info[0]"),
    ):
        raise TypeError("not a list")
    assert (info.value.status, info.value.code, info.value.desc) == (
        400,
        Codes.INSERT_FAILED,
        "chat_info[0]: not a list",
    )
