"""Scope, Message, Request and the multi-turn key builder.

A request maps to a *partition* (tenant, env, model, generation parameters, system prompt) that
never shares answers with another, a *context* (earlier turns), the *query* text to embed (the
last user message, normalised) and an *exact key* (hash of partition, context and query).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConfigError

__all__ = [
    "NAME_LIMITS",
    "Message",
    "Partition",
    "Request",
    "Scope",
    "check_name",
    "check_text",
    "conversation_text",
    "normalize_text",
    "stored_conversation_text",
]

_WS = re.compile(r"\s+")
# Entry ids of this scheme; earlier stores' entries (case-folded, whitespace-collapsed keys)
# still answer as semantic hits, and an insert of the same request writes the new id.
_KEY_VERSION = "k2"
_MAX_DEPTH = 64  # answers and metadata nested deeper are refused (JSON readers stop near 255)
# Unicode blocks holding every character whose compatibility form is a superscript or a
# subscript (a test checks the whole code space against this list).
_MARKED_BLOCKS = (
    (0x00AA, 0x00BA),
    (0x02B0, 0x02E4),
    (0x10FC, 0x10FC),
    (0x1D2C, 0x1DBF),
    (0x2070, 0x209C),
    (0x2120, 0x2122),
    (0x2C7C, 0x2C7D),
    (0x2D6F, 0x2D6F),
    (0x3192, 0x319F),
    (0xA69C, 0xA69D),
    (0xA770, 0xA770),
    (0xA7F2, 0xA7F9),
    (0xAB5C, 0xAB69),
    (0x10780, 0x107BA),
    (0x1E030, 0x1E06D),
    (0x1F16A, 0x1F16C),
)
_ROLES = {"system", "user", "assistant", "tool", "function", "developer"}
# What every SQL backend holds: VARCHAR(191) for tenant and model (utf8mb4 index limit on
# MariaDB), VARCHAR(64) for env; longer names are refused here rather than failing in SQL.
NAME_LIMITS = {"tenant": 191, "env": 64, "model": 191}
# Control characters (C0, DEL, C1) and lone surrogates: invisible, unencodable or separators.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def check_name(what: str, value: Any, limit: int = 191) -> str:
    """Validate a scope name (tenant, env, model): non-blank, printable, at most ``limit``.

    Raises :class:`ConfigError` (a ``ValueError``) naming the rule, without echoing the value.
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"scope {what} must be a non-empty string")
    if _FORBIDDEN.search(value):
        raise ConfigError(f"scope {what} must not contain control characters or lone surrogates")
    if len(value) > limit:
        raise ConfigError(f"scope {what} is longer than {limit} characters")
    return value


def check_text(what: str, value: str) -> str:
    """Refuse text that some store cannot hold: lone surrogates (e.g. ``"\\ud800"`` in JSON),
    not UTF-8, and NUL, which PostgreSQL refuses in text."""
    if _SURROGATE.search(value):
        raise ConfigError(f"{what} contains a lone surrogate (not valid Unicode text)")
    if "\x00" in value:
        raise ConfigError(f"{what} contains a NUL character")
    return value


def normalize_text(text: str) -> str:
    """The form of a text that is embedded, compared and hashed: NFKC (superscripts and
    subscripts kept apart, so 2³ is not 23), spaces collapsed within each line, and the common
    indentation and the blank ends removed. Line breaks and indentation stay: in code they
    change the answer."""
    lines: list[str] = []
    for line in _compatible(text).splitlines():
        body = line.strip()
        if not body:
            if lines and lines[-1]:
                lines.append("")  # a run of blank lines counts as one
            continue
        lines.append(line[: len(line) - len(line.lstrip())] + _WS.sub(" ", body))
    while lines and not lines[-1]:
        lines.pop()
    indents = [len(line) - len(line.lstrip()) for line in lines if line]
    common = min(indents, default=0)
    return "\n".join(line[common:] for line in lines)


def _system_form(text: str) -> str:
    """The system prompt's form in the partition id: NFKC with all whitespace collapsed, as
    in every store written so far (a new form would orphan their partitions)."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()


@functools.cache
def _marked_forms() -> dict[int, str]:
    """Superscript and subscript characters and the form that keeps them apart: ``^2`` for
    ², ``_2`` for ₂ (NFKC alone would make x² read x2)."""
    forms: dict[int, str] = {}
    for code in itertools.chain.from_iterable(range(a, b + 1) for a, b in _MARKED_BLOCKS):
        decomposition = unicodedata.decomposition(chr(code))
        for tag, mark in (("<super>", "^"), ("<sub>", "_")):
            if decomposition.startswith(tag):
                forms[code] = mark + unicodedata.normalize("NFKC", chr(code))
    return forms


def _compatible(text: str) -> str:
    """NFKC, with superscripts and subscripts marked first (see ``_marked_forms``)."""
    if not text.isascii():
        text = text.translate(_marked_forms())
    return unicodedata.normalize("NFKC", text)


def _canonical_json(value: Any, what: str) -> str:
    """Canonical JSON of a value to store or hash; refuses what some store or client could not
    read back (NaN or infinite numbers, lone surrogates, nesting over ``_MAX_DEPTH``)."""
    if _depth(value) > _MAX_DEPTH:
        raise ConfigError(f"{what} is nested more than {_MAX_DEPTH} levels deep")
    try:
        encoded = json.dumps(
            value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be JSON-serialisable, with finite numbers: {exc}") from exc
    if _SURROGATE.search(encoded):
        raise ConfigError(f"{what} contains a lone surrogate (not valid Unicode text)")
    return encoded


def _depth(value: Any) -> int:
    """How deeply lists and mappings nest in a value (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[Any] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > _MAX_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


def conversation_text(turns: Iterable[tuple[str, str]]) -> str:
    """Every earlier turn (user and replies), normalised and joined: what the context means.

    Compared by meaning and by the guard, so a reply the model generated afresh in other words
    is the same context, and one that differs in a detail (an amount, a plan, a day) is not.
    """
    return "\n".join(normalize_text(content) for _, content in turns if content and content.strip())


def stored_conversation_text(history_json: str) -> str:
    """:func:`conversation_text` of a stored history (``[[role, content(, digest)], ...]`` JSON).

    Raises ``ValueError`` for a corrupt value.
    """
    try:
        turns = json.loads(history_json) if history_json else []
        return conversation_text((str(t[0]), str(t[1] or "")) for t in turns)
    except (TypeError, IndexError, KeyError) as exc:
        raise ValueError(f"corrupt history: {exc}") from exc


def _split_content(content: Any) -> tuple[str, str]:
    """Text of a message content, and a digest of its non-text parts ('' when none).

    Images, audio and files never enter the embedding, but two requests that differ in them
    must not share an answer, so their canonical JSON is hashed into the key.
    """
    if content is None:
        return "", ""
    if isinstance(content, str):
        return content, ""
    if isinstance(content, Sequence):
        texts, others = [], []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and (
                part.get("type") == "text" or ("type" not in part and set(part) == {"text"})
            ):  # a part without a type is text only when it holds nothing else (an image's
                # data in an untyped part must still change the key)
                texts.append(str(part.get("text", "")))
            else:
                others.append(check_text("a message part", _canonical_json(part, "a message part")))
        return "\n".join(texts), _digest(*others) if others else ""
    raise ConfigError(f"message content must be text or a list of parts, not {type(content)!r}")


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: str
    content: str
    attachments: str = ""  # digest of non-text parts (images, audio, files); "" when none

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ConfigError(
                f"unknown message role {self.role!r}; expected one of {sorted(_ROLES)}"
            )
        if not isinstance(self.content, str):
            raise ConfigError("message content must be a string")
        check_text("message content", self.content)

    @classmethod
    def from_any(cls, message: Message | Mapping[str, Any]) -> Message:
        """Accept a Message or an OpenAI-style ``{"role", "content"}`` mapping."""
        if isinstance(message, Message):
            return message
        if not isinstance(message, Mapping) or "role" not in message:
            raise ConfigError(f"a message needs 'role' and 'content', got {type(message).__name__}")
        text, attachments = _split_content(message.get("content"))
        calls = _calls(message)
        if calls:  # what was called: part of the turn's meaning, so also of its text
            text = "\n".join([text, *calls]) if text else "\n".join(calls)
        fields = {"name": message.get("name") or None, "calls": calls or None}
        return cls(
            role=str(message["role"]),
            content=text,
            attachments=_with_fields(attachments, {k: v for k, v in fields.items() if v}),
        )


def _with_fields(attachments: str, fields: Mapping[str, Any]) -> str:
    """A message's digest of non-text parts, joined by the fields that must match exactly
    (who spoke, what was called, which call a result answers): kept out of the text a user
    types, so no typed text can pose as them."""
    if not fields:
        return attachments
    return _digest(attachments, _canonical_json(dict(fields), "message fields"))


def _tool_calls(message: Mapping[str, Any]) -> Sequence[Any]:
    """A message's ``tool_calls`` as a list (one call sent without its list is one call)."""
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, Mapping):
        return [tool_calls]
    if tool_calls is not None and not isinstance(tool_calls, (list, tuple)):
        raise ConfigError("tool_calls must be a list of calls")
    return tool_calls or ()


def _calls(message: Mapping[str, Any]) -> list[str]:
    """A message's tool calls and legacy function call as text (see ``_call_text``)."""
    calls = [_call_text("tool_call", call) for call in _tool_calls(message)]
    if message.get("function_call"):
        calls.append(_call_text("function_call", message["function_call"]))
    return calls


def _call_text(kind: str, call: Any) -> str:
    """A tool or function call as text (its name and canonical arguments, not its id, which
    differs on every generation): ``[tool_call transfer {"amount":10}]``."""
    if not isinstance(call, Mapping):
        return f"[{kind} {_canonical_json(call, 'a tool call')}]"
    if "function" in call:  # OpenAI: {"function": {"name", "arguments"}}
        function = call["function"]
    elif isinstance(call.get("custom"), Mapping):  # OpenAI custom tools: {"name", "input"}
        function = {
            "name": call["custom"].get("name", ""),
            "arguments": call["custom"].get("input"),
        }
    else:  # LangChain style: {"name", "args"}
        function = call
    function = function if isinstance(function, Mapping) else {"name": str(function)}
    arguments = function.get("arguments", function.get("args"))
    if not function.get("name") and arguments is None:  # a shape of its own: all of it but the id
        arguments = {k: v for k, v in call.items() if k != "id"}
    if isinstance(arguments, str):
        try:
            arguments = _canonical_json(json.loads(arguments), "tool call arguments")
        except (ValueError, RecursionError):  # not JSON we keep: the string as it is
            arguments = json.dumps(arguments, ensure_ascii=False)
    else:
        arguments = _canonical_json(arguments, "tool call arguments")
    return f"[{kind} {function.get('name', '')} {arguments}]"


def _answering(messages: Sequence[Mapping[str, Any] | Message]) -> list[int | None]:
    """For each message, which earlier call a tool result answers (its place among the calls
    of the conversation; 0 for an unknown id), found by its ``tool_call_id``: the results of
    two swapped calls then differ, while the random ids themselves never enter a key."""
    calls: dict[str, int] = {}
    answers: list[int | None] = []
    made = 0  # calls so far: an id given again later still numbers its new call apart
    for message in messages:
        answer = None
        if isinstance(message, Mapping):
            for call in _tool_calls(message):
                if isinstance(call, Mapping) and call.get("id") is not None:
                    made += 1
                    calls[str(call["id"])] = made
            ref = message.get("tool_call_id")
            if ref is not None:
                answer = calls.get(str(ref), 0)
        answers.append(answer)
    return answers


@dataclass(frozen=True)
class Scope:
    """Who and what a request is for; every field takes part in the partition."""

    tenant: str = "default"
    env: str = "prod"
    model: str = "default"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, limit in NAME_LIMITS.items():
            check_name(name, getattr(self, name), limit)
        if not isinstance(self.params, Mapping):
            raise ConfigError("scope params must be a mapping of generation parameters")
        check_text("scope params", _canonical_json(dict(self.params), "scope params"))

    @functools.cached_property
    def params_json(self) -> str:
        """Canonical JSON of the generation parameters (sorted keys)."""
        return _canonical_json(dict(self.params), "scope params")

    def __hash__(self) -> int:
        return hash((self.tenant, self.env, self.model, self.params_json))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scope):
            return NotImplemented
        return (self.tenant, self.env, self.model, self.params_json) == (
            other.tenant,
            other.env,
            other.model,
            other.params_json,
        )


@dataclass(frozen=True)
class Partition:
    """The isolation unit: one Chroma collection and one set of SQL rows."""

    id: str
    tenant: str
    env: str
    model: str
    params_json: str
    system_hash: str
    system: str = ""  # the prompt itself, kept so that export/import round-trips

    @classmethod
    def of(cls, scope: Scope, system: str | None) -> Partition:
        """Derive the partition of a scope and system prompt.

        The id hashes the fields, each terminated by NUL. That encoding is unambiguous (no two
        field tuples give the same bytes) because no field can hold a NUL: names refuse control
        characters, params are canonical JSON (which escapes them) and the system hash is hex.
        Keeping this encoding keeps the ids of every store written before names were checked.
        """
        fields = (scope.tenant, scope.env, scope.model, scope.params_json)
        if any("\x00" in f for f in fields):  # a Scope built around its own validation
            raise ConfigError("scope names must not contain NUL characters")
        system_hash = _digest(_system_form(system)) if system else ""
        pid = _digest(*fields, system_hash)
        return cls(
            pid, scope.tenant, scope.env, scope.model, scope.params_json, system_hash, system or ""
        )


@dataclass(frozen=True)
class Request:
    """A cache request: the current user message and everything that scopes or frames it."""

    query: str
    scope: Scope = field(default_factory=Scope)
    system: str | None = None
    history: tuple[Message, ...] = ()
    attachments: str = ""  # digest of the current message's non-text parts

    def __post_init__(self) -> None:
        if not isinstance(self.query, str) or not normalize_text(self.query):
            raise ConfigError("the query (last user message) must be a non-empty string")
        check_text("the query", self.query)
        if self.system is not None and not isinstance(self.system, str):
            raise ConfigError("the system prompt must be a string or None")
        if self.system is not None:
            check_text("the system prompt", self.system)
        object.__setattr__(self, "history", tuple(Message.from_any(m) for m in self.history))
        if any(m.role == "system" for m in self.history):
            raise ConfigError("system messages belong in Request.system, not in the history")

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def from_text(
        cls,
        text: str,
        *,
        tenant: str = "default",
        env: str = "prod",
        model: str = "default",
        params: Mapping[str, Any] | None = None,
        system: str | None = None,
    ) -> Request:
        """A single-turn request from a plain prompt string."""
        scope = Scope(tenant=tenant, env=env, model=model, params=dict(params or {}))
        return cls(query=text, scope=scope, system=system)

    @classmethod
    def from_messages(
        cls,
        messages: Iterable[Message | Mapping[str, Any]],
        *,
        tenant: str = "default",
        env: str = "prod",
        model: str = "default",
        params: Mapping[str, Any] | None = None,
    ) -> Request:
        """A request from an OpenAI-style message list.

        System messages form the system prompt; the last user message is the query; every turn
        between them is the history. Trailing assistant turns after the last user message are
        not part of the question and are rejected.
        """
        given = list(messages)
        msgs = [
            m
            if answer is None
            else replace(m, attachments=_with_fields(m.attachments, {"answers": answer}))
            for m, answer in zip(map(Message.from_any, given), _answering(given), strict=True)
        ]
        # a system message's name or attachments change what the model is told
        system_parts = [
            f"{m.content}\n[message fields {m.attachments}]" if m.attachments else m.content
            for m in msgs
            if m.role in ("system", "developer")
        ]
        turns = [m for m in msgs if m.role not in ("system", "developer")]
        if not turns or turns[-1].role != "user":
            raise ConfigError("a message list must end with a user message")
        scope = Scope(tenant=tenant, env=env, model=model, params=dict(params or {}))
        return cls(
            query=turns[-1].content,
            scope=scope,
            system="\n".join(system_parts) if system_parts else None,
            history=tuple(turns[:-1]),
            attachments=turns[-1].attachments,
        )

    # ---- the key builder ----------------------------------------------------------------
    @functools.cached_property
    def partition(self) -> Partition:
        """Partition of this request (scope and system prompt)."""
        return Partition.of(self.scope, self.system)

    @functools.cached_property
    def query_text(self) -> str:
        """The text that is embedded: the last user message, normalised."""
        return normalize_text(self.query)

    @functools.cached_property
    def context_text(self) -> str:
        """The earlier user turns, normalised and joined; empty for a standalone question."""
        return "\n".join(
            normalize_text(m.content) for m in self.history if m.role == "user" and m.content
        )

    @functools.cached_property
    def conversation_text(self) -> str:
        """Every earlier turn (user and replies), normalised; compared by meaning on lookup."""
        return conversation_text((m.role, m.content) for m in self.history)

    @functools.cached_property
    def attachment_digest(self) -> str:
        """Digest of every non-text part in the conversation; a hit must match it exactly."""
        parts = [m.attachments for m in self.history] + [self.attachments]
        return _digest(*parts) if any(parts) else ""

    @functools.cached_property
    def exact_key(self) -> str:
        """Deterministic entry id: hash of partition, full history, query and attachments.

        Case, line breaks and indentation count (``What is CO?`` is not ``What is Co?``; code
        indented otherwise is other code); the parts are JSON-encoded, so no text can forge
        another part (a NUL in a query is only a character).
        """
        history = [
            [m.role, normalize_text(m.content), *([m.attachments] if m.attachments else [])]
            for m in self.history
        ]
        key = [_KEY_VERSION, self.partition.id, history, self.query_text, self.attachment_digest]
        encoded = json.dumps(key, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:32]

    def __hash__(self) -> int:
        return hash(self.exact_key)
