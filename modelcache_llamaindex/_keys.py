"""Partition and request building: a LlamaIndex call becomes a ``modelcache.Request``.

The partition holds the wrapped model's class, model name and settings (credentials dropped,
prompt formats kept), the call kwargs (tool schemas included) and the call kind; the embedded
text is the last user message, with the system prompt and earlier turns passed to the engine's
key builder.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import functools
import hashlib
import json
import logging
import marshal
import operator
import re
import sys
import threading
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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

log = logging.getLogger("modelcache.llamaindex")

# Names that hold credentials: these exact names, any name with a word below (X-Auth-Token has
# "auth", client_secret "secret"), and names ending in "key" or "token" after a word that marks
# a credential (x-functions-key, Private-Token, access-key). A broad pattern ("key", "token")
# would also catch settings that change the answer (eos_token, keywords, key_points).
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
_CREDENTIAL_WORDS = frozenset(
    {
        "auth",
        "authorization",
        "apikey",
        "password",
        "passwd",
        "secret",
        "secrets",
        "credential",
        "credentials",
        "cookie",
        "cookies",
        "headers",
    }
)
_CREDENTIAL_QUALIFIERS = frozenset(
    {
        "access",
        "account",
        "ad",
        "api",
        "app",
        "bearer",
        "client",
        "functions",
        "github",
        "gitlab",
        "hf",
        "id",
        "license",
        "master",
        "oauth",
        "personal",
        "private",
        "refresh",
        "sas",
        "service",
        "session",
        "signing",
        "subscription",
    }
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+")
# Keys of a JSON schema map whose entries are field names (a schema may have a `password` field).
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
# A setting that is one URL and nothing else; a prompt that starts with a URL stays as it is.
_URL = re.compile(r"[A-Za-z][\w+.-]*://\S+")
# Query parameters of a URL that select what answers, never a secret: kept as they are.
_PLAIN_QUERY = frozenset({"api-version", "api_version", "version", "model", "deployment"})
_MASK = "***"
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
# A memory address in any form (` at 0x7f…`, jinja's `memory:7f…`): such a repr differs per run.
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}|memory:[0-9a-fA-F]{6,}|\bat [0-9a-fA-F]{8,}\b")
_MAX_REPR = 2_000
_MAX_NODES = 10_000
# Plain data (lists, tuples, dicts of strings and numbers) is digested in one pass up to this size.
_MAX_PLAIN_BYTES = 4_000_000
# Call kwargs and ``additional_kwargs`` entries that only label a request for the provider
# (end-user ids, stored-completion tags, cache buckets): they never change the answer.
_TRACKING = frozenset(
    {"user", "user_id", "safety_identifier", "prompt_cache_key", "metadata", "store"}
)
# What a library module or class offers that reads the environment or the process (the clock,
# random state, the working directory): a prompt format using it has no stable key. None: all.
_PROCESS_STATE: dict[str, frozenset[str] | None] = {
    "os": frozenset(
        {
            "environ",
            "environb",
            "getenv",
            "getenvb",
            "putenv",
            "getcwd",
            "getcwdb",
            "getpid",
            "getppid",
            "getlogin",
            "getuid",
            "urandom",
            "listdir",
            "scandir",
            "uname",
            "cpu_count",
        }
    ),
    "time": None,
    "random": None,
    "_random": None,
    "secrets": None,
    "getpass": None,
    "locale": None,
    "platform": None,
    "uuid": frozenset({"uuid1", "uuid4", "getnode"}),
    "datetime": frozenset({"now", "today", "utcnow"}),
    "socket": frozenset({"gethostname", "getfqdn"}),
    "pathlib": frozenset({"cwd", "home"}),
}
_PROCESS_STATE["posix"] = _PROCESS_STATE["nt"] = _PROCESS_STATE["os"]
_TEXT_ONLY = (TextBlock, ToolCallBlock, ThinkingBlock, CachePoint)
_ASSISTANT_ALIASES = {"chatbot": "assistant", "model": "assistant"}
_DROP = object()
_C_FUNCTIONS = (types.BuiltinFunctionType, types.MethodWrapperType)
_C_DESCRIPTORS = (
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.ClassMethodDescriptorType,
)
_REDUCIBLE = (operator.itemgetter, operator.attrgetter, operator.methodcaller)
# Values whose state never changes what a function returns, only how it logs or waits.
_NO_OUTPUT_STATE = (
    logging.Logger,
    logging.LoggerAdapter,
    type(threading.Lock()),
    type(threading.RLock()),
)
# Library attributes keyed by name: functions, classes, modules and their descriptors.
_API = (types.ModuleType, type, property, staticmethod, classmethod, *_C_DESCRIPTORS)
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set on classes defined in Python
_warned: set[str] = set()
# Callables found to have no stable key, by id (the object is kept so the id stays its own):
# a format over the walk limit is given up at once on later calls.
_VERDICTS: dict[int, tuple[Any, _Unkeyable]] = {}
_MAX_VERDICTS = 256


@dataclass(frozen=True)
class Plan:
    """How one call uses the cache: the request, and whether only exact repeats may answer."""

    request: Request
    exact_only: bool = False


class _Unkeyable(Exception):
    """A value no stable key can be derived from (a C callable, an object too large to walk):
    the call that depends on it is not cached."""


def _not_cached(reason: _Unkeyable) -> None:
    """Says once per reason that calls depending on it go to the model uncached."""
    if str(reason) not in _warned:
        _warned.add(str(reason))
        log.warning("calls with %s are not cached: no stable key can be derived from it", reason)


def _is_credential(name: str) -> bool:
    """True for a setting, argument or header name that holds a credential (api_key, password,
    headers, X-Auth-Token, access-key)."""
    if name.lower().replace("-", "_") in _CREDENTIAL_NAMES:
        return True
    words = [w.lower() for w in _WORD.findall(name)]
    if any(w in _CREDENTIAL_WORDS for w in words):
        return True
    return len(words) > 1 and words[-1] in ("key", "token") and words[-2] in _CREDENTIAL_QUALIFIERS


def _sha256(data: bytes | str) -> str:
    """Digest of bytes, or of text as UTF-8 (a lone surrogate in user text passes through)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(shape: Any) -> str:
    return json.dumps(shape, sort_keys=True, ensure_ascii=False)


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', None)}"


def _type_name(value: Any) -> str:
    return _qualified(type(value))


def _masked_url(url: str) -> str:
    """The URL without its user info, fragment and query values (a password, a signature);
    the host, path and parameter names stay, so two endpoints keep two partitions."""
    try:
        parts = urlsplit(url)
        netloc = (
            f"{_MASK}@{parts.netloc.rpartition('@')[2]}" if "@" in parts.netloc else parts.netloc
        )
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        raise _Unkeyable("a URL that cannot be parsed") from None
    query = urlencode([(k, v if k in _PLAIN_QUERY else _MASK) for k, v in pairs], safe="*")
    fragment = _MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def to_json(value: Any, *, scrub: bool) -> Any:
    """A JSON value for a setting, call argument or tool call.

    Tools become their OpenAI schema, pydantic models their dump, functions and other callables
    a digest of their code and state, other objects a digest of their state (a value type its
    repr); :class:`_Unkeyable` when nothing stable describes a value. With ``scrub``, entries
    named as credentials and ``SecretStr`` values are dropped at any depth (a JSON schema's
    field names excepted) and URLs lose their user info and query values.
    """
    return _json(value, scrub, fields=False, path=set())


def _json(value: Any, scrub: bool, *, fields: bool, path: set[int]) -> Any:
    """:func:`to_json`; ``fields`` marks a JSON schema's map of field names, ``path`` the
    containers being converted (one met again inside itself is a cycle: no stable key)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _masked_url(value) if scrub and _URL.fullmatch(value) else value
    if id(value) in path:
        raise _Unkeyable(f"a {_type_name(value)} that contains itself")
    path.add(id(value))
    try:
        return _json_object(value, scrub, fields=fields, path=path)
    finally:
        path.discard(id(value))


def _json_object(value: Any, scrub: bool, *, fields: bool, path: set[int]) -> Any:
    """:func:`_json` for a value that is not a string or a number."""
    if isinstance(value, SecretStr | SecretBytes):
        return _DROP
    if isinstance(value, enum.Enum):
        return _json(value.value, scrub, fields=False, path=path)
    if isinstance(value, bytes | bytearray):
        return _sha256(bytes(value))
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            name = str(key)
            field = fields and isinstance(item, Mapping | bool)
            if scrub and not field and _is_credential(name):
                continue
            out[name] = _json(item, scrub, fields=name in _SCHEMA_MAPS, path=path)
        return {k: v for k, v in out.items() if v is not _DROP}
    if isinstance(value, list | tuple):
        items = (_json(v, scrub, fields=False, path=path) for v in value)
        return [v for v in items if v is not _DROP]
    if isinstance(value, set | frozenset):
        members = [_json(v, scrub, fields=False, path=path) for v in value]
        return sorted((v for v in members if v is not _DROP), key=json.dumps)
    to_openai_tool = getattr(getattr(value, "metadata", None), "to_openai_tool", None)
    if to_openai_tool is not None:  # a llama_index BaseTool
        return to_openai_tool(skip_length_check=True)
    if isinstance(value, BaseModel) and not isinstance(value, BasePromptTemplate):
        try:
            return _json(value.model_dump(mode="json"), scrub, fields=False, path=path)
        except _Unkeyable:
            raise
        except Exception:  # a member pydantic cannot dump (a callable): field by field below
            pass
    if isinstance(value, BaseModel):  # field by field, so its functions get digests
        fields_ = type(value).model_fields.items()
        dumped = {k: getattr(value, k) for k, info in fields_ if not info.exclude}
        return _json(dumped, scrub, fields=False, path=path)
    if isinstance(value, type):
        if issubclass(value, BaseModel):
            return {"schema": value.model_json_schema()}
        return f"class:{_qualified(value)}"
    if callable(value):
        return _callable_digest(value)
    shape = _value_shape(value, _Walk(scrub=scrub))
    if shape[0] == "value":  # a value type's own repr (torch.float16), kept readable
        return shape[2]
    return f"object:{_type_name(value)}:{_sha256(_canonical(shape))}"


class _Walk:
    """One walk through a value: an object met again becomes a reference to its first visit
    (so cycles end and two shared objects stay apart); past ``_MAX_NODES`` it gives up."""

    def __init__(self, *, scrub: bool) -> None:
        self.scrub = scrub
        self._seen: dict[int, tuple[int, Any]] = {}  # id -> (order, the object, kept alive)
        self._nodes = 0
        # Names the function being walked reads: the attributes of a module or class it uses.
        self.names: frozenset[str] = frozenset()
        self.expanded: set[tuple[int, str]] = set()  # (module or class id, attribute) keyed
        self.where = ""  # the global, captured value or default being walked, for warnings
        # Inside a library's function: what it reads is keyed, but its use of the environment
        # or the clock is not judged (a jinja environment holds a `random` filter it never runs).
        self.library = False

    def step(self, value: Any) -> None:
        """Counts one more value walked."""
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise _Unkeyable(
                f"more than {_MAX_NODES:,} values to key{self.where}"
                f" (a {_type_name(value)} among them)"
            )

    def ref(self, value: Any) -> list[Any] | None:
        """A reference to ``value`` when it was met before, else None (and it is recorded)."""
        known = self._seen.get(id(value))
        if known is not None:
            return ["ref", known[0]]
        self._seen[id(value)] = (len(self._seen), value)
        return None


def _callable_digest(fn: Any) -> str:
    """Names a callable by its code, constants, captured values and bound object: the same
    one gives the same key in every process, two that format differently give different keys.
    One found to have no stable key stays so, without a new walk (a digest is walked each call:
    what it reads may change)."""
    known = _VERDICTS.get(id(fn))
    if known is not None and known[0] is fn:
        raise known[1]
    name = _qualified(fn) if hasattr(fn, "__qualname__") else _type_name(fn)
    try:
        shape = _canonical(_callable_shape(fn, _Walk(scrub=False)))
    except _Unkeyable as exc:
        if len(_VERDICTS) >= _MAX_VERDICTS:
            _VERDICTS.pop(next(iter(_VERDICTS)))
        _VERDICTS[id(fn)] = (fn, exc)
        raise
    return f"callable:{name}:{_sha256(shape)}"


def _is_library(module: str | None) -> bool:
    """True for the standard library and installed packages: their functions and classes are
    keyed by name, not walked (what they read is not the app's settings)."""
    if not module:
        return True
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return True
    file = getattr(sys.modules.get(module) or sys.modules.get(top), "__file__", None) or ""
    return "site-packages" in file or "dist-packages" in file


def _check_process_state(module: str | None, name: str) -> None:
    """:class:`_Unkeyable` when ``module.name`` reads the environment or the process state."""
    if module is None or module.partition(".")[0] not in _PROCESS_STATE:
        return
    names = _PROCESS_STATE[module.partition(".")[0]]
    if names is None or name in names:
        raise _Unkeyable(f"a prompt format using {module}.{name} (environment or process state)")


def _namespace_shape(owner: Any, walk: _Walk) -> list[Any]:
    """The attributes of a module or class that the function being walked reads: an app's
    settings module or class by their values, a library's functions and classes by name."""
    is_module = isinstance(owner, types.ModuleType)
    shape: list[Any] = []
    for name in sorted(walk.names):
        if (id(owner), name) in walk.expanded:
            continue
        if is_module:
            namespace, module = vars(owner), owner.__name__
        else:  # the class that defines it, without running a descriptor
            found = [k for k in owner.__mro__ if name in vars(k)]
            if not found:
                continue
            namespace, module = vars(found[0]), found[0].__module__
        if name not in namespace:
            continue
        walk.expanded.add((id(owner), name))
        if not walk.library:
            _check_process_state(module, name)
        value = namespace[name]
        if _is_library(module) and isinstance(value, types.ModuleType | type):
            shape.append([name, "api", _qualified(value), _namespace_shape(value, walk)])
        elif _is_library(module) and (callable(value) or isinstance(value, _API)):
            shape.append([name, "api", _qualified(value)])
        else:
            shape.append([name, _value_shape(value, walk)])
    return shape


def _callable_shape(fn: Any, walk: _Walk) -> Any:
    """The parts of a callable that decide what it returns, or :class:`_Unkeyable`."""
    walk.step(fn)
    if isinstance(fn, type):
        return ["class", _qualified(fn), _namespace_shape(fn, walk)]
    ref = walk.ref(fn)
    if ref is not None:
        return ref
    if isinstance(fn, functools.partial):
        args = [_value_shape(fn.args, walk), _value_shape(fn.keywords, walk)]
        return ["partial", _callable_shape(fn.func, walk), *args]
    if isinstance(fn, types.MethodType):  # a model's own method: its settings are keyed apart
        owner = fn.__self__
        bound = (
            ["model", _type_name(owner)] if isinstance(owner, LLM) else _value_shape(owner, walk)
        )
        return ["method", bound, _callable_shape(fn.__func__, walk)]
    if isinstance(fn, types.FunctionType):
        return _function_shape(fn, walk)
    if isinstance(fn, _C_FUNCTIONS):  # its module, class or bound value ("... {}".format)
        owner = fn.__self__
        module = getattr(owner, "__name__" if isinstance(owner, types.ModuleType) else "", None)
        if isinstance(owner, type):
            module = owner.__module__
        if not walk.library:
            _check_process_state(module or getattr(fn, "__module__", None), fn.__name__)
        return ["builtin", _qualified(fn), _value_shape(owner, walk)]
    if isinstance(fn, _C_DESCRIPTORS):  # str.upper
        return ["descriptor", _qualified(fn.__objclass__), fn.__name__]
    if isinstance(fn, staticmethod | classmethod):
        return [type(fn).__name__, _callable_shape(fn.__func__, walk)]
    if isinstance(fn, _REDUCIBLE):  # operator.methodcaller("format", 1): class and arguments
        return ["reduced", _value_shape(fn.__reduce__(), walk)]
    if isinstance(fn, functools._lru_cache_wrapper):  # lru_cache / cache: what it memoises
        return ["memoised", _callable_shape(fn.__wrapped__, walk)]
    call = type(fn).__call__  # present: fn is callable
    if isinstance(call, types.FunctionType) and not _hidden_state(fn):  # a class with __call__
        state = _value_shape(_object_state(fn) or {}, walk)
        return ["object", _type_name(fn), _function_shape(call, walk), state]
    raise _Unkeyable(f"a {_type_name(fn)} callable")


def _function_shape(fn: types.FunctionType, walk: _Walk) -> Any:
    """A Python function by its code, defaults, captured values and the globals it reads (of a
    module or class it reads, the attributes it names)."""
    outer, outer_where, outer_library = walk.names, walk.where, walk.library
    if not outer_library:
        _check_process_state(fn.__module__, fn.__name__)
    names = sorted(_read_names(fn.__code__))
    walk.names, walk.library = frozenset(names), _is_library(fn.__module__)
    try:
        captured = []
        for cell, free in zip(fn.__closure__ or (), fn.__code__.co_freevars, strict=False):
            walk.where = outer_where or f" read as {free!r}"
            try:
                captured.append(_value_shape(cell.cell_contents, walk))
            except ValueError:  # a cell not yet filled
                captured.append(["empty"])
        scope = fn.__globals__
        read = []
        for name in names:
            if name in scope:
                if not outer_library:  # os.get_exec_path reads os.environ
                    _check_process_state(fn.__module__, name)
                walk.where = outer_where or f" read as {name!r}"
                read.append([name, _value_shape(scope[name], walk)])
        walk.where = outer_where or " in its defaults"
        defaults = _value_shape([fn.__defaults__, fn.__kwdefaults__], walk)
    finally:
        walk.names, walk.where, walk.library = outer, outer_where, outer_library
    return ["function", _qualified(fn), _code_shape(fn.__code__), defaults, captured, read]


def _value_shape(value: Any, walk: _Walk) -> Any:
    """A value a callable captures, reads or is bound to: functions by their code, modules and
    classes by name, containers item by item, objects by their type and state, value types by
    their repr; :class:`_Unkeyable` for an object with hidden state and an address in its repr.
    """
    walk.step(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return ["enum", _type_name(value), _value_shape(value.value, walk)]
    if isinstance(value, bytes | bytearray):
        return _sha256(bytes(value))
    if isinstance(value, types.ModuleType):
        return ["module", value.__name__, _namespace_shape(value, walk)]
    if isinstance(value, type):
        return ["class", _qualified(value), _namespace_shape(value, walk)]
    if isinstance(value, property):
        return ["property", [_value_shape(f, walk) for f in (value.fget, value.fset)]]
    if isinstance(value, SecretStr | SecretBytes):
        return ["secret"]
    if isinstance(value, _NO_OUTPUT_STATE):
        return ["no output state", _type_name(value)]
    tool = getattr(getattr(value, "metadata", None), "to_openai_tool", None)
    if tool is not None or isinstance(value, BaseModel):
        return to_json(value, scrub=walk.scrub)
    if callable(value):
        return _callable_shape(value, walk)
    ref = walk.ref(value)
    if ref is not None:
        return ref
    if type(value) in (list, tuple, dict) and not walk.scrub:
        digest = _plain_digest(value)
        if digest is not None:
            return ["plain", digest]
    if isinstance(value, Mapping):
        items = [(k, v) for k, v in value.items() if not (walk.scrub and _credential_key(k))]
        return ["map", [[_value_shape(k, walk), _value_shape(v, walk)] for k, v in items]]
    if isinstance(value, list | tuple | collections.deque):
        return [type(value).__name__, [_value_shape(v, walk) for v in value]]
    if isinstance(value, set | frozenset):
        return ["set", sorted((_value_shape(v, walk) for v in value), key=_canonical)]
    if isinstance(value, PurePath):  # its slots cache a seeded hash
        return ["path", _type_name(value), str(value)]
    if isinstance(value, re.Pattern):
        return ["pattern", _value_shape(value.pattern, walk), value.flags]
    state = _object_state(value)
    if state is not None or type(value) is object:  # object(): a sentinel, no state
        return ["object", _type_name(value), _value_shape(state or {}, walk)]
    text = repr(value)
    if _ADDRESS.search(text) or "..." in text or len(text) > _MAX_REPR:
        raise _Unkeyable(f"a {_type_name(value)} value")
    return ["value", _type_name(value), text]


_PLAIN_CONTAINERS = frozenset({list, tuple, dict})
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)}) | _PLAIN_CONTAINERS
_MAX_PLAIN_DEPTH = 32


def _is_plain(value: list[Any] | tuple[Any, ...] | dict[Any, Any], depth: int = 0) -> bool:
    """True for strings and numbers in lists, tuples and dicts, exactly these types (no set:
    its order is per process; no object); a cycle ends at the depth limit."""
    if depth > _MAX_PLAIN_DEPTH:
        return False
    groups = (value.keys(), value.values()) if isinstance(value, dict) else (value,)
    for members in groups:
        kinds = {type(v) for v in members}
        if not kinds <= _PLAIN_TYPES:
            return False
        if kinds & _PLAIN_CONTAINERS and not all(
            _is_plain(v, depth + 1) for v in members if type(v) in _PLAIN_CONTAINERS
        ):
            return False
    return True


def _plain_digest(value: list[Any] | tuple[Any, ...] | dict[Any, Any]) -> str | None:
    """Digest of plain data (strings, numbers, lists, tuples, dicts of them) in one pass, or None
    for anything else (a set, an object, a cycle): a few-shot list costs no per-item walk."""
    if not _is_plain(value):
        return None
    data = marshal.dumps(value, 2)  # version 2: no back-references, so no refcount in the bytes
    if len(data) > _MAX_PLAIN_BYTES:
        raise _Unkeyable(f"more than {_MAX_PLAIN_BYTES:,} bytes of data to key")
    return _sha256(data)


def _credential_key(key: Any) -> bool:
    return isinstance(key, str) and _is_credential(key)


def _hidden_state(value: Any) -> bool:
    """True when a class of the object is defined in C (io.StringIO): its attributes may not
    hold all it knows."""
    return any(not k.__flags__ & _HEAP_TYPE for k in type(value).__mro__ if k is not object)


def _object_state(value: Any) -> dict[str, Any] | None:
    """An object's attributes (``__dict__`` and slots), or None for one that has neither or
    keeps state where no attribute shows it."""
    if _hidden_state(value):
        return None
    attrs = getattr(value, "__dict__", None)
    found = isinstance(attrs, dict)
    state: dict[str, Any] = dict(attrs) if isinstance(attrs, dict) else {}
    for klass in type(value).__mro__:
        slots = klass.__dict__.get("__slots__")
        if slots is None:
            continue
        found = True
        for slot in [slots] if isinstance(slots, str) else slots:
            private = slot.startswith("__") and not slot.endswith("__")
            attr = f"_{klass.__name__.lstrip('_')}{slot}" if private else slot
            if slot not in ("__dict__", "__weakref__") and hasattr(value, attr):
                state[f"{klass.__qualname__}.{slot}"] = getattr(value, attr)
    return state if found else None


def _code_shape(code: types.CodeType) -> list[Any]:
    consts = [
        _code_shape(c) if isinstance(c, types.CodeType) else _value_shape(c, _Walk(scrub=False))
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
    """JSON for one setting or call argument, or _DROP for a credential or a request label;
    :class:`_Unkeyable` (naming the setting) when its value has no stable key or cannot be
    converted at all: such a setting is never left out of the partition."""
    if _is_credential(name) or name in _TRACKING:
        return _DROP
    if name == "additional_kwargs" and isinstance(value, Mapping):
        value = {k: v for k, v in value.items() if k not in _TRACKING}
    try:
        return to_json(value, scrub=True)
    except _Unkeyable as exc:
        raise _Unkeyable(f"{exc} in {name!r}") from None
    except Exception as exc:  # RecursionError, a pydantic serialiser error, a broken __eq__
        raise _Unkeyable(f"a {_type_name(value)} ({type(exc).__name__}) in {name!r}") from None


def llm_settings(llm: LLM) -> dict[str, Any]:
    """The wrapped model's settings that shape its answer: no credentials, transport or state.

    Fields LlamaIndex excludes from serialisation are state, except the prompt formatting a local
    model applies (``messages_to_prompt``, ``completion_to_prompt``, ``query_wrapper_prompt``);
    those enter the partition unless they are LlamaIndex's defaults. Raises :class:`_Unkeyable`
    for a setting no stable key can be derived from (the call is then not cached).
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
        value = _setting_json(name, value)
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


def _message_text(message: ChatMessage, call_ids: dict[str, int]) -> tuple[str, list[str]] | None:
    """Text of a message with its tool calls rendered, and those calls (name and canonical
    arguments); None when it holds media (not cached).

    Tool call ids become their order of appearance (``#1``), so a conversation keys the same
    whatever ids the provider drew, while which result answers which call still counts.
    """
    parts: list[str] = []
    calls: list[str] = []
    has_tool_block = False
    for block in message.blocks:
        if not isinstance(block, _TEXT_ONLY):
            return None
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, ToolCallBlock):
            has_tool_block = True
            calls.append(_call(call_ids, block.tool_call_id, block.tool_name, block.tool_kwargs))
    legacy_calls = message.additional_kwargs.get("tool_calls")
    if legacy_calls and not has_tool_block:
        if isinstance(legacy_calls, Mapping | str) or not isinstance(legacy_calls, Sequence):
            legacy_calls = [legacy_calls]  # one call sent without its list
        calls.extend(_legacy_call(call_ids, call) for call in legacy_calls)
    parts.extend(calls)
    return "\n".join(parts), calls


def _call(call_ids: dict[str, int], call_id: Any, name: Any, arguments: Any) -> str:
    """A tool call as text, ``[tool_call #1 weather {"city": "Oslo"}]``: its id is only its
    order of appearance, its arguments canonical JSON (a JSON string is parsed first)."""
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError, RecursionError):  # not JSON: the string as it is
            arguments = json.loads(arguments)
    args = json.dumps(to_json(arguments, scrub=False), sort_keys=True)
    number = f" #{_call_number(call_ids, call_id)}" if call_id else ""
    return f"[tool_call{number} {name or ''} {args}]"


def _legacy_call(call_ids: dict[str, int], call: Any) -> str:
    """:func:`_call` for a call in ``additional_kwargs["tool_calls"]``: OpenAI's
    ``{"id", "function": {"name", "arguments"}}`` (or its pydantic form), a custom tool's
    ``{"custom": {"name", "input"}}``, ``{"name", "args"}``; any other shape whole, less its id."""
    data = to_json(call, scrub=False)
    if not isinstance(data, Mapping):
        return _call(call_ids, None, "", data)
    call_id = data.get("id")
    function = data.get("function")
    if isinstance(data.get("custom"), Mapping):
        function = {"name": data["custom"].get("name"), "arguments": data["custom"].get("input")}
    elif not isinstance(function, Mapping):
        function = data
    arguments = function.get("arguments", function.get("args", function.get("input")))
    if not function.get("name") and arguments is None:
        arguments = {k: v for k, v in data.items() if k != "id"}
    return _call(call_ids, call_id, function.get("name"), arguments)


def _answers(message: ChatMessage, call_ids: dict[str, int]) -> int | None:
    """The number of the tool call a result answers (see :func:`_message_text`), else None."""
    call_id = message.additional_kwargs.get("tool_call_id")
    return _call_number(call_ids, call_id) if call_id else None


def _fields_digest(message: ChatMessage, calls: list[str], answers: int | None) -> str:
    """Digest of a message's participant name, tool calls and the call a result answers, ''
    when it has none: the engine's per-message attachments field, exact in the key and never
    embedded, so a hit needs the same calls and arguments, and the name stays out of the text
    and the partition (one partition per end user would soon fill the tenant's cap)."""
    name = message.additional_kwargs.get("name")
    fields = {"name": str(name) if name else None, "calls": calls or None, "answers": answers}
    fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        return ""
    text = json.dumps(fields, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _call_number(call_ids: dict[str, int], call_id: Any) -> int:
    return call_ids.setdefault(str(call_id), len(call_ids) + 1)


def _role(message: ChatMessage) -> str:
    role = getattr(message.role, "value", message.role)
    return _ASSISTANT_ALIASES.get(str(role), str(role))


def chat_plan(
    llm: LLM, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any], scope: Scope
) -> Plan | None:
    """Plan for a chat call, or None when it cannot be cached (no user text, media blocks, a
    setting with no stable key).

    Turns after the last user message (tool calls and their results in an agent loop) make the
    answer depend on those outputs: such calls get their own partition and match exactly only.
    Participant names, tool calls (name and arguments) and the call a tool result answers are
    digests in each turn's attachments field, so a hit needs the same ones.
    """
    try:
        return _chat_plan(llm, messages, kwargs, scope)
    except _Unkeyable as exc:
        _not_cached(exc)
        return None


def _chat_plan(
    llm: LLM, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any], scope: Scope
) -> Plan | None:
    system: list[str] = []
    turns: list[Message] = []
    last_user_text = ""
    call_ids: dict[str, int] = {}
    for message in messages:
        rendered = _message_text(message, call_ids)
        if rendered is None:
            return None
        text, calls = rendered
        role = _role(message)
        answers = _answers(message, call_ids)
        fields = _fields_digest(message, calls, answers)
        if role == "user":
            last_user_text = text
        if answers is not None:  # the provider sends which call a result answers too
            text = f"[result of tool_call #{answers}]\n{text}"
        if role in ("system", "developer"):  # the system prompt is the partition: a digest only
            system.append(f"{text}\n[message fields {fields}]" if fields else text)
        else:
            turns.append(Message(role, text, attachments=fields))
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
    """Plan for a completion call, or None for an empty prompt or a setting with no stable key."""
    if not isinstance(prompt, str) or not normalize_text(prompt):
        return None
    try:
        params = _params(llm, "complete", kwargs, formatted=bool(formatted))
    except _Unkeyable as exc:
        _not_cached(exc)
        return None
    model = model_label(llm)
    return Plan(Request(query=prompt, scope=Scope(scope.tenant, scope.env, model, params)))
