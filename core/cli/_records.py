"""Q/A records of the files ``modelcache import`` reads (JSONL or CSV) -> requests and answers."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..request import Message, Request
from ._common import UserError

_QUERY_KEYS = ("query", "question", "prompt", "input")
_ANSWER_KEYS = ("answer", "response", "completion", "output")


@dataclass
class Row:
    """One record of an import file, parsed."""

    request: Request
    answer: Any
    metadata: dict[str, Any] | None


def read_records(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    """(line number, record) pairs of a JSONL or CSV file."""
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() in (".csv", ".tsv") else "jsonl"
    with path.open(encoding="utf-8", newline="") as fh:
        if fmt == "csv":
            dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
            reader = csv.DictReader(fh, dialect=dialect)
            if not reader.fieldnames:
                raise UserError(f"{path}: empty CSV file (a header row is needed)")
            for record in reader:
                yield reader.line_num, record
            return
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except ValueError as exc:
                yield number, UserError(f"not valid JSON: {exc}")


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
    """History as exported ([[role, content], ...]) or as [{'role', 'content'}, ...]."""
    value = _maybe_json(value, "history")
    if value in (None, ""):
        return ()
    if not isinstance(value, list):
        raise UserError("history must be a list of messages")
    turns = []
    for item in value:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            turns.append(Message(str(item[0]), str(item[1])))
        else:
            turns.append(Message.from_any(item))
    return tuple(turns)


def parse_row(record: Any, defaults: dict[str, str]) -> Row:
    """One Q/A record -> a request and its answer (``defaults``, the global options' scope,
    fill a missing tenant, env or model)."""
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
    return Row(request, answer, metadata)


def groups(rows: list[Row]) -> Iterator[list[Row]]:
    """Runs of consecutive rows with equal metadata (one ``insert_many`` each)."""
    group: list[Row] = []
    for row in rows:
        if group and row.metadata != group[0].metadata:
            yield group
            group = []
        group.append(row)
    if group:
        yield group
