"""Pure conversions between LangChain's cache arguments and the engine's Request / answer JSON.

LangChain hands a cache ``(prompt, llm_string)``: for chat models ``prompt`` is
``langchain_core.load.dumps`` of the message list, for plain LLMs the prompt text; ``llm_string``
is an opaque description of the model and its call parameters. Nothing here does I/O.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core._api.beta_decorator import LangChainBetaWarning
from langchain_core.load import dumps, load
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)
from langchain_core.outputs import ChatGeneration, Generation

from modelcache import Message

__all__ = [
    "HIT_MARKERS",
    "ParsedPrompt",
    "dump_generations",
    "llm_string_digest",
    "load_generations",
    "mark_hit",
    "model_name",
    "parse_prompt",
]

# Data-only message classes: what ``allowed_objects="messages"`` admits, plus the legacy
# ChatMessage / FunctionMessage that chat prompts may still carry. Nothing else is revived.
_MESSAGE_CLASSES: tuple[type[BaseMessage], ...] = (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)
_CLASS_ROLES: tuple[tuple[type[BaseMessage], str], ...] = (
    (HumanMessage, "user"),
    (AIMessage, "assistant"),
    (SystemMessage, "system"),
    (ToolMessage, "tool"),
    (FunctionMessage, "function"),
)
_CHAT_ROLES = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "function",
}
_MODEL_KEYS = ("model", "model_name", "model_id", "deployment_name", "azure_deployment", "repo_id")
# `"model": "gpt-4o"` in serialisable models' JSON, `('model', 'gpt-4o')` in the repr of others.
_MODEL_RE = re.compile(
    r"""["'](?P<key>"""
    + "|".join(_MODEL_KEYS)
    + r""")["']\s*[:,]\s*["'](?P<value>[^"']{1,200})["']"""
)
VALUE_FORMAT = "langchain-generations/1"
# Keys a hit adds to generation_info (and a chat message's response_metadata); never stored.
HIT_MARKERS = ("cache_hit", "cache_kind", "cache_similarity", "cache_entry_id")


@functools.cache
def _has_allowlist() -> bool:
    """Whether the installed ``load`` takes ``allowed_objects`` (older langchain-core does not)."""
    return "allowed_objects" in inspect.signature(load).parameters


def _revive(obj: Any, allowed: list[type[BaseMessage]] | str) -> Any:
    """``langchain_core.load.load`` restricted to ``allowed`` classes where supported.

    ``load`` is marked beta and warns on every call; the adapter's use is fixed and tested, so
    the warning would only be noise in a user's logs.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=LangChainBetaWarning)
        if _has_allowlist():
            return load(obj, allowed_objects=allowed)
        return load(obj)  # pragma: no cover - older langchain-core without the allowlist


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt split into what the engine keys on.

    ``exact_only`` marks prompts a paraphrase must never answer: a conversation that ends on a
    tool result or an assistant turn, or user content with images, audio or files. ``chat`` is
    True for a chat model's message list, False for an LLM's prompt text. ``attachments`` is
    the digest of the last message's answer-changing fields that are not text ('' when none).
    """

    query: str
    system: str | None = None
    history: tuple[Message, ...] = ()
    exact_only: bool = False
    chat: bool = False
    attachments: str = ""


def _short_hash(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]


# Content blocks that never enter the key: the model's own hidden reasoning, encrypted or signed
# afresh on every generation, so a repeat after such a reply would never hit.
_REASONING_BLOCKS = frozenset({"reasoning", "thinking", "redacted_thinking"})
# Content blocks that make a tool call; one the message's ``tool_calls`` also holds adds nothing.
_CALL_BLOCKS = frozenset({"tool_use", "tool_call", "function_call"})
# Fields of a content block naming the call it answers; keyed by that call's position instead.
_ANSWER_FIELDS = ("tool_use_id", "call_id")


def _unkeyed_block(block: dict[str, Any], call_ids: frozenset[str]) -> bool:
    """Whether a content block stays out of the key: reasoning, or a call ``call_ids`` holds."""
    if block.get("type") in _REASONING_BLOCKS:
        return True
    ids = {str(block[k]) for k in ("id", "call_id") if block.get(k) is not None}
    return block.get("type") in _CALL_BLOCKS and bool(ids & call_ids)


def _content_text(content: str | list[Any], call_ids: frozenset[str]) -> tuple[str, list[Any]]:
    """Text of a message content and its non-text blocks (keyed as message fields, see
    ``_Turns``); reasoning blocks and call blocks duplicating ``call_ids`` are left out."""
    if isinstance(content, str):
        return content, []
    parts: list[str] = []
    blocks: list[Any] = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text" and "text" in part:
            parts.append(str(part["text"]))
        elif isinstance(part, dict) and _unkeyed_block(part, call_ids):
            continue
        else:
            blocks.append(part)
            kind = part.get("type", "part") if isinstance(part, dict) else type(part).__name__
            parts.append(f"[{kind}]")  # the block itself is keyed in the message's fields
    return "\n".join(parts), blocks


def _role(message: BaseMessage) -> str:
    """Engine role of a message (chunks subclass their message class); a role the engine does
    not know is a user turn, told apart by its role field (see ``_Turns``)."""
    if isinstance(message, ChatMessage):
        return _CHAT_ROLES.get(message.role.lower(), "user")
    for cls, role in _CLASS_ROLES:
        if isinstance(message, cls):
            return role
    return _CHAT_ROLES.get(message.type.lower(), "user")


def _canonical_args(args: Any) -> str:
    """Call arguments as canonical JSON; a legacy ``function_call``'s JSON string is parsed first
    so that key order and spacing do not matter (a string that is not JSON stays a string)."""
    if isinstance(args, str):
        with contextlib.suppress(ValueError):
            args = json.loads(args)
    return json.dumps(args, sort_keys=True, ensure_ascii=False, default=repr)


def _call_ids(message: BaseMessage) -> frozenset[str]:
    """Ids of an AI turn's tool calls (none for other messages)."""
    if not isinstance(message, AIMessage):
        return frozenset()
    return frozenset(str(c["id"]) for c in message.tool_calls if c.get("id") is not None)


def _message_text(message: BaseMessage) -> tuple[str, list[Any]]:
    """Text of one message and its non-text blocks; an AI turn's tool calls, and a legacy
    ``function_call``, are part of the text (name and arguments)."""
    text, blocks = _content_text(message.content, _call_ids(message))
    if isinstance(message, AIMessage):
        calls = [
            f"[tool_call {c['name']} {_canonical_args(c['args'])}]" for c in message.tool_calls
        ]
        function_call = message.additional_kwargs.get("function_call")
        if isinstance(function_call, dict):
            name, args = function_call.get("name"), function_call.get("arguments")
            calls.append(f"[function_call {name} {_canonical_args(args)}]")
        text = "\n".join([text, *calls]) if text and calls else text or "\n".join(calls)
    return text, blocks


def _calls(message: AIMessage) -> list[list[Any]]:
    """An AI turn's calls as exact fields: tool calls, a legacy function call and invalid tool
    calls, each by name and canonical arguments (their ids are random)."""
    calls: list[list[Any]] = [
        ["tool_call", c["name"], _canonical_args(c["args"])] for c in message.tool_calls
    ]
    function_call = message.additional_kwargs.get("function_call")
    if isinstance(function_call, dict):
        name, args = function_call.get("name"), function_call.get("arguments")
        calls.append(["function_call", name, _canonical_args(args)])
    calls.extend(
        ["invalid_tool_call", c.get("name"), _canonical_args(c.get("args"))]
        for c in message.invalid_tool_calls
    )
    return calls


class _Turns:
    """Reads the fields of a conversation's messages that change the answer but are not text.

    A message's name, an AI turn's calls, a tool result's call and status, a role the engine
    does not know, non-text content blocks (without their random ids): two conversations that
    differ only in these must never share an answer. They become the engine's per-message
    attachments digest (exact in the key, never embedded, required equal on a semantic hit); a
    message without any gets none, so ordinary keys stay as they were.
    """

    def __init__(self) -> None:
        self._calls: dict[str, tuple[int, str]] = {}  # tool call id -> (ordinal, tool name)
        self._made = 0  # tool calls made so far
        self._latest: list[str] = []  # ids of the latest AI turn that made tool calls
        self._function: str | None = None  # name of the latest legacy function_call

    def fields(self, message: BaseMessage, blocks: Sequence[Any] = ()) -> str:
        """Digest of ``message``'s answer-changing fields and non-text ``blocks``, '' when it
        has none."""
        found: dict[str, Any] = {}
        if isinstance(message, ChatMessage) and message.role.lower() not in _CHAT_ROLES:
            found["role"] = message.role
        if isinstance(message, AIMessage):
            self._read_calls(message)
            calls = _calls(message)
            if calls:
                found["calls"] = calls
        if blocks:
            found["content"] = [self._block_key(block) for block in blocks]
        if isinstance(message, ToolMessage):
            name = self._tool_result(message, found)
        elif isinstance(message, FunctionMessage):
            name = self._function
        else:
            name = None
        if message.name is not None and message.name != name:
            found["name"] = message.name
        if not found:
            return ""
        raw = json.dumps(found, sort_keys=True, ensure_ascii=False, default=repr)
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def _block_key(self, block: Any) -> Any:
        """A content block without its own random id; a reference to a known call becomes that
        call's position, as for a ToolMessage."""
        if not isinstance(block, dict):
            return block
        key = {k: v for k, v in block.items() if k != "id"}
        if block.get("type") in _CALL_BLOCKS:
            key.pop("call_id", None)
        for field in _ANSWER_FIELDS:
            call = self._calls.get(str(key.get(field)))
            if field in key and call is not None:
                del key[field]
                key["answers"] = call[0]
        return key

    def _read_calls(self, message: AIMessage) -> None:
        if message.tool_calls:
            self._latest = [str(c.get("id")) for c in message.tool_calls]
            for call in message.tool_calls:
                self._calls[str(call.get("id"))] = (self._made, call["name"])
                self._made += 1
        function_call = message.additional_kwargs.get("function_call")
        if isinstance(function_call, dict):
            self._function = function_call.get("name")

    def _tool_result(self, message: ToolMessage, found: dict[str, Any]) -> str | None:
        """Adds which call a tool result answers, and a status other than success; returns the
        tool name that call already names (a result's own equal name adds nothing)."""
        if message.status != "success":
            found["status"] = message.status
        call = self._calls.get(message.tool_call_id)
        if call is None:
            found["tool_call_id"] = message.tool_call_id
            return None
        if self._latest != [message.tool_call_id]:
            # one of several calls: which one is the answer-changing fact, its id is random
            found["tool_call"] = call[0]
        return call[1]


# A serialised message's fields that never reach the key: provider bookkeeping (token usage,
# which a hit sets to ``{"total_cost": 0}``, failing validation), a tool's raw output, and
# values that may not be serialisable. Reviving them could only make a prompt uncacheable.
_UNKEYED_FIELDS = ("usage_metadata", "artifact")
# What the message classes' validators read of these dicts (legacy tool and function calls; the
# content format of a v1 chunk); the rest is dropped for the same reason.
_KEYED_EXTRAS = {
    "additional_kwargs": ("function_call", "tool_calls"),
    "response_metadata": ("output_version",),
}


def _keyed(message: Any) -> Any:
    """A serialised message without the fields that never enter the key (see above)."""
    kwargs = message.get("kwargs") if message.get("type") == "constructor" else None
    if not isinstance(kwargs, dict):
        return message
    kept = {key: value for key, value in kwargs.items() if key not in _UNKEYED_FIELDS}
    for name, keys in _KEYED_EXTRAS.items():
        extra = kept.get(name)
        if isinstance(extra, dict):
            kept[name] = {key: extra[key] for key in keys if key in extra}
    return {**message, "kwargs": kept}


def _load_messages(prompt: str) -> list[BaseMessage] | None:
    """The messages of a chat prompt, or None when the prompt is plain LLM text."""
    stripped = prompt.lstrip()
    if not stripped.startswith("["):
        return None
    try:
        raw = json.loads(prompt)
    except ValueError:
        return None
    if not isinstance(raw, list) or not all(isinstance(m, dict) and "lc" in m for m in raw):
        return None
    messages = _revive([_keyed(m) for m in raw], list(_MESSAGE_CLASSES))
    if not all(isinstance(m, BaseMessage) for m in messages):
        raise ValueError("a chat prompt holds something other than messages")
    return messages


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Split a LangChain prompt into system prompt, history and the question; never the JSON.

    Raises ValueError for a chat prompt whose messages cannot be revived, so callers treat it as
    a miss instead of embedding the serialised blob.
    """
    messages = _load_messages(prompt)
    if messages is None:
        return ParsedPrompt(query=prompt)
    system_parts: list[str] = []
    turns: list[tuple[str, str, bool, str]] = []
    fields = _Turns()
    for message in messages:
        role = _role(message)
        text, blocks = _message_text(message)
        other = bool(blocks)
        digest = fields.fields(message, blocks)
        if role == "system":
            # the system prompt is the partition; a named system message is another partition
            system_parts.append(f"{text}\n[message fields {digest}]" if digest else text)
        else:
            turns.append((role, text, other, digest))
    system = "\n".join(system_parts) if system_parts else None
    history = tuple(Message(role, text, attachments=digest) for role, text, _, digest in turns[:-1])
    user_media = any(other for role, _, other, _ in turns if role == "user")
    last = turns[-1][3] if turns else ""
    if turns and turns[-1][0] == "user" and turns[-1][1].strip() and not user_media:
        return ParsedPrompt(turns[-1][1], system, history, chat=True, attachments=last)
    # Exact-only: lead with a digest of the whole conversation so that no two different
    # conversations embed alike (long texts are truncated by the embedder).
    digest = _short_hash([[role, text, *([d] if d else [])] for role, text, _, d in turns])
    last_role, last_text = turns[-1][:2] if turns else ("none", "")
    query = f"[conversation {digest}] [{last_role}] {last_text}".rstrip()
    return ParsedPrompt(query, system, history, exact_only=True, chat=True, attachments=last)


def model_name(llm_string: str) -> str:
    """A readable model name found in ``llm_string`` (call-time values win), else 'unknown'."""
    found: dict[str, str] = {}
    for match in _MODEL_RE.finditer(llm_string):
        found[match["key"]] = match["value"].strip()  # later (call-time) values override
    for key in _MODEL_KEYS:
        if found.get(key):
            return found[key]
    return "unknown"


def llm_string_digest(llm_string: str) -> str:
    """SHA-256 of the opaque ``llm_string``: the partition parameter that isolates configs."""
    return hashlib.sha256(llm_string.encode("utf-8")).hexdigest()


def _not_serialisable(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get("lc") == 1 and node.get("type") == "not_implemented":
            return True
        return any(_not_serialisable(v) for v in node.values())
    if isinstance(node, list):
        return any(_not_serialisable(v) for v in node)
    return False


def _without_markers(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    if not metadata or not any(key in metadata for key in HIT_MARKERS):
        return metadata
    return {key: value for key, value in metadata.items() if key not in HIT_MARKERS}


def _unmarked(generation: Generation) -> Generation:
    """A copy without hit markers, so a stored entry never replays a stale hit's marks."""
    update: dict[str, Any] = {"generation_info": _without_markers(generation.generation_info)}
    if isinstance(generation, ChatGeneration):
        metadata = _without_markers(generation.message.response_metadata)
        update["message"] = generation.message.model_copy(update={"response_metadata": metadata})
    return generation.model_copy(update=update)


def mark_hit(
    generations: list[Generation], kind: str, similarity: float, entry_id: str, *, chat: bool
) -> list[Generation]:
    """Mark freshly revived generations as a cache hit, in ``generation_info`` and, for chat
    generations, ``message.response_metadata`` (LangChain copies neither on a hit).

    For a chat prompt a plain ``Generation`` (a text answer stored by another front end)
    becomes the ``ChatGeneration`` LangChain would make of it, so its message is marked too.
    """
    marks = {
        "cache_hit": True,
        "cache_kind": kind,
        "cache_similarity": round(float(similarity), 4),
        "cache_entry_id": entry_id,
    }
    marked: list[Generation] = []
    for generation in generations:
        info = {**(generation.generation_info or {}), **marks}
        if isinstance(generation, ChatGeneration):
            message = generation.message
            message.response_metadata = {**message.response_metadata, **marks}
            generation.generation_info = info
        elif chat:
            message = AIMessage(content=generation.text, response_metadata=dict(marks))
            generation = ChatGeneration(message=message, generation_info=info)
        else:
            generation.generation_info = info
        marked.append(generation)
    return marked


def dump_generations(generations: Sequence[Generation]) -> dict[str, Any]:
    """The JSON answer stored in the engine: ``dumps`` of the generations (without hit
    markers), plus their text."""
    payload = json.loads(dumps([_unmarked(generation) for generation in generations]))
    if _not_serialisable(payload):
        raise ValueError("a generation holds a value langchain_core.load cannot serialise")
    return {
        "format": VALUE_FORMAT,
        "text": generations[0].text if generations else "",
        "generations": payload,
    }


def load_generations(answer: Any) -> list[Generation]:
    """Revive stored generations (``allowed_objects='core'``); a plain string becomes one."""
    if isinstance(answer, str):
        return [Generation(text=answer)]
    if not isinstance(answer, dict) or answer.get("format") != VALUE_FORMAT:
        raise ValueError(f"not a LangChain generations answer: {str(answer)[:80]!r}")
    generations = _revive(answer["generations"], "core")
    if not isinstance(generations, list) or not all(isinstance(g, Generation) for g in generations):
        raise ValueError("stored answer did not revive to a list of Generation")
    return generations
