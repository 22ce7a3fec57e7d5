"""CacheConfig: every knob of the engine, typed, validated and immutable.

The engine only ever receives a ``CacheConfig``; environment variables (``MODELCACHE_*``) and
TOML files are read at the edges through :meth:`CacheConfig.load` (file < variables <
arguments) and its one-source forms :meth:`CacheConfig.from_env` and
:meth:`CacheConfig.from_toml`.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from .errors import ConfigError
from .redact import mask_url
from .request import NAME_LIMITS, check_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["CacheConfig"]

_ENV_PREFIX = "MODELCACHE_"


# Where each value of the model being built came from, for the error message (see _build).
_SOURCES: ContextVar[Mapping[str, str] | None] = ContextVar(
    "modelcache_config_sources", default=None
)


class _Settings(BaseModel):
    """A settings model whose every way of construction fails with :class:`ConfigError`."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_explain(type(self), exc, _SOURCES.get() or {})) from exc


class CacheConfig(_Settings):
    """Typed, validated, immutable settings of one cache."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # ---- where data lives -----------------------------------------------------------------
    path: str | None = Field(
        default="modelcache_data",
        description="Folder of the embedded stores (Chroma and SQLite). None keeps vectors in "
        "memory and needs an explicit sql_url.",
    )
    sql_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the scalar store; default SQLite in `path`. "
        "mysql+pymysql://… and postgresql+psycopg://… are supported.",
    )
    chroma_url: str | None = Field(
        default=None, description="URL of a Chroma server (http://host:port); default embedded."
    )
    vectors_in_memory: int = Field(
        default=50_000,
        ge=0,
        description="Vectors of small partitions (up to 10,000 each) that an embedded Chroma "
        "also keeps in process memory, about 1.5 KB each at 384 dimensions, so that their "
        "queries skip Chroma's ~1 ms per query; 0 turns it off. A Chroma server is never copied.",
    )
    sql_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds one SQL call may take (driver read/write timeouts, server "
        "statement timeout, SQLite busy wait), and one call to a Chroma server; past it the "
        "call fails instead of hanging.",
    )
    sql_connect_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds to open a database connection or to wait for a free pooled one.",
    )
    lookup_timeout: float | None = Field(
        default=0.5,
        gt=0,
        description="Seconds a lookup may spend in the stores, the embedding (and the guard's "
        "warm-up at start or jieba's first load) not counted; past it the lookup is a miss "
        "with a warning. None: no deadline.",
    )
    vector_url: str | None = Field(
        default=None,
        description="Milvus instead of Chroma: a server (milvus://[user:password@]host:19530[/db]"
        ", milvus+https://… for TLS) or a milvus-lite file path ending in .db. Needs the "
        "`modelcache[milvus]` extra.",
    )
    milvus_collection: str = Field(
        default="modelcache",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Milvus collection (or prefix of the per-partition collections).",
    )
    milvus_partition_key: bool | None = Field(
        default=None,
        description="True: one Milvus collection with a partition-key field for all partitions;"
        " False: a collection per partition; None: partition key on a Milvus server, "
        "a collection per partition on milvus-lite (see benchmarks/results/milvus.md).",
    )
    milvus_hnsw_m: int = Field(
        default=16, ge=2, le=2048, description="HNSW M (graph degree) of the Milvus index."
    )
    milvus_hnsw_ef_construction: int = Field(
        default=200, ge=1, description="HNSW efConstruction of the Milvus index."
    )
    milvus_search_ef: int = Field(
        default=64, ge=1, description="HNSW ef of a Milvus search (raised to top_k if lower)."
    )
    milvus_timeout: float = Field(
        default=10.0, gt=0, description="Seconds before a Milvus call gives up (fail-open)."
    )

    # ---- embedding --------------------------------------------------------------------------
    embedder: str = Field(
        default="minilm",
        description="'minilm' (shipped all-MiniLM-L6-v2), 'multilingual' (USE v3, numpy), "
        "a local sentence-transformers directory, or 'llm:<dir>' for an LLM embedding layer.",
    )
    torch_threads: int | None = Field(
        default=1,
        ge=1,
        description="Threads for embedding (ONNX Runtime intra-op, or torch); 1 is fastest "
        "for one query.",
    )
    embedder_backend: Literal["onnx", "torch", "onnx-int8"] = Field(
        default="onnx",
        description="Runtime of sentence-transformers models: 'onnx' (exported once, run with "
        "ONNX Runtime, same vectors, no torch when serving; falls back to torch if the export "
        "fails), 'torch', or 'onnx-int8' (quantised: about 2x faster, other vectors, so its "
        "own embedder name and calibrated thresholds).",
    )
    onnx_cache_dir: str | None = Field(
        default=None,
        description="Folder of the ONNX exports of embedding models; None: "
        "~/.cache/modelcache/onnx (or $XDG_CACHE_HOME/modelcache/onnx).",
    )

    # ---- acceptance -------------------------------------------------------------------------
    similarity_threshold: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity a short query needs; None: the embedder's calibrated "
        "value (MiniLM 0.85, multilingual 0.80).",
    )
    similarity_threshold_long: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity a long query needs; None: the embedder's value "
        "(MiniLM 0.90, multilingual 0.85).",
    )
    similarity_threshold_followup: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity a short follow-up (a query with earlier turns) needs; "
        "None: the embedder's value (MiniLM 0.45, multilingual 0.50).",
    )
    long_query_tokens: int = Field(
        default=48, ge=1, description="Token count from which a query counts as long."
    )
    context_threshold: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity the earlier turns (user turns and replies, embedded "
        "together) need; None: the embedder's value (MiniLM 0.80, multilingual 0.50).",
    )
    top_k: int = Field(default=5, ge=1, le=100, description="Candidates recalled per lookup.")
    guard: bool = Field(
        default=True,
        description="Reject candidates that differ in answer-determining tokens "
        "(numbers, languages, entities, antonyms).",
    )
    crowding_margin: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="A short standalone query's best candidate must beat the crowding_rank-th "
        "recalled neighbour by this much (precision over recall in large partitions, see "
        "benchmarks/results/density.md); None: off.",
    )
    crowding_rank: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Which recalled neighbour the crowding margin is measured from (2: the "
        "runner-up); with fewer candidates recalled the margin does not apply.",
    )
    verifier: str | None = Field(
        default=None, description="Local CrossEncoder directory used as a second-stage verifier."
    )
    verifier_threshold: float = Field(
        default=0.5, description="Verifier score a candidate needs to be accepted."
    )
    verifier_band: float = Field(
        default=1.0,
        ge=0.0,
        le=2.0,
        description="Candidates with similarity at or above threshold + band skip the verifier.",
    )

    # ---- isolation --------------------------------------------------------------------------
    environments: tuple[str, ...] = Field(
        default=("dev", "test", "staging", "prod"), description="Allowed environment names."
    )
    max_partitions_per_tenant: int | None = Field(
        default=1000,
        ge=1,
        description="Partitions one tenant may create (each new params value or system prompt "
        "makes one, with its own vector collection); beyond it writes are refused. "
        "None: unbounded.",
    )
    max_params_chars: int = Field(
        default=4096,
        ge=2,
        description="Longest generation parameters (canonical JSON, characters) a request may "
        "carry; longer ones are refused.",
    )

    # ---- lifecycle --------------------------------------------------------------------------
    eviction: Literal["lru", "lfu", "fifo", "none"] = Field(
        default="lru", description="Eviction policy applied when a capacity is exceeded."
    )
    max_entries_per_partition: int | None = Field(
        default=None, ge=1, description="Capacity of one partition in entries; None: unbounded."
    )
    max_entries: int | None = Field(
        default=None, ge=1, description="Capacity of the whole cache in entries; None: unbounded."
    )
    low_water: float = Field(
        default=0.9, gt=0.0, le=1.0, description="Eviction shrinks a full store to this fraction."
    )
    ttl_seconds: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,  # an endless expiry is None: inf cannot be stored by every database
        description="Default time-to-live of an entry; None: no expiry.",
    )
    sliding_ttl: bool = Field(default=False, description="A hit renews the entry's time-to-live.")
    track_hits: bool = Field(
        default=True,
        description="Record hit count and last-hit time per entry (deferred, batched writes); "
        "LRU/LFU eviction and sliding TTL need it.",
    )
    chunk_vectors_kept: int = Field(
        default=100_000,
        ge=0,
        description="Chunk vectors of stored long texts (RAG prompts) kept in SQL, about 2 KB "
        "each, so another process embeds only a prompt's new question; 0: this process "
        "neither keeps, reads nor trims them.",
    )
    query_log: bool = Field(default=False, description="Record every lookup and insert.")
    query_log_queue: int = Field(default=10_000, ge=1, description="Bound of the log queue.")
    query_log_retention_days: float | None = Field(
        default=30.0, gt=0, description="Query log rows older than this are purged."
    )
    token_price_per_1k: float = Field(
        default=0.002, ge=0, description="Price per 1k output tokens, for the savings estimate."
    )

    @model_validator(mode="after")
    def _check(self) -> CacheConfig:
        if self.path is None and self.sql_url is None:
            raise ValueError("set `path` (embedded stores) or `sql_url` (external database)")
        if self.vector_url is not None and self.chroma_url is not None:
            raise ValueError("set chroma_url (Chroma server) or vector_url (Milvus), not both")
        if not self.environments or any(not e for e in self.environments):
            raise ValueError("environments must be a non-empty list of names")
        for env in self.environments:  # every backend must hold the names it will be sent
            check_name("env", env, NAME_LIMITS["env"])
        if not self.embedder:
            raise ValueError("embedder must name a model")
        return self

    def check_env(self, env: str, source: str | None = None) -> str:
        """``env`` if it is one of :attr:`environments`, else a :class:`ConfigError` that lists
        them; ``source`` (e.g. ``--env``) names where the value came from in the message."""
        if env in self.environments:
            return env
        where = f" ({source})" if source else ""
        raise ConfigError(f"unknown env {env!r}{where}; allowed: {', '.join(self.environments)}")

    # ---- constructors at the edges ----------------------------------------------------------
    @classmethod
    def create(cls, **values: Any) -> CacheConfig:
        """Build a config from keyword arguments (the same as calling the class)."""
        return _build(cls, values, {})

    @classmethod
    def load(
        cls,
        file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        **arguments: Any,
    ) -> CacheConfig:
        """The layered config every front end uses: file < ``MODELCACHE_*`` < arguments.

        ``None`` arguments count as not given (a command-line option left out), so they never
        hide a value from the file or the environment.
        """
        given = {k: v for k, v in arguments.items() if v is not None}
        return _load(cls, file, environ, given)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> CacheConfig:
        """Read ``MODELCACHE_<FIELD>`` variables (e.g. ``MODELCACHE_SIMILARITY_THRESHOLD``).

        :meth:`load` without a file, except that an override of ``None`` is a value (e.g.
        ``lookup_timeout=None``: no deadline), as in ``CacheConfig(...)``.
        """
        return _load(cls, None, environ, overrides)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], **overrides: Any) -> CacheConfig:
        """Read a TOML file: a ``[modelcache]`` table, or top-level keys beside ``[server]``.

        :meth:`load` without the ``MODELCACHE_*`` layer (the file alone is the source); an
        override of ``None`` is a value, as in :meth:`from_env`.
        """
        return _load(cls, path, {}, overrides)

    def with_(self, **changes: Any) -> CacheConfig:
        """A validated copy with some fields changed."""
        return _build(type(self), {**self.model_dump(), **changes}, {})


# ---- loading helpers, shared with ServerSettings ---------------------------------------------
_Model = TypeVar("_Model", bound=_Settings)
_TABLES = ("modelcache", "server")


def _build(model: type[_Model], values: dict[str, Any], sources: dict[str, str]) -> _Model:
    """Validate ``values``; a :class:`ConfigError` names where each bad value came from."""
    token = _SOURCES.set(sources)
    try:
        return model(**values)
    finally:
        _SOURCES.reset(token)


def _load(
    model: type[_Model],
    file: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None,
    arguments: Mapping[str, Any],
    *,
    table: str = "modelcache",
    empty_is_none: bool = True,
    combine: Callable[[str, Any, Any], Any] | None = None,
) -> _Model:
    """The one layering of settings: the file's ``[table]`` < ``MODELCACHE_*`` variables
    (``environ``; None: the process's, ``{}``: none) < ``arguments``, each layer winning.

    ``combine(key, earlier, later)`` is the value of a key that a later layer sets again
    (default: the later value). Errors name the layer each bad value came from.
    """
    values, sources = _toml_values(model, file, table) if file else ({}, {})
    env = _env_values(model, environ, empty_is_none=empty_is_none)
    for more, where in (env, (arguments, {})):
        for key, value in more.items():
            values[key] = combine(key, values[key], value) if combine and key in values else value
            sources[key] = where.get(key, f"argument {key}")
    return _build(model, values, sources)


def _is_tuple(annotation: Any) -> bool:
    if typing.get_origin(annotation) is tuple:
        return True
    return any(typing.get_origin(arg) is tuple for arg in typing.get_args(annotation))


def _env_values(
    model: type[BaseModel], environ: Mapping[str, str] | None, *, empty_is_none: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """``MODELCACHE_<FIELD>`` values of a model's fields (lists comma-separated)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, info in model.model_fields.items():
        var = _ENV_PREFIX + name.upper()
        raw = environ.get(var)
        if raw is None:
            continue
        if raw.strip().lower() in ("", "none", "null") and not info.is_required():
            if not empty_is_none:
                continue
            values[name] = None
        elif _is_tuple(info.annotation):
            values[name] = tuple(e.strip() for e in raw.split(",") if e.strip())
        else:
            values[name] = raw
        sources[name] = f"environment variable {var}"
    return values, sources


def _toml_values(
    model: type[BaseModel], path: str | os.PathLike[str], table: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``[table]`` of a TOML file (or, for ``modelcache``, its top-level keys), with lines."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if table in data:
        values, where = data[table], table
    elif table == "modelcache":  # top-level keys; other tables belong to other readers
        values = {k: v for k, v in data.items() if k not in _TABLES}
        where = None
    else:
        values, where = {}, table
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: [{table}] must be a table")
    lines = _key_lines(text, where)
    sources = {
        key: f"{path}:{lines[key]} ({key})" if key in lines else f"{path} ({key})" for key in values
    }
    return dict(values), sources


def _key_lines(text: str, table: str | None) -> dict[str, int]:
    """Line numbers of the ``key = …`` lines in one table (None: before the first table)."""
    lines: dict[str, int] = {}
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[\s*([^\]\s]+)\s*\]", line)
        if header:
            current = header.group(1).strip("\"'")
            continue
        key = re.match(r"\s*[\"']?([A-Za-z0-9_-]+)[\"']?\s*=", line)
        if key and current == table:
            lines.setdefault(key.group(1), number)
    return lines


def _allowed(info: FieldInfo) -> str:
    """What a field accepts, e.g. ``an integer, >= 1, <= 100`` or ``one of 'lru', 'fifo'``."""
    annotation = info.annotation
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if union else []
    optional = union and type(None) in typing.get_args(annotation)
    args = args or [annotation]
    if typing.get_origin(args[0]) is Literal:
        text = "one of " + ", ".join(repr(v) for v in typing.get_args(args[0]))
    else:
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
        text = kind.get(args[0], "a list of names" if _is_tuple(annotation) else "a value")
        for item in info.metadata:
            for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                bound = getattr(item, attr, None)
                if bound is not None:
                    text += f", {sign} {bound}"
    return text + (", or none" if optional else "")


def _shown(key: str, value: Any) -> str:
    """A value for an error message: keys hidden, URLs masked, long text cut."""
    if "key" in key:
        return "***"
    if "url" in key and isinstance(value, str):
        value = mask_url(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _explain(model: type[BaseModel], exc: ValidationError, sources: Mapping[str, str]) -> str:
    """One line per problem: where the value came from, what is wrong, what is allowed."""
    problems = []
    fields = model.model_fields
    for error in exc.errors():
        loc = error.get("loc") or ()
        key = str(loc[0]) if loc else ""
        source = sources.get(key, f"argument {key}")
        if error["type"] == "extra_forbidden" and isinstance(error.get("input"), dict):
            close = difflib.get_close_matches(key, _TABLES, n=1, cutoff=0.6)  # a TOML [table]
            hint = f"; did you mean [{close[0]}]?" if close else ""
            problems.append(f"{source}: unknown table [{key}]{hint}")
        elif error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{source}: unknown setting {key!r}{hint}")
        elif key in fields:
            got = _shown(key, error.get("input"))
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{source} = {got}: {message} (allowed: {_allowed(fields[key])})")
        else:  # a rule across several settings
            problems.append(error["msg"].removeprefix("Value error, "))
    head = f"invalid {model.__name__}"
    return head + (": " + problems[0] if len(problems) == 1 else ":\n  " + "\n  ".join(problems))
