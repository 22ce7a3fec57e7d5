"""Q/A records of the files ``modelcache import`` reads (JSONL or CSV) -> requests and answers."""

from __future__ import annotations

import csv
import json
import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

from ..request import Message, Request, _canonical_json
from ._common import UserError

_QUERY_KEYS = ("query", "question", "prompt", "input")
_ANSWER_KEYS = ("answer", "response", "completion", "output")


_DIGEST = re.compile(r"[0-9a-f]{32}")
_TURN_DIGEST = re.compile(r"[0-9a-f]{32}|[0-9a-f]{64}")  # the engine's, or an adapter's SHA-256


@dataclass
class Row:
    """One record of an import file, parsed."""

    request: Request
    answer: Any
    metadata: dict[str, Any] | None
    expires_at: float | None = None  # an exported entry's expiry, kept by the import
    ttl: float | None = None  # the row's own time to live, kept by the import

    def expired(self, now: float) -> bool:
        """Whether the row's expiry has passed by ``now``."""
        return self.expires_at is not None and self.expires_at <= now

    def lifetime(self, default: float | None) -> float | None:
        """The row's ttl: its own, else ``default`` (the cache's); a row with an expiry keeps
        it either way. What remains of an expiry is no ttl: it differs on every run, so a
        second import of the same file rewrote its rows (and their hit counts)."""
        return self.ttl if self.ttl is not None else default


class Expired(Exception):
    """An exported entry whose expiry has passed: skipped, never brought back."""


@dataclass(frozen=True, eq=False)
class _RestoredRequest(Request):
    """A request rebuilt from an export: the attachments (images, files) and message fields
    themselves are not exported, only their digest, which this request carries so that the
    entry keeps its id and serves only requests with the same attachments and fields."""

    stored_attachments: str = ""

    @cached_property
    def attachment_digest(self) -> str:
        """The exported digest of the conversation's attachments."""
        return self.stored_attachments


def read_records(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    """(line number, record) pairs of a JSONL or CSV file (UTF-8, with or without a BOM).

    A file that cannot be read as such ends with a :class:`UserError` naming its line.
    """
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() in (".csv", ".tsv") else "jsonl"
    with path.open("rb") as fh:
        lines = _Lines(path, fh)
        if fmt == "csv":
            dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
            reader = csv.DictReader(lines, dialect=dialect)
            try:
                if not reader.fieldnames:
                    raise UserError(f"{path}: empty CSV file (a header row is needed)")
                for record in reader:
                    yield lines.number, record
            except csv.Error as exc:
                hint = "; JSONL has no such limit" if "field limit" in str(exc) else ""
                raise UserError(
                    f"{path}:{lines.number}: not a valid CSV row: {exc}{hint}"
                ) from None
            return
        for line in lines:
            if not line.strip():
                continue
            try:
                yield lines.number, json.loads(line)
            except ValueError as exc:
                yield lines.number, UserError(f"not valid JSON: {exc}")


class _Lines:
    """The lines of a file as UTF-8 text (a leading BOM dropped), counting them; a line that is
    not UTF-8 is a :class:`UserError` naming it."""

    def __init__(self, path: Path, fh: BinaryIO) -> None:
        self._path = path
        self._fh = fh
        self.number = 0  # of the last line read

    def __iter__(self) -> Iterator[str]:
        for raw in self._fh:
            self.number += 1
            try:
                yield raw.decode("utf-8-sig" if self.number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(
                    f"{self._path}:{self.number}: not UTF-8 text ({exc.reason} at byte "
                    f"{exc.start}); save the file as UTF-8"
                ) from None


def _field(record: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if record.get(key) not in (None, ""):
            return record[key]
    return None


def _maybe_json(value: Any, what: str) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise UserError(f"{what} is not valid JSON: {exc}") from exc
    return value


def _history(value: Any) -> tuple[Message, ...]:
    """History as exported ([[role, content], ...], a turn with attachments or message fields
    adding their digest as a third element) or as [{'role', 'content'}, ...]."""
    value = _maybe_json(value, "history")
    if value in (None, ""):
        return ()
    if not isinstance(value, list):
        raise UserError("history must be a list of messages")
    turns = []
    for item in value:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            turns.append(Message(str(item[0]), str(item[1])))
        elif isinstance(item, (list, tuple)) and len(item) == 3:
            if not isinstance(item[2], str) or not _TURN_DIGEST.fullmatch(item[2]):
                raise UserError(
                    "a history turn's third element must be the digest an export writes"
                )
            turns.append(Message(str(item[0]), str(item[1]), attachments=item[2]))
        else:
            turns.append(Message.from_any(item))
    return tuple(turns)


def _seconds(record: dict[str, Any], key: str) -> float | None:
    """A number of seconds of a record (JSON number, or CSV text); None when absent."""
    value = record.get(key)
    if value in (None, ""):
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{key} must be a number of seconds") from None
    if not math.isfinite(number):
        raise UserError(f"{key} must be a finite number of seconds")
    return number


def _expiry(record: dict[str, Any]) -> tuple[float | None, float | None]:
    """The row's ``expires_at`` (an export's) and its own ``ttl``, each None when absent."""
    expires_at = _seconds(record, "expires_at")
    ttl = _seconds(record, "ttl")
    if ttl is not None and ttl <= 0:
        raise UserError("ttl must be positive seconds")
    return expires_at, ttl


def _with_attachments(request: Request, record: dict[str, Any], *, whole: bool) -> Request:
    """The request with an exported attachment digest, when the record has one.

    The digest covers every turn's attachments and message fields: it must equal the digest
    of the request's own when ``whole`` (built from ``messages``, the current message's own
    included). An export's history holds each earlier turn's own digest, which the entry's id
    also hashes, so after earlier turns the rebuilt id must equal the exported one, or the row
    is refused.
    """
    digest = record.get("attachments")
    if digest in (None, ""):
        return request
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise UserError("attachments must be the 32-character digest an export writes")
    if whole and request.attachment_digest and request.attachment_digest != digest:
        raise UserError("attachments does not match the attachments of the messages")
    restored = _RestoredRequest(
        query=request.query,
        scope=request.scope,
        system=request.system,
        history=request.history,
        stored_attachments=digest,
    )
    if restored.history and restored.exact_key != record.get("id"):
        raise UserError(
            "an entry with attachments or message fields after earlier turns cannot be rebuilt "
            "exactly: its id does not match (an export made before the earlier turns' digests "
            "were stored lacks them); export it again, or remove the row"
        )
    return restored


def parse_row(record: Any, defaults: dict[str, str], *, now: float | None = None) -> Row:
    """One Q/A record -> a request and its answer (``defaults``, the global options' scope,
    fill a missing tenant, env or model).

    An exported entry keeps its attachment digest and its expiry; one that expired by
    ``now`` (default: the current time) raises :class:`Expired`.
    """
    if isinstance(record, Exception):
        raise record
    if not isinstance(record, dict):
        raise UserError("each record must be an object")
    scope = {key: record.get(key) or defaults[key] for key in ("tenant", "env", "model")}
    params = _maybe_json(record.get("params") or {}, "params")
    if not isinstance(params, dict):
        raise UserError("params must be an object")
    answer = _field(record, _ANSWER_KEYS)  # CSV answers stay text, JSONL keeps JSON
    if answer is None:
        raise UserError(f"missing answer (one of: {', '.join(_ANSWER_KEYS)})")
    metadata = _maybe_json(record.get("metadata") or None, "metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise UserError("metadata must be an object")
    _canonical_json(answer, "the answer")  # refused here, with its line, not while writing
    _canonical_json(metadata or {}, "metadata")
    messages = _maybe_json(record.get("messages"), "messages")
    if messages:
        request = Request.from_messages(messages, params=params, **scope)
    else:
        text = _field(record, _QUERY_KEYS)
        if not isinstance(text, str):
            raise UserError(f"missing question (one of: {', '.join(_QUERY_KEYS)}, messages)")
        request = Request(
            query=text,
            scope=Request.from_text(text, params=params, **scope).scope,
            system=record.get("system") or None,
            history=_history(record.get("history")),
        )
    request = _with_attachments(request, record, whole=bool(messages))
    row = Row(request, answer, metadata, *_expiry(record))
    if row.expired(time.time() if now is None else now):
        raise Expired
    return row


def groups(rows: Iterable[Row]) -> list[list[Row]]:
    """The rows by metadata and ttl (one ``insert_many`` each, every row keeping its own
    expiry), in file order.

    A later row of the same entry replaces an earlier one, as inserting them in turn would.
    """
    latest = {row.request.exact_key: row for row in rows}
    by_kind: dict[tuple[str, float | None], list[Row]] = {}
    for row in latest.values():
        meta = _canonical_json(row.metadata or {}, "metadata")
        by_kind.setdefault((meta, row.ttl), []).append(row)
    return list(by_kind.values())
