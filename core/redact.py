"""Keep secrets and user content out of logs and error messages.

Database URLs carry passwords; driver exceptions carry SQL text and bound parameters (user
queries, system prompts). Above DEBUG, logs name URLs masked and exceptions by type only.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["describe_error", "log_failure", "mask_url"]

_SECRET_PARAMS = re.compile(r"pass|pwd|secret|token|key|auth", re.IGNORECASE)
_MASK = "***"


def mask_url(url: str | None) -> str:
    """The URL with its password (and secret-looking query parameters) replaced by ``***``."""
    if not url:
        return ""
    try:
        parts = urlsplit(str(url))
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, host = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            netloc = f"{user}{':' + _MASK if sep else ''}@{host}"
        query = parts.query
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAMS.search(k) for k, _ in pairs):
            query = urlencode([(k, _MASK if _SECRET_PARAMS.search(k) else v) for k, v in pairs])
        if netloc == parts.netloc and query == parts.query:
            return str(url)  # nothing secret: keep it byte for byte (sqlite:////abs/path)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparseable url>"


def describe_error(exc: BaseException) -> str:
    """Exception types down the cause chain and driver error codes, without any message.

    Messages may quote SQL parameters (user queries, system prompts), so they are left out.
    """
    names: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(names) < 4:
        names.append(type(current).__name__)
        args = getattr(current, "args", ())
        if args and isinstance(args[0], int):  # MySQL error numbers, e.g. 1213 deadlock
            names.append(str(args[0]))
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str):  # PostgreSQL SQLSTATE, e.g. 40P01 deadlock
            names.append(sqlstate)
        nxt = current.__cause__ or getattr(current, "orig", None)
        current = nxt if isinstance(nxt, BaseException) and nxt is not current else None
    return "/".join(names)


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log a handled failure: its type at WARNING, the full message and trace at DEBUG."""
    logger.warning("%s: %s", what, describe_error(exc))
    logger.debug("%s: details", what, exc_info=exc)
