"""CodeFuse-ModelCache's ``POST /modelcache`` envelope, mapped onto the engine.

Request bodies, response fields and error codes follow ModelCache's flask4modelcache.py and
modelcache/cache.py so that existing clients switch without changes. Differences, all
deliberate: model names are kept as given (ModelCache rewrote ``-`` and ``.`` to ``_``, which
merged distinct models), refused requests carry a 4xx status, and a request is validated as a
whole before anything is written.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from ..config import CacheConfig
from ..engine import Cache
from ..errors import ConfigError
from ..request import NAME_LIMITS, Request, check_name
from .auth import Principal
from .errors import ApiError, Codes, Kind, map_errors
from .metrics import ServerMetrics
from .settings import ServerSettings

__all__ = ["TYPES", "handle_envelope", "parse_envelope"]

TYPES = ("query", "insert", "remove", "register")
REMOVE_TYPES = ("truncate_by_model", "delete_by_id")
_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_ID_LIST = 10_000


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def parse_envelope(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object body, or the double-encoded JSON string ModelCache clients send."""
    try:
        data = _loads(raw.decode("utf-8"))
        if isinstance(data, str):  # requests.post(url, json=json.dumps(data))
            data = _loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(
            400, Codes.BAD_BODY, f"request body is not valid JSON: {exc}", "query"
        ) from exc
    if not isinstance(data, dict):
        raise ApiError(
            400,
            Codes.BAD_BODY,
            "request body must be a JSON object (or a JSON string of one), "
            f"got {type(data).__name__}",
            "query",
        )
    return data


def _opt_str(scope: Mapping[str, Any], name: str, kind: Kind) -> str | None:
    value = scope.get(name)
    if value is None:
        return None
    with map_errors(kind, Codes.BAD_PARAMS):
        return check_name(name, value, NAME_LIMITS[name])


class _Scope:
    """The parsed ``scope`` of an envelope, with tenant checked against the caller's key."""

    def __init__(
        self,
        body: Mapping[str, Any],
        kind: Kind,
        principal: Principal,
        settings: ServerSettings,
        config: CacheConfig,
    ) -> None:
        scope = body.get("scope")
        if not isinstance(scope, dict):
            raise ApiError(
                400, Codes.BAD_PARAMS, "scope must be an object like {'model': ...}", kind
            )
        model = _opt_str(scope, "model", kind)
        if model is None:
            raise ApiError(400, Codes.BAD_PARAMS, "scope.model is required", kind)
        self.model = model  # kept as given: 'gpt-4' and 'gpt_4' stay different models
        self.tenant = principal.tenant_for(
            _opt_str(scope, "tenant", kind), settings.default_tenant, kind
        )
        self.env_given = _opt_str(scope, "env", kind)
        self.env = self.env_given if self.env_given is not None else settings.default_env
        with map_errors(kind, Codes.BAD_PARAMS):
            config.check_env(self.env)
        params = scope.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ApiError(400, Codes.BAD_PARAMS, "scope.params must be an object", kind)
        self.params: dict[str, Any] = params
        blocked_code = Codes.INSERT_BLOCKED if kind == "insert" else Codes.MODEL_BLOCKED
        if model in settings.blocked_models:
            raise ApiError(403, blocked_code, f"model: {model} in blacklist", kind)
        if settings.allowed_models is not None and model not in settings.allowed_models:
            raise ApiError(400, blocked_code, f"model: {model} is not served by this cache", kind)

    def request(self, messages: Any, what: str, code: int, kind: Kind) -> Request:
        """A Request from a ModelCache message list (system + history + last user turn)."""
        with map_errors(kind, code, invalid_types=(TypeError, ValueError), what=what):
            if isinstance(messages, str):
                return Request.from_text(
                    messages, tenant=self.tenant, env=self.env, model=self.model, params=self.params
                )
            if not isinstance(messages, list) or not messages:
                raise ConfigError("must be a non-empty list of {'role', 'content'} messages")
            return Request.from_messages(
                messages, tenant=self.tenant, env=self.env, model=self.model, params=self.params
            )


def _delta(started: float) -> str:
    return f"{round(time.perf_counter() - started, 2)}s"


async def _query(cache: Cache, body: dict[str, Any], scope: _Scope, metrics: ServerMetrics) -> Any:
    request = scope.request(body.get("query"), "query", Codes.QUERY_FAILED, "query")
    started = time.perf_counter()
    with map_errors("query", Codes.QUERY_FAILED, Codes.QUERY_ERROR):
        hit = await cache.alookup(request)
    metrics.lookup("modelcache", hit, time.perf_counter() - started)
    if hit is None:
        return {
            "errorCode": 0,
            "errorDesc": "",
            "cacheHit": False,
            "delta_time": _delta(started),
            "hit_query": "",
            "answer": "",
        }
    fields = hit.to_dict()
    return {
        "errorCode": 0,
        "errorDesc": "",
        "cacheHit": True,
        "delta_time": _delta(started),
        "hit_query": fields["matched_query"],
        "answer": fields["answer"],
        # extensions (ModelCache clients ignore unknown fields)
        "similarity": fields["similarity"],
        "hit_kind": fields["kind"],
        "id": fields["entry_id"],
    }


async def _insert(cache: Cache, body: dict[str, Any], scope: _Scope, metrics: ServerMetrics) -> Any:
    rows = body.get("chat_info")
    if not isinstance(rows, list) or not rows:
        raise ApiError(
            400,
            Codes.INSERT_FAILED,
            "chat_info must be a non-empty list of {'query': [...], 'answer': ...}",
            "insert",
        )
    items: list[tuple[Request, Any]] = []
    for index, row in enumerate(rows):  # validate every row before writing any
        if not isinstance(row, dict) or "query" not in row or row.get("answer") is None:
            raise ApiError(
                400,
                Codes.INSERT_FAILED,
                f"chat_info[{index}] must be an object with 'query' and a non-null 'answer'",
                "insert",
            )
        request = scope.request(
            row["query"], f"chat_info[{index}].query", Codes.INSERT_FAILED, "insert"
        )
        items.append((request, row["answer"]))
    started = time.perf_counter()
    with map_errors("insert", Codes.INSERT_FAILED, Codes.INSERT_ERROR):
        ids = await cache.ainsert_many(items)
    metrics.observe("insert", time.perf_counter() - started)
    metrics.inserts.labels("modelcache").inc(len(ids))
    return {"errorCode": 0, "errorDesc": "", "writeStatus": "success", "id_list": ids}


async def _remove(
    cache: Cache, body: dict[str, Any], scope: _Scope, principal: Principal, metrics: ServerMetrics
) -> Any:
    remove_type = body.get("remove_type")
    if remove_type not in REMOVE_TYPES:
        raise ApiError(
            400,
            Codes.REMOVE_FAILED,
            f"remove_type must be one of {list(REMOVE_TYPES)}, got {remove_type!r}",
            "remove",
        )
    id_list = body.get("id_list")
    if id_list is not None and (
        not isinstance(id_list, list)
        or len(id_list) > _MAX_ID_LIST
        or not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in id_list)
    ):
        raise ApiError(
            400,
            Codes.REMOVE_FAILED,
            f"id_list must be a list of at most {_MAX_ID_LIST} ids (strings)",
            "remove",
        )
    started = time.perf_counter()
    with map_errors(
        "remove", Codes.REMOVE_FAILED, Codes.REMOVE_ERROR, failed_response={"status": "failed"}
    ):
        if remove_type == "delete_by_id":
            if id_list is None:
                raise ApiError(400, Codes.REMOVE_FAILED, "delete_by_id needs an id_list", "remove")
            # ids are hex digests: anything else (or text a driver cannot encode) matches none
            ids = [str(i) for i in id_list if _ENTRY_ID.fullmatch(str(i))]
            if principal.tenant is not None:  # a key never deletes another tenant's entries
                count = await cache.aremove(ids, tenant=scope.tenant, model=scope.model)
            else:
                count = await cache.aremove(ids)
            response: dict[str, Any] = {
                "status": "success",
                "milvus": f"delete_count: {count}",
                "mysql": f"delete_count: {count}",
                "delete_count": count,
            }
        else:
            count = await cache.aclear(tenant=scope.tenant, env=scope.env_given, model=scope.model)
            response = {
                "status": "success",
                "VectorDB": "rebuild",
                "ScalarDB": f"delete_count: {count}",
                "delete_count": count,
            }
    metrics.observe("remove", time.perf_counter() - started)
    return {"errorCode": 0, "errorDesc": "", "response": response, "writeStatus": "success"}


async def _register(cache: Cache, scope: _Scope) -> Any:
    import asyncio

    from ..request import Scope

    with map_errors(
        "register",
        Codes.REGISTER_ERROR,
        Codes.REGISTER_ERROR,
        response="create_failed",
        failed_response="create_failed",
    ):
        target = Scope(tenant=scope.tenant, env=scope.env, model=scope.model, params=scope.params)
        existed = await asyncio.to_thread(cache.has_partition, target)
        await cache.aregister(target)
    response = "already_exists" if existed else "create_success"
    return {"errorCode": 0, "errorDesc": "", "response": response, "writeStatus": "success"}


async def handle_envelope(
    cache: Cache,
    settings: ServerSettings,
    metrics: ServerMetrics,
    principal: Principal,
    raw: bytes,
) -> dict[str, Any]:
    """Validate and run one envelope; raises :class:`ApiError` for refused requests."""
    body = parse_envelope(raw)
    request_type = body.get("type")
    if request_type not in TYPES:
        raise ApiError(
            400,
            Codes.BAD_TYPE,
            f"type exception, should one of {list(TYPES)}",
            "query",
        )
    kind: Kind = request_type
    scope = _Scope(body, kind, principal, settings, cache.config)
    if request_type == "query":
        return await _query(cache, body, scope, metrics)
    if request_type == "insert":
        return await _insert(cache, body, scope, metrics)
    if request_type == "remove":
        return await _remove(cache, body, scope, principal, metrics)
    return await _register(cache, scope)
