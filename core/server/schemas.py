"""Pydantic models of the REST API and of the ModelCache envelope (for the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from ..request import NAME_LIMITS, check_name, normalize_text

__all__ = [
    "ClearResult",
    "DeleteResult",
    "EntryCreated",
    "ErrorBody",
    "HealthResult",
    "HistoryMessage",
    "LookupResult",
    "StatsResult",
    "envelope_models",
    "rest_bodies",
]


def _not_blank(value: str) -> str:
    if not normalize_text(value):
        raise ValueError("must contain non-whitespace text")
    return value


# `pattern` documents the rule for clients and generators; the validator enforces Python's view.
# No NUL anywhere: PostgreSQL cannot store it (the engine refuses it too).
Text = Annotated[
    str,
    StringConstraints(min_length=1, pattern=r"^[^\x00]*\S[^\x00]*$"),
    AfterValidator(_not_blank),
]
Prose = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]


def _printable_name(value: str) -> str:
    return check_name("name", value, NAME_LIMITS["tenant"])


_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
# Tenant and model names: what every SQL backend holds, no control characters.
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=NAME_LIMITS["tenant"], pattern=_NAME_PATTERN),
    AfterValidator(_printable_name),
]
EntryId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
_TEN_YEARS = 10 * 365 * 24 * 3600.0


class HistoryMessage(BaseModel):
    """An earlier turn of the conversation (system prompts go in ``system``)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["user", "assistant", "tool", "function"]
    content: Prose


class ErrorBody(BaseModel):
    """Any refused request: ModelCache's ``errorCode``/``errorDesc`` (plus envelope fields)."""

    model_config = ConfigDict(extra="allow")
    errorCode: int = Field(description="ModelCache error code (101 bad body, 102 bad type, ...)")
    errorDesc: str = Field(description="What was wrong, in words.")
    detail: list[dict[str, Any]] | None = Field(
        default=None, description="Per-field validation errors, when there are several."
    )


class LookupResult(BaseModel):
    """Outcome of a lookup: a hit with its answer, or a miss."""

    hit: bool
    kind: Literal["exact", "semantic"] | None = Field(description="How the hit was found.")
    similarity: float | None = Field(description="Cosine similarity (1.0 for exact hits).")
    answer: Any = Field(default=None, description="The stored JSON answer (null on a miss).")
    entry_id: str | None
    matched_query: str | None = Field(description="The stored question that matched.")
    metadata: dict[str, Any] = Field(default_factory=dict)
    tenant: str
    env: str
    model: str
    latency_ms: float


class EntryCreated(BaseModel):
    """Where an inserted answer went; the id is deterministic per exact request."""

    id: str
    tenant: str
    env: str
    model: str


class DeleteResult(BaseModel):
    """Outcome of deleting one entry."""

    id: str
    deleted: bool


class ClearResult(BaseModel):
    """How many entries a clear removed."""

    deleted: int


class PartitionStats(BaseModel):
    """Entry and hit counts of one partition."""

    model_config = ConfigDict(extra="allow")
    id: str
    tenant: str
    env: str
    model: str
    params: dict[str, Any] = Field(default_factory=dict)
    entries: int
    stored_hits: int = Field(default=0, description="Hits recorded in the store.")


class StatsResult(BaseModel):
    """Stored entries per partition; process counters only for local/admin callers."""

    entries: int
    partitions: list[PartitionStats]
    process: dict[str, Any] | None = Field(
        default=None, description="Lookup counters of this process (local-only mode only)."
    )


class HealthResult(BaseModel):
    """Liveness answer."""

    status: Literal["ok"]
    version: str


class ReadyResult(BaseModel):
    """Readiness answer: each store's probe, "ok" or why not (503 when not ready)."""

    ready: bool
    sql: str
    vectors: str


def rest_bodies(environments: tuple[str, ...]) -> dict[str, type[BaseModel]]:
    """Request models whose ``env`` enum is the configured list of environments."""
    Env = Literal[environments]  # type: ignore[valid-type]

    class _Scoped(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        tenant: Name | None = Field(
            default=None, description="Defaults to the API key's tenant (or 'default' locally)."
        )
        env: Env | None = Field(default=None, description="Defaults to the server's default env.")
        model: Name = Field(default="default", description="Model name, kept as given.")
        params: dict[str, Any] = Field(
            default_factory=dict, description="Generation parameters; part of the partition."
        )
        query: Text = Field(description="The current user message.")
        system: Prose | None = Field(
            default=None, description="System prompt; part of the partition."
        )
        history: list[HistoryMessage] = Field(
            default_factory=list, description="Earlier turns, oldest first."
        )

    class LookupBody(_Scoped):
        """A lookup: scope, conversation and an optional per-call threshold."""

        threshold: float | None = Field(
            default=None,
            ge=-1.0,
            le=1.0,
            description="Cosine similarity needed (overrides config).",
        )

    class EntryBody(_Scoped):
        """An answer to store for a request."""

        answer: Any = Field(description="Any JSON value, returned as is on a hit.")
        ttl: float | None = Field(default=None, gt=0, le=_TEN_YEARS, description="Seconds to live.")
        metadata: dict[str, Any] | None = Field(default=None, description="Returned with hits.")

    class ClearBody(BaseModel):
        """Which partitions to drop; omitted fields match everything (within your tenant)."""

        model_config = ConfigDict(extra="forbid", strict=True)
        tenant: Name | None = None
        env: Env | None = None
        model: Name | None = None
        params: dict[str, Any] | None = None

    return {"LookupBody": LookupBody, "EntryBody": EntryBody, "ClearBody": ClearBody}


def envelope_models(environments: tuple[str, ...]) -> tuple[Any, ...]:
    """Types documenting ``POST /modelcache``: the request (one shape per ``type``) and the
    query and write responses. Fields a type does not use are ignored, as in ModelCache."""
    Env = Literal[environments]  # type: ignore[valid-type]

    class EnvelopeMessage(BaseModel):
        role: Literal["system", "user", "assistant", "tool", "function", "developer"]
        content: Prose | list[Any] | None = Field(description="Text, or OpenAI-style parts.")

    class EnvelopeScope(BaseModel):
        model: Name = Field(description="Model name, kept as given.")
        tenant: Name | None = Field(default=None, description="Extension: tenant (default: key's).")
        env: Env | None = Field(default=None, description="Extension: environment.")
        params: dict[str, Any] | None = Field(default=None, description="Extension: parameters.")

    Messages = Annotated[list[EnvelopeMessage], Field(min_length=1)] | Text

    class ChatInfoRow(BaseModel):
        query: Messages = Field(description="System prompt, history and the user message.")
        answer: Any = Field(description="The answer to store (any JSON value but null).")

    class QueryEnvelope(BaseModel):
        """Look up the last user message of ``query`` in its conversation."""

        type: Literal["query"]
        scope: EnvelopeScope
        query: Messages

    class InsertEnvelope(BaseModel):
        """Store every row of ``chat_info``."""

        type: Literal["insert"]
        scope: EnvelopeScope
        chat_info: Annotated[list[ChatInfoRow], Field(min_length=1)]

    class RemoveEnvelope(BaseModel):
        """Drop the model's data, or entries by id."""

        type: Literal["remove"]
        scope: EnvelopeScope
        remove_type: Literal["truncate_by_model", "delete_by_id"]
        id_list: Annotated[list[str | int], Field(max_length=10_000)] | None = Field(
            default=None, description="delete_by_id: entry ids (strings)."
        )

    class RegisterEnvelope(BaseModel):
        """Create the model's partition up front."""

        type: Literal["register"]
        scope: EnvelopeScope

    ModelCacheEnvelope = Annotated[
        QueryEnvelope | InsertEnvelope | RemoveEnvelope | RegisterEnvelope,
        Field(discriminator="type"),
    ]

    class EnvelopeQueryResult(BaseModel):
        errorCode: int
        errorDesc: str
        cacheHit: bool
        delta_time: str | int
        hit_query: str
        answer: Any
        similarity: float | None = None
        hit_kind: Literal["exact", "semantic"] | None = None
        id: str | None = None

    class EnvelopeWriteResult(BaseModel):
        errorCode: int
        errorDesc: str
        writeStatus: str
        id_list: list[str] | None = None
        response: Any = None

    return ModelCacheEnvelope, EnvelopeQueryResult, EnvelopeWriteResult
