"""The FastAPI application: ``POST /modelcache`` (ModelCache envelope), ``/v1`` REST, health
and metrics. All cache logic stays in the engine; this module parses, authorises, delegates
and serialises.
"""

import hmac
import logging
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import TypeAdapter
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..engine import Cache, _lookup_fields
from ..redact import describe_error
from ..request import Message as ChatMessage
from ..request import Request as CacheRequest
from ..request import Scope as CacheScope
from .auth import Principal, authenticate
from .errors import ApiError, Codes, Kind, envelope_error_body, error_id, map_errors
from .legacy import handle_envelope
from .metrics import CONTENT_TYPE, ServerMetrics
from .schemas import (
    ClearResult,
    DeleteResult,
    EntryCreated,
    EntryId,
    ErrorBody,
    HealthResult,
    LookupResult,
    ReadyResult,
    StatsResult,
    envelope_models,
    rest_bodies,
)
from .settings import ServerSettings

_READY_TIMEOUT = 1.0  # seconds a readiness probe waits for each store

__all__ = ["create_app"]

log = logging.getLogger("modelcache.server")

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Malformed request (ModelCache code in errorCode)."),
        (401, "Missing or unknown API key (errorCode 104)."),
        (403, "The key's tenant may not do this (errorCode 104), or a blocked model."),
        (413, "Body larger than the configured limit (errorCode 101)."),
        (422, "Body does not match the schema."),
        (503, "The store failed; nothing was changed."),
    )
}

# Codes for schema validation failures, by route: the ModelCache code of the same mistake.
_VALIDATION_CODES = {
    "/v1/lookup": Codes.QUERY_FAILED,
    "/v1/entries": Codes.INSERT_FAILED,
    "/v1/clear": Codes.REMOVE_FAILED,
}
_SCOPE_FIELDS = {"tenant", "env", "model", "params"}


def _kind_of(path: str) -> Kind:
    """The body shape of a failure on ``path``: the envelope's query body, or REST's."""
    return "query" if path.rstrip("/").endswith("/modelcache") else "rest"


def _error_response(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=status)


class _BodyLimit:
    """Refuse bodies over the limit with a ModelCache-shaped 413 (declared or streamed size)."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: ServerMetrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            self.metrics.errors.labels(str(Codes.BAD_BODY)).inc()
            kind = _kind_of(scope["path"])
            desc = f"request body is larger than the limit of {self.max_bytes} bytes"
            response = JSONResponse(envelope_error_body(kind, Codes.BAD_BODY, desc), 413)
            await response(scope, receive, send)
            return
        total = 0

        async def limited() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:  # chunked upload: the route's handler answers 413
                    raise StarletteHTTPException(
                        413, f"request body is larger than the limit of {self.max_bytes} bytes"
                    )
            return message

        await self.app(scope, limited, send)


class _Unexpected:
    """Answer an unexpected exception with a generic 500 and an error id, not a traceback.

    Exception messages may quote user text, so the log names only the type above DEBUG.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            eid = error_id()
            log.error("modelcache server: unexpected %s (error id %s)", describe_error(exc), eid)
            log.debug("modelcache server: error %s details", eid, exc_info=exc)
            kind = _kind_of(scope["path"])
            desc = f"internal error (error id {eid})"
            response = JSONResponse(envelope_error_body(kind, Codes.QUERY_ERROR, desc), 500)
            await response(scope, receive, send)


def _is_admin(request: Request, admin_key: str) -> bool:
    """Whether the request carries the admin key (Bearer or X-API-Key); constant time."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    presented = [token.strip()] if scheme.lower() == "bearer" else []
    presented.append(request.headers.get("x-api-key", "").strip())
    return any(hmac.compare_digest(k.encode(), admin_key.encode()) for k in presented if k)


def _install_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        metrics.errors.labels(str(exc.code)).inc()
        return _error_response(exc.status, exc.body())

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        details = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg")),
                "type": e.get("type"),
            }
            for e in errors
        ]
        if any(e.get("type") == "json_invalid" for e in errors):
            status, code = 400, Codes.BAD_BODY
            desc = "request body is not valid JSON"
        else:
            status = 422
            fields = {str(e["loc"][1]) for e in errors if len(e.get("loc", ())) > 1}
            if fields and fields <= _SCOPE_FIELDS:
                code = Codes.BAD_PARAMS
            else:
                code = _VALIDATION_CODES.get(request.url.path, Codes.BAD_PARAMS)
            desc = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details[:5])
        metrics.errors.labels(str(code)).inc()
        body = envelope_error_body(_kind_of(request.url.path), code, desc)
        body["detail"] = details
        return _error_response(status, body)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = Codes.BAD_BODY if exc.status_code in (400, 413) else 400
        desc = str(exc.detail)
        metrics.errors.labels(str(code)).inc()
        return JSONResponse(
            envelope_error_body(_kind_of(request.url.path), code, desc),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )


def _openapi_with_envelope(app: FastAPI, environments: tuple[str, ...]) -> None:
    """Document ``POST /modelcache``'s body (object or JSON string) and its responses."""
    envelope, query_result, write_result = envelope_models(environments)
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base_openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, model in (
            ("ModelCacheEnvelope", envelope),
            ("EnvelopeQueryResult", query_result),
            ("EnvelopeWriteResult", write_result),
        ):
            js = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
            components.update(js.pop("$defs", {}))
            components[name] = js
        op = schema["paths"]["/modelcache"]["post"]
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/ModelCacheEnvelope"},
                            {
                                "type": "string",
                                "description": "The same object, JSON-encoded "
                                "(requests.post(url, json=json.dumps(data))).",
                            },
                        ]
                    }
                }
            },
        }
        op["responses"]["200"]["content"] = {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/EnvelopeQueryResult"},
                        {"$ref": "#/components/schemas/EnvelopeWriteResult"},
                    ]
                }
            }
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(cache: Cache, settings: ServerSettings | None = None) -> FastAPI:
    """Build the HTTP service over an open cache (the caller owns and closes the cache)."""
    settings = settings if settings is not None else ServerSettings()
    environments = cache.config.environments
    cache.config.check_env(settings.default_env, "default_env")
    if settings.local_only:
        log.warning(
            "modelcache server: no API keys configured - local-only mode, any tenant, loopback only"
        )
    elif settings.open_mode:
        log.warning(
            "modelcache server: open mode - clients in %s need no API key and may use any tenant",
            ", ".join(settings.allowed_clients),
        )
    metrics = ServerMetrics(
        cache, tenant_labels=settings.metrics_tenant_labels, max_age=settings.metrics_max_age
    )
    bodies = rest_bodies(environments)
    LookupBody, EntryBody, ClearBody = (
        bodies["LookupBody"],
        bodies["EntryBody"],
        bodies["ClearBody"],
    )

    app = FastAPI(
        title="ModelCache",
        version=__version__,
        description="Semantic cache for LLM apps: CodeFuse-ModelCache-compatible "
        "`POST /modelcache` plus a REST API. Send `Authorization: Bearer <key>` "
        "when API keys are configured.",
    )
    app.add_middleware(_BodyLimit, max_bytes=settings.max_body_bytes, metrics=metrics)
    app.add_middleware(_Unexpected)
    app.state.cache = cache
    app.state.settings = settings
    app.state.metrics = metrics
    _install_error_handlers(app, metrics)

    security: list[Any] = []
    if settings.api_keys:  # documented only when keys exist, so key-less modes need none
        security = [
            Depends(HTTPBearer(auto_error=False)),
            Depends(APIKeyHeader(name="X-API-Key", auto_error=False)),
        ]

    def rest_principal(request: Request) -> Principal:
        return authenticate(request, settings, "rest")

    def envelope_principal(request: Request) -> Principal:
        return authenticate(request, settings, "query")

    RestCaller = Annotated[Principal, Depends(rest_principal)]

    def build_request(body: Any, principal: Principal, *, writing: bool) -> CacheRequest:
        """Engine request of a REST body, after the tenant and model checks."""
        kind: Kind = "rest"
        tenant = principal.tenant_for(body.tenant, settings.default_tenant, kind)
        env = body.env if body.env is not None else settings.default_env
        code = Codes.INSERT_BLOCKED if writing else Codes.MODEL_BLOCKED
        if body.model in settings.blocked_models:
            raise ApiError(403, code, f"model: {body.model} in blacklist", kind)
        if settings.allowed_models is not None and body.model not in settings.allowed_models:
            raise ApiError(400, code, f"model: {body.model} is not served by this cache", kind)
        with map_errors(kind, Codes.BAD_PARAMS):
            return CacheRequest(
                query=body.query,
                scope=CacheScope(tenant=tenant, env=env, model=body.model, params=body.params),
                system=body.system,
                history=tuple(ChatMessage(m.role, m.content) for m in body.history),
            )

    # ---- ModelCache envelope -----------------------------------------------------------------
    @app.post(
        "/modelcache",
        tags=["ModelCache"],
        summary="CodeFuse-ModelCache envelope: query / insert / remove / register",
        responses={200: {"description": "errorCode 0 and the type's fields"}, **_ERRORS},
        dependencies=security,
    )
    async def modelcache(
        request: Request, principal: Annotated[Principal, Depends(envelope_principal)]
    ) -> JSONResponse:
        raw = await request.body()
        return JSONResponse(await handle_envelope(cache, settings, metrics, principal, raw))

    @app.get("/welcome", tags=["ModelCache"], response_class=PlainTextResponse)
    async def welcome() -> str:
        """ModelCache's liveness page."""
        return "hello, modelcache!"

    # ---- REST ----------------------------------------------------------------------------------
    @app.post(
        "/v1/lookup",
        tags=["REST"],
        response_model=LookupResult,
        responses=_ERRORS,
        dependencies=security,
    )
    async def lookup(body: LookupBody, principal: RestCaller) -> LookupResult:  # type: ignore[valid-type]
        """Look a request up: exact first, then semantic; a miss is ``hit: false``."""
        req = build_request(body, principal, writing=False)
        started = time.perf_counter()
        with map_errors("rest", Codes.QUERY_FAILED, Codes.QUERY_ERROR):
            hit = await cache.alookup(req, threshold=body.threshold)  # type: ignore[attr-defined]
        elapsed = time.perf_counter() - started
        metrics.lookup("rest", hit, elapsed)
        return LookupResult(
            **_lookup_fields(hit),
            tenant=req.scope.tenant,
            env=req.scope.env,
            model=req.scope.model,
            latency_ms=elapsed * 1000,
        )

    @app.post(
        "/v1/entries",
        tags=["REST"],
        status_code=201,
        response_model=EntryCreated,
        responses=_ERRORS,
        dependencies=security,
    )
    async def insert(body: EntryBody, principal: RestCaller) -> EntryCreated:  # type: ignore[valid-type]
        """Store an answer; storing the same request again replaces it."""
        req = build_request(body, principal, writing=True)
        started = time.perf_counter()
        with map_errors("rest", Codes.INSERT_FAILED, Codes.INSERT_ERROR):
            entry_id = await cache.ainsert(
                req,
                body.answer,  # type: ignore[attr-defined]
                ttl=body.ttl,  # type: ignore[attr-defined]
                metadata=body.metadata,  # type: ignore[attr-defined]
            )
        metrics.observe("insert", time.perf_counter() - started)
        metrics.inserts.labels("rest").inc()
        return EntryCreated(
            id=entry_id, tenant=req.scope.tenant, env=req.scope.env, model=req.scope.model
        )

    @app.delete(
        "/v1/entries/{entry_id}",
        tags=["REST"],
        response_model=DeleteResult,
        responses={**_ERRORS, 404: {"model": ErrorBody, "description": "No such entry."}},
        dependencies=security,
    )
    async def delete_entry(
        entry_id: Annotated[EntryId, Path(description="Entry id from insert or lookup.")],
        principal: RestCaller,
    ) -> DeleteResult:
        """Delete one entry (a key can only delete its own tenant's entries)."""
        ids = [entry_id]
        started = time.perf_counter()
        with map_errors("rest", Codes.REMOVE_FAILED, Codes.REMOVE_ERROR):
            count = await cache.aremove(ids, tenant=principal.tenant) if ids else 0
        metrics.observe("remove", time.perf_counter() - started)
        if not count:
            raise ApiError(404, Codes.REMOVE_FAILED, f"no entry {entry_id!r}")
        return DeleteResult(id=entry_id, deleted=True)

    @app.post(
        "/v1/clear",
        tags=["REST"],
        response_model=ClearResult,
        responses=_ERRORS,
        dependencies=security,
    )
    async def clear(body: ClearBody, principal: RestCaller) -> ClearResult:  # type: ignore[valid-type]
        """Drop partitions by tenant/env/model/params (a key is confined to its tenant)."""
        tenant = principal.scope_tenant(body.tenant)  # type: ignore[attr-defined]
        started = time.perf_counter()
        with map_errors("rest", Codes.REMOVE_FAILED, Codes.REMOVE_ERROR):
            deleted = await cache.aclear(
                tenant=tenant,
                env=body.env,  # type: ignore[attr-defined]
                model=body.model,  # type: ignore[attr-defined]
                params=body.params,  # type: ignore[attr-defined]
            )
        metrics.observe("clear", time.perf_counter() - started)
        return ClearResult(deleted=deleted)

    @app.get(
        "/v1/stats",
        tags=["REST"],
        response_model=StatsResult,
        responses=_ERRORS,
        dependencies=security,
    )
    async def stats(
        principal: RestCaller,
        tenant: Annotated[str | None, Query(max_length=191)] = None,
    ) -> StatsResult:
        """Entries per partition (your tenant's only, with an API key)."""
        scope_tenant = principal.scope_tenant(tenant)
        with map_errors("rest", Codes.QUERY_FAILED, Codes.QUERY_ERROR):
            raw = await cache.astats()
        parts = [
            p
            for p in raw.get("partitions", [])
            if scope_tenant is None or p["tenant"] == scope_tenant
        ]
        process = None
        if principal.tenant is None:
            process = {k: v for k, v in raw.items() if k not in ("partitions",)}
        return StatsResult(
            entries=sum(int(p.get("entries", 0)) for p in parts), partitions=parts, process=process
        )

    # ---- operations ---------------------------------------------------------------------------
    @app.get("/healthz", tags=["Operations"], response_model=HealthResult)
    async def healthz() -> HealthResult:
        """Liveness: the process answers (does not touch the stores)."""
        return HealthResult(status="ok", version=__version__)

    @app.get(
        "/readyz",
        tags=["Operations"],
        response_model=ReadyResult,
        responses={503: {"model": ReadyResult, "description": "A store is down or stuck."}},
    )
    async def readyz() -> JSONResponse:
        """Readiness: a bounded probe of both stores; 503 while one is down or hangs."""
        import asyncio

        report = await asyncio.to_thread(cache.ready, _READY_TIMEOUT)
        body = ReadyResult(**report).model_dump()
        return JSONResponse(body, status_code=200 if report["ready"] else 503)

    @app.get(
        "/metrics",
        tags=["Operations"],
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    )
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus text format: hits, misses, latency histogram, entries, evictions."""
        import asyncio

        if settings.admin_key is not None and not _is_admin(request, settings.admin_key):
            raise ApiError(401, Codes.UNAUTHORIZED, "/metrics needs the admin key")

        payload = await asyncio.to_thread(metrics.render)
        return Response(payload, media_type=CONTENT_TYPE)

    _openapi_with_envelope(app, environments)
    return app
