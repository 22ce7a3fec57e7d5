"""Partition and request building: a LlamaIndex call becomes a ``modelcache.Request``.

The partition holds the wrapped model's class, model name and settings (credentials dropped,
prompt formats kept), the call kwargs (tool schemas included) and the call kind; the embedded
text is the last user message, with the system prompt and earlier turns passed to the engine's
key builder.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llama_index.core.base.llms.generic_utils import (
    messages_to_prompt as generic_messages_to_prompt,
)
from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import LLM, default_completion_to_prompt
from llama_index.core.prompts import BasePromptTemplate
from pydantic import BaseModel, SecretBytes, SecretStr

from modelcache import Message, Request, Scope
from modelcache.request import normalize_text

Kind = Literal["chat", "complete"]

# Names that hold credentials: exact names and unmistakable endings only, since a broad pattern
# ("key", "token") also catches settings that change the answer (eos_token_id, keywords).
_CREDENTIAL_NAMES = frozenset(
    {
        "api_key",
        "apikey",
        "api_token",
        "api_secret",
        "access_token",
        "auth_token",
        "bearer_token",
        "refresh_token",
        "session_token",
        "token",
        "hf_token",
        "secret",
        "secret_key",
        "client_secret",
        "password",
        "passwd",
        "credential",
        "credentials",
        "private_key",
        "pat",
        "auth",
        "authorization",
        "proxy_authorization",
        "cookie",
        "cookies",
        "headers",
        "default_headers",
        "extra_headers",
        "additional_headers",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "azure_ad_token",
        "azure_ad_token_provider",
    }
)
_CREDENTIAL_ENDINGS = (
    "_api_key",
    "_apikey",
    "_api_token",
    "_access_token",
    "_subscription_key",
    "_secret",
    "_password",
)
# Fields LlamaIndex excludes from serialisation that still shape what a local model is sent.
_PROMPT_SHAPING = frozenset(
    {"system_prompt", "messages_to_prompt", "completion_to_prompt", "query_wrapper_prompt"}
)
_LIBRARY_DEFAULTS = (generic_messages_to_prompt, default_completion_to_prompt)
# Transport settings: they change how the model is reached, never what it answers.
_TRANSPORT = frozenset(
    {
        "callback_manager",
        "rate_limiter",
        "timeout",
        "request_timeout",
        "max_retries",
        "reuse_client",
        "http_client",
        "async_http_client",
    }
)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_TEXT_ONLY = (TextBlock, ToolCallBlock, ThinkingBlock, CachePoint)
_ASSISTANT_ALIASES = {"chatbot": "assistant", "model": "assistant"}
_DROP = object()
_FUNCTIONS = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)


@dataclass(frozen=True)
class Plan:
    """How one call uses the cache: the request, and whether only exact repeats may answer."""

    request: Request
    exact_only: bool = False


def _is_credential(name: str) -> bool:
    """True for a setting or argument name that holds a credential (api_key, password, headers)."""
    lowered = name.lower().replace("-", "_")
    return lowered in _CREDENTIAL_NAMES or lowered.endswith(_CREDENTIAL_ENDINGS)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def to_json(value: Any, *, scrub: bool) -> Any:
    """A JSON value for a setting, call argument or tool call; ``SecretStr`` values are dropped.

    Tools become their OpenAI schema, pydantic models their dump, functions a digest of their
    code, unknown objects their repr without memory addresses (so two equal configurations give
    the same key). With ``scrub``, a string under a credential name becomes its digest: nothing
    nested is dropped, so two values that differ anywhere keep different keys.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, SecretStr | SecretBytes):
        return _DROP
    if isinstance(value, enum.Enum):
        return to_json(value.value, scrub=scrub)
    if isinstance(value, bytes | bytearray):
        return _sha256(bytes(value))
    if isinstance(value, Mapping):
        out = {str(k): _entry_json(str(k), v, scrub) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _DROP}
    if isinstance(value, list | tuple):
        return [v for v in (to_json(v, scrub=scrub) for v in value) if v is not _DROP]
    if isinstance(value, set | frozenset):
        members = [to_json(v, scrub=scrub) for v in value]
        return sorted((v for v in members if v is not _DROP), key=json.dumps)
    if isinstance(value, _FUNCTIONS):
        return _callable_digest(value)
    to_openai_tool = getattr(getattr(value, "metadata", None), "to_openai_tool", None)
    if to_openai_tool is not None:  # a llama_index BaseTool
        return to_openai_tool(skip_length_check=True)
    if isinstance(value, BasePromptTemplate):  # field by field, so its functions get digests
        fields = type(value).model_fields.items()
        dumped = {k: getattr(value, k) for k, info in fields if not info.exclude}
        return to_json(dumped, scrub=scrub)
    if isinstance(value, BaseModel):
        return to_json(value.model_dump(mode="json"), scrub=scrub)
    if isinstance(value, type) and issubclass(value, BaseModel):
        return {"schema": value.model_json_schema()}
    return _ADDRESS.sub("", repr(value))


def _entry_json(name: str, value: Any, scrub: bool) -> Any:
    if scrub and isinstance(value, str) and _is_credential(name):
        return _sha256(value.encode())  # kept apart from other values, but never in plain text
    return to_json(value, scrub=scrub)


def _callable_digest(fn: Any) -> str:
    """Names a function by its code, constants and captured values: the same function gives the
    same key in every process, two functions that format differently give different keys."""
    name = f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', None)}"
    shape = json.dumps(_callable_shape(fn, set()), sort_keys=True)
    return f"callable:{name}:{_sha256(shape.encode())}"


def _callable_shape(fn: Any, seen: set[int]) -> Any:
    if id(fn) in seen:  # a recursive function, or two closures capturing each other
        return "recursive"
    seen.add(id(fn))
    if isinstance(fn, functools.partial):
        args = to_json([fn.args, fn.keywords], scrub=True)
        return ["partial", _callable_shape(fn.func, seen), args]
    if isinstance(fn, types.MethodType):  # a model's own method: its settings are keyed apart
        owner = fn.__self__
        bound = type(owner).__qualname__ if isinstance(owner, LLM) else _value_shape(owner, seen)
        return ["method", bound, _callable_shape(fn.__func__, seen)]
    name = f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', None)}"
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):  # a builtin: its name is all there is
        return [name]
    captured = []
    for cell in fn.__closure__ or ():
        try:
            captured.append(_value_shape(cell.cell_contents, seen))
        except ValueError:  # a cell not yet filled
            captured.append(None)
    scope = fn.__globals__
    read = {n: _value_shape(scope[n], seen) for n in sorted(_read_names(code)) if n in scope}
    defaults = to_json([fn.__defaults__, fn.__kwdefaults__], scrub=True)
    return [name, _code_shape(code), defaults, captured, read]


def _value_shape(value: Any, seen: set[int]) -> Any:
    """A value a function captures or reads from its module: functions by their code, modules
    and classes by name, containers item by item, anything else as a setting would be."""
    if isinstance(value, _FUNCTIONS):
        return _callable_shape(value, seen)
    if isinstance(value, types.ModuleType | type):
        return getattr(value, "__qualname__", None) or value.__name__
    if not isinstance(value, Mapping | list | tuple | set | frozenset):
        return to_json(value, scrub=False)
    if id(value) in seen:
        return "recursive"
    seen.add(id(value))
    if isinstance(value, Mapping):
        return [[str(k), _value_shape(v, seen)] for k, v in value.items()]
    items = [_value_shape(v, seen) for v in value]
    return sorted(items, key=json.dumps) if isinstance(value, set | frozenset) else items


def _code_shape(code: types.CodeType) -> list[Any]:
    consts = [
        _code_shape(c) if isinstance(c, types.CodeType) else to_json(c, scrub=False)
        for c in code.co_consts
    ]
    return [code.co_code.hex(), consts, list(code.co_names)]


def _read_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _read_names(const)
    return names


def _setting_json(name: str, value: Any) -> Any:
    """JSON for one setting or call argument, or _DROP for a credential (also one level into a
    ``*_kwargs`` dict, whose keys are arguments of the provider's call)."""
    if _is_credential(name):
        return _DROP
    if name.endswith("kwargs") and isinstance(value, Mapping):
        value = {k: v for k, v in value.items() if not _is_credential(str(k))}
    return to_json(value, scrub=True)


def llm_settings(llm: LLM) -> dict[str, Any]:
    """The wrapped model's settings that shape its answer: no credentials, transport or state.

    Fields LlamaIndex excludes from serialisation are state, except the prompt formatting a local
    model applies (``messages_to_prompt``, ``completion_to_prompt``, ``query_wrapper_prompt``);
    those enter the partition unless they are LlamaIndex's defaults.
    """
    settings: dict[str, Any] = {}
    for name, info in type(llm).model_fields.items():
        if name in _TRANSPORT:
            continue
        value = getattr(llm, name, None)
        if info.exclude and (
            name not in _PROMPT_SHAPING
            or value is None
            or any(value is default for default in _LIBRARY_DEFAULTS)
        ):
            continue
        try:
            value = _setting_json(name, value)
        except Exception:  # an exotic field must not stop the call
            continue
        if value is not _DROP:
            settings[name] = value
    return settings


def model_label(llm: LLM) -> str:
    """Scope model: the wrapped class name plus its model name (``OpenAI:gpt-4o-mini``)."""
    try:
        name = llm.metadata.model_name
    except Exception:
        name = "unknown"
    return f"{type(llm).__name__}:{name}"


def _params(llm: LLM, kind: Kind, kwargs: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    call = {k: _setting_json(str(k), v) for k, v in kwargs.items()}
    call = {k: v for k, v in call.items() if v is not _DROP}
    return {**llm_settings(llm), **call, **extra, "kind": kind}


def _message_text(message: ChatMessage, call_ids: dict[str, int]) -> str | None:
    """Text of a message with its tool calls rendered; None when it holds media (not cached).

    Tool call ids become their order of appearance (``#1``), so a conversation keys the same
    whatever ids the provider drew, while which result answers which call still counts (calls
    in the older ``additional_kwargs["tool_calls"]`` form keep their raw ids in the text).
    """
    parts: list[str] = []
    has_tool_block = False
    for block in message.blocks:
        if not isinstance(block, _TEXT_ONLY):
            return None
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, ToolCallBlock):
            has_tool_block = True
            args = json.dumps(to_json(block.tool_kwargs, scrub=False), sort_keys=True)
            number = f" #{_call_number(call_ids, block.tool_call_id)}" if block.tool_call_id else ""
            parts.append(f"[tool_call{number} {block.tool_name} {args}]")
    legacy_calls = message.additional_kwargs.get("tool_calls")
    if legacy_calls and not has_tool_block:
        for call in legacy_calls:
            call_id = call.get("id") if isinstance(call, Mapping) else getattr(call, "id", None)
            if call_id:
                _call_number(call_ids, call_id)
        rendered = json.dumps(to_json(legacy_calls, scrub=False), sort_keys=True)
        parts.append(f"[tool_calls {rendered}]")
    return "\n".join(parts)


def _header(message: ChatMessage, call_ids: dict[str, int]) -> list[str]:
    """The tool call a result answers, which the provider sends too."""
    call_id = message.additional_kwargs.get("tool_call_id")
    return [f"[result of tool_call #{_call_number(call_ids, call_id)}]"] if call_id else []


def _name_digest(message: ChatMessage) -> str:
    """Digest of a message's participant name, '' when it has none: the engine's per-message
    attachments field, exact in the key and never embedded, so the name stays out of the text
    and the partition (one partition per end user would soon fill the tenant's cap)."""
    name = message.additional_kwargs.get("name")
    if not name:
        return ""
    return hashlib.sha256(json.dumps({"name": str(name)}, ensure_ascii=False).encode()).hexdigest()


def _call_number(call_ids: dict[str, int], call_id: Any) -> int:
    return call_ids.setdefault(str(call_id), len(call_ids) + 1)


def _role(message: ChatMessage) -> str:
    role = getattr(message.role, "value", message.role)
    return _ASSISTANT_ALIASES.get(str(role), str(role))


def chat_plan(
    llm: LLM, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any], scope: Scope
) -> Plan | None:
    """Plan for a chat call, or None when it cannot be cached (no user text, media blocks).

    Turns after the last user message (tool calls and their results in an agent loop) make the
    answer depend on those outputs: such calls get their own partition and match exactly only.
    Participant names are digests in each turn's attachments field, so a hit needs the same ones.
    """
    system: list[str] = []
    turns: list[Message] = []
    last_user_text = ""
    call_ids: dict[str, int] = {}
    for message in messages:
        text = _message_text(message, call_ids)
        if text is None:
            return None
        role = _role(message)
        name = _name_digest(message)
        if role == "user":
            last_user_text = text
        text = "\n".join([*_header(message, call_ids), text])
        if role in ("system", "developer"):  # the system prompt is the partition: a digest only
            system.append(f"{text}\n[message fields {name}]" if name else text)
        else:
            turns.append(Message(role, text, attachments=name))
    users = [i for i, m in enumerate(turns) if m.role == "user"]
    if not users or not normalize_text(last_user_text):
        return None
    last = users[-1]
    follow_up = last < len(turns) - 1
    extra: dict[str, Any] = {"after_query": True} if follow_up else {}
    params = _params(llm, "chat", kwargs, **extra)
    request = Request(
        query=turns[last].content,
        scope=Scope(scope.tenant, scope.env, model_label(llm), params),
        system="\n".join(system) if system else None,
        history=tuple(turns if follow_up else turns[:last]),
        attachments=turns[last].attachments,
    )
    return Plan(request, exact_only=follow_up)


def complete_plan(
    llm: LLM, prompt: str, formatted: bool, kwargs: Mapping[str, Any], scope: Scope
) -> Plan | None:
    """Plan for a completion call, or None for an empty prompt."""
    if not isinstance(prompt, str) or not normalize_text(prompt):
        return None
    params = _params(llm, "complete", kwargs, formatted=bool(formatted))
    model = model_label(llm)
    return Plan(Request(query=prompt, scope=Scope(scope.tenant, scope.env, model, params)))
