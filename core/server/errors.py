"""API errors: an HTTP status plus CodeFuse-ModelCache's numeric ``errorCode``.

ModelCache answers every outcome with ``errorCode``/``errorDesc``; the body shape depends on the
request type (query bodies carry ``cacheHit``…, writes carry ``writeStatus``). We keep those
shapes and codes, and add a truthful HTTP status (4xx for the caller's mistakes).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from ..errors import ConfigError, ModelCacheError
from ..redact import describe_error

__all__ = [
    "ApiError",
    "Codes",
    "backend_failure",
    "envelope_error_body",
    "error_id",
    "map_errors",
]

log = logging.getLogger("modelcache.server")

Kind = Literal["query", "insert", "remove", "register", "rest"]


class Codes:
    """ModelCache error codes (flask4modelcache.py / modelcache/cache.py), plus 104."""

    OK = 0
    BAD_BODY = 101  # body is not JSON / not an object / too large
    BAD_TYPE = 102  # `type` missing or not query|insert|remove|register
    BAD_PARAMS = 103  # scope/model/env/tenant malformed
    UNAUTHORIZED = 104  # extension: missing/unknown API key, or another tenant's data
    MODEL_BLOCKED = 105  # model refused (ModelCache's model blacklist), query side
    QUERY_FAILED = 201  # query could not be processed (bad message list)
    QUERY_ERROR = 202  # unexpected failure while querying
    INSERT_FAILED = 301  # insert could not be processed (bad chat_info)
    INSERT_ERROR = 302  # the store rejected the write
    INSERT_BLOCKED = 305  # model refused, insert side
    REMOVE_FAILED = 401  # bad remove_type / id_list
    REMOVE_ERROR = 402  # the store failed to remove
    REGISTER_ERROR = 502  # register failed


def envelope_error_body(kind: Kind, code: int, desc: str, response: Any = None) -> dict[str, Any]:
    """The ModelCache-shaped body of a failed request of the given kind."""
    if kind == "insert":
        return {"errorCode": code, "errorDesc": desc, "writeStatus": "exception"}
    if kind == "remove" and code == Codes.REMOVE_FAILED:  # a bad remove request, as ModelCache
        return {
            "errorCode": code,
            "errorDesc": desc,
            "response": response if response is not None else "adapt_remove_exception",
            "removeStatus": "exception",
        }
    if kind in ("remove", "register"):  # a store that failed the write
        return {
            "errorCode": code,
            "errorDesc": desc,
            "response": response,
            "writeStatus": "exception",
        }
    if kind == "rest":
        return {"errorCode": code, "errorDesc": desc}
    return {
        "errorCode": code,
        "errorDesc": desc,
        "cacheHit": False,
        "delta_time": 0,
        "hit_query": "",
        "answer": "",
    }


class ApiError(Exception):
    """A request the service refuses: rendered as ``status`` with a ModelCache-shaped body."""

    def __init__(
        self, status: int, code: int, desc: str, kind: Kind = "rest", response: Any = None
    ) -> None:
        super().__init__(desc)
        self.status = status
        self.code = code
        self.desc = desc
        self.kind: Kind = kind
        self.response = response

    def body(self) -> dict[str, Any]:
        """The JSON body sent to the client."""
        return envelope_error_body(self.kind, self.code, self.desc, self.response)


def error_id() -> str:
    """A short random id that ties a client-visible error to its server log line."""
    return secrets.token_hex(6)


def backend_failure(
    exc: BaseException, code: int, kind: Kind = "rest", *, status: int = 503, response: Any = None
) -> ApiError:
    """A generic 503 for a failed store, with an error id; details only in the DEBUG log.

    Backend messages can carry SQL text, bound parameters (user queries, system prompts) and
    addresses, so neither the client nor logs above DEBUG see them.
    """
    eid = error_id()
    log.warning("modelcache server: backend failure %s (%s)", eid, describe_error(exc))
    log.debug("modelcache server: backend failure %s details", eid, exc_info=exc)
    return ApiError(
        status, code, f"the cache backend failed (error id {eid}); try again later", kind, response
    )


@contextmanager
def map_errors(
    kind: Kind,
    invalid: int,
    failed: int | None = None,
    *,
    invalid_types: tuple[type[Exception], ...] = (),
    what: str | None = None,
    response: Any = None,
    failed_response: Any = None,
) -> Iterator[None]:
    """Answer the engine's exceptions as API errors, one rule for every route (httpcore's
    ``map_exceptions``): a caller's mistake, a backend fault, or anything else unchanged.

    A :class:`ConfigError` (or one of ``invalid_types``) is the caller's mistake: ``invalid``
    with 422 on REST, as FastAPI answers a bad value, and 400 in the ModelCache envelope, as
    ModelCache did; ``what`` prefixes the message. Any other :class:`ModelCacheError` (a store
    down, a closed cache) is :func:`backend_failure` with ``failed``; without ``failed`` it
    propagates (an unexpected 500). ``response`` and ``failed_response`` fill the envelope's
    ``response`` field of each.
    """
    mistakes: tuple[type[Exception], ...] = (ConfigError, *invalid_types)
    try:
        yield
    except mistakes as exc:
        desc = f"{what}: {exc}" if what else str(exc)
        status = 422 if kind == "rest" else 400
        raise ApiError(status, invalid, desc, kind, response) from exc
    except ModelCacheError as exc:
        if failed is None:
            raise
        raise backend_failure(exc, failed, kind, response=failed_response) from exc
