"""CachedLLM: a delegating LlamaIndex LLM that answers from ModelCache before calling its model.

One flow serves the eight endpoints: plan (pure), look up, decode a hit or call the model,
store. Sync, async and streaming shells differ only in how they wait; a streamed miss is
teed through unchanged and stored once it finishes, a hit is replayed as a stream.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, SerializeAsAny
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection

from modelcache import Cache, CacheConfig, ConfigError, Hit, Scope
from modelcache._settings_aliases import engine_settings

from ._codec import CHAT, COMPLETION, Codec
from ._keys import Plan, chat_plan, complete_plan

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llama_index.core.tools.types import BaseTool

__all__ = ["CachedFunctionCallingLLM", "CachedLLM", "wrap_llm"]

log = logging.getLogger("modelcache.llamaindex")
R = TypeVar("R", ChatResponse, CompletionResponse)

# Prompt handling copied from the wrapped model, so predict() formats exactly as it would.
# The rate limiter is not copied: a hit should not wait for a model slot.
_INHERITED = (
    "system_prompt",
    "messages_to_prompt",
    "completion_to_prompt",
    "output_parser",
    "pydantic_program_mode",
    "query_wrapper_prompt",
    "callback_manager",
)


class CachedLLM(LLM):
    """Wraps any LlamaIndex ``LLM``: chat / complete and their async and streaming forms are cached.

    Hits carry ``additional_kwargs["cache_hit"] = True`` and ``["cache_similarity"]`` on the
    response; cache faults are logged and the wrapped model answers instead.
    """

    llm: SerializeAsAny[LLM] = Field(description="The wrapped model.")
    cache: Cache = Field(exclude=True, description="The ModelCache engine.")
    tenant: str = Field(default="default", description="Scope tenant of every request.")
    env: str = Field(default="prod", description="Scope environment of every request.")
    _faults: int = PrivateAttr(default=0)

    def __init__(
        self, llm: LLM, cache: Cache, *, tenant: str = "default", env: str = "prod", **kwargs: Any
    ) -> None:
        Scope(tenant=tenant, env=env)  # fail at configuration time, not as a miss per call
        cache.config.check_env(env)
        inherited = {name: getattr(llm, name) for name in _INHERITED}
        super().__init__(llm=llm, cache=cache, tenant=tenant, env=env, **{**inherited, **kwargs})

    @classmethod
    def class_name(cls) -> str:
        """Name in LlamaIndex serialisation."""
        return "CachedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """The wrapped model's metadata (chat model, function calling, context window, name)."""
        return self.llm.metadata

    @property
    def fault_count(self) -> int:
        """Cache faults (lookup, insert, key or decode errors) turned into plain model calls."""
        return self._faults

    def to_payload(self) -> dict[str, Any]:
        """Observability payload: the wrapped model's (credential-free) one, marked as cached."""
        return {**self.llm.to_payload(), "cached_by": self.class_name()}

    # ---- endpoints: thin shells over one flow -------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Chat, answered from the cache when possible."""
        plan = self._chat_plan(messages, kwargs)
        return self._call(plan, CHAT, lambda: self.llm.chat(messages, **kwargs))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Streaming chat: a miss is passed through and stored at the end, a hit replayed."""
        plan = self._chat_plan(messages, kwargs)
        return self._stream(plan, CHAT, lambda: self.llm.stream_chat(messages, **kwargs))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async chat, answered from the cache when possible; a miss awaits the wrapped model's
        own ``achat``. Kept: LlamaIndex's LLM leaves its async endpoints abstract, and
        CustomLLM's defaults would run the sync ones on the event loop."""
        plan = self._chat_plan(messages, kwargs)
        return await self._acall(plan, CHAT, lambda: self.llm.achat(messages, **kwargs))

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """Async streaming chat: a miss is passed through and stored at the end, a hit replayed
        (the wrapped model's own ``astream_chat``; kept for the reason :meth:`achat` gives)."""
        plan = self._chat_plan(messages, kwargs)
        return await self._astream(plan, CHAT, lambda: self.llm.astream_chat(messages, **kwargs))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Completion, answered from the cache when possible."""
        plan = self._complete_plan(prompt, formatted, kwargs)
        call = lambda: self.llm.complete(prompt, formatted=formatted, **kwargs)  # noqa: E731
        return self._call(plan, COMPLETION, call)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Streaming completion: a miss is passed through and stored at the end, a hit replayed."""
        plan = self._complete_plan(prompt, formatted, kwargs)
        call = lambda: self.llm.stream_complete(prompt, formatted=formatted, **kwargs)  # noqa: E731
        return self._stream(plan, COMPLETION, call)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Async completion, answered from the cache when possible; a miss awaits the wrapped
        model's own ``acomplete`` (kept for the reason :meth:`achat` gives)."""
        plan = self._complete_plan(prompt, formatted, kwargs)
        call = lambda: self.llm.acomplete(prompt, formatted=formatted, **kwargs)  # noqa: E731
        return await self._acall(plan, COMPLETION, call)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async streaming completion: a miss is teed and stored at the end, a hit replayed
        (the wrapped model's own ``astream_complete``; kept as :meth:`achat` says)."""
        plan = self._complete_plan(prompt, formatted, kwargs)
        call = lambda: self.llm.astream_complete(prompt, formatted=formatted, **kwargs)  # noqa: E731
        return await self._astream(plan, COMPLETION, call)

    # ---- the flow ----------------------------------------------------------------------------
    def _call(self, plan: Plan | None, codec: Codec[R], call: Callable[[], R]) -> R:
        cached = self._lookup(plan, codec)
        if cached is not None:
            return cached
        response = call()
        self._store(plan, codec, response)
        return response

    async def _acall(
        self, plan: Plan | None, codec: Codec[R], call: Callable[[], Awaitable[R]]
    ) -> R:
        cached = await self._alookup(plan, codec)
        if cached is not None:
            return cached
        response = await call()
        await self._astore(plan, codec, response)
        return response

    def _stream(
        self, plan: Plan | None, codec: Codec[R], call: Callable[[], Iterator[R]]
    ) -> Generator[R, None, None]:
        cached = self._lookup(plan, codec)
        if cached is not None:
            return _replay(codec.chunks(cached))
        return self._tee(plan, codec, call())

    async def _astream(
        self, plan: Plan | None, codec: Codec[R], call: Callable[[], Awaitable[AsyncIterator[R]]]
    ) -> AsyncGenerator[R, None]:
        cached = await self._alookup(plan, codec)
        if cached is not None:
            return _areplay(codec.chunks(cached))
        return self._atee(plan, codec, await call())

    def _tee(
        self, plan: Plan | None, codec: Codec[R], stream: Iterator[R]
    ) -> Generator[R, None, None]:
        """Yield the model's chunks unchanged; store only once the stream has finished."""
        last = None
        for chunk in stream:
            last = chunk
            yield chunk
        if last is not None:
            self._store(plan, codec, last)

    async def _atee(
        self, plan: Plan | None, codec: Codec[R], stream: AsyncIterator[R]
    ) -> AsyncGenerator[R, None]:
        """Async :meth:`_tee`: an aborted or failed stream never reaches the store."""
        last = None
        async for chunk in stream:
            last = chunk
            yield chunk
        if last is not None:
            await self._astore(plan, codec, last)

    # ---- cache access: every engine exception becomes a logged fault --------------------------
    def _fault(self, action: str, exc: BaseException) -> None:
        self._faults += 1
        # The type only: an exception's text may quote the prompt or a participant's name.
        log.warning(
            "modelcache %s failed, the model answers uncached: %s", action, type(exc).__name__
        )
        log.debug("modelcache %s failure", action, exc_info=exc)

    def _scope(self) -> Scope:
        return Scope(tenant=self.tenant, env=self.env)

    def _chat_plan(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> Plan | None:
        try:
            return chat_plan(self.llm, messages, kwargs, self._scope())
        except Exception as exc:
            self._fault("key building", exc)
            return None

    def _complete_plan(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> Plan | None:
        try:
            return complete_plan(self.llm, prompt, formatted, kwargs, self._scope())
        except Exception as exc:
            self._fault("key building", exc)
            return None

    def _accept(self, plan: Plan, codec: Codec[R], hit: Hit | None) -> R | None:
        if hit is None:
            return None
        try:
            return codec.from_answer(hit.answer, hit)
        except Exception as exc:
            self._fault("decoding a hit", exc)
            return None

    def _lookup(self, plan: Plan | None, codec: Codec[R]) -> R | None:
        if plan is None:
            return None
        try:
            hit = self.cache.lookup(plan.request, exact_only=plan.exact_only)
        except Exception as exc:
            self._fault("lookup", exc)
            return None
        return self._accept(plan, codec, hit)

    async def _alookup(self, plan: Plan | None, codec: Codec[R]) -> R | None:
        """:meth:`_lookup` on the engine's async twin: the embedding runs off the loop."""
        if plan is None:
            return None
        try:
            hit = await self.cache.alookup(plan.request, exact_only=plan.exact_only)
        except Exception as exc:
            self._fault("lookup", exc)
            return None
        return self._accept(plan, codec, hit)

    def _answer(self, plan: Plan | None, codec: Codec[R], response: R) -> Any | None:
        if plan is None:
            return None
        try:
            return codec.to_answer(response)
        except Exception as exc:
            self._fault("encoding the answer", exc)
            return None

    def _store(self, plan: Plan | None, codec: Codec[R], response: R) -> None:
        answer = self._answer(plan, codec, response)
        if plan is None or answer is None:
            return
        try:
            self.cache.insert(plan.request, answer)
        except Exception as exc:
            self._fault("insert", exc)

    async def _astore(self, plan: Plan | None, codec: Codec[R], response: R) -> None:
        """:meth:`_store` on the engine's async twin: the embedding runs off the loop."""
        answer = self._answer(plan, codec, response)
        if plan is None or answer is None:
            return
        try:
            await self.cache.ainsert(plan.request, answer)
        except Exception as exc:
            self._fault("insert", exc)


class CachedFunctionCallingLLM(CachedLLM, FunctionCallingLLM):
    """CachedLLM for function-calling models: tool preparation and parsing go to the wrapped one.

    Tool schemas reach ``chat`` as call kwargs, so they take part in the partition.
    """

    llm: SerializeAsAny[FunctionCallingLLM] = Field(description="The wrapped model.")

    @classmethod
    def class_name(cls) -> str:
        """Name in LlamaIndex serialisation."""
        return "CachedFunctionCallingLLM"

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The wrapped model's chat kwargs for these tools."""
        return self.llm._prepare_chat_with_tools_compat(
            tools,
            user_msg=user_msg,
            chat_history=chat_history,
            verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls,
            tool_required=tool_required,
            **kwargs,
        )

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """The wrapped model's validation (e.g. forcing a single tool call)."""
        return self.llm._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """Tool calls parsed by the wrapped model (works on hits: tool calls are stored)."""
        return self.llm.get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )


def wrap_llm(
    llm: LLM,
    cache: Cache | None = None,
    *,
    tenant: str = "default",
    env: str = "prod",
    config: CacheConfig | None = None,
    **settings: Any,
) -> CachedLLM:
    """Cache ``llm`` in ``cache``: ``Settings.llm = wrap_llm(llm, cache)``.

    Without an engine, one is built from ``config`` and ``CacheConfig`` fields in ``settings``
    (``embed_model=`` takes a LlamaIndex embedding model, ``ttl=`` is ``ttl_seconds``); close it
    with ``wrapped.cache.close()``. Settings are arguments only, as in ``CacheConfig(...)``:
    ``config=CacheConfig.load(...)`` adds a file and ``MODELCACHE_*`` variables.
    Function-calling models get :class:`CachedFunctionCallingLLM` so agents keep working; an
    already wrapped model is re-wrapped around its inner model, never cached twice.
    """
    if cache is not None and (config is not None or settings):
        raise ConfigError("pass either an engine (`cache`) or settings to build one, not both")
    inner = llm.llm if isinstance(llm, CachedLLM) else llm
    cls = CachedFunctionCallingLLM if isinstance(inner, FunctionCallingLLM) else CachedLLM
    if cache is None:
        Scope(tenant=tenant, env=env)
        config, embedder = engine_settings(config, settings)
        config.check_env(env)
        cache = Cache(config, embedder=embedder)
    return cls(inner, cache, tenant=tenant, env=env)


def _replay(chunks: list[R]) -> Generator[R, None, None]:
    yield from chunks


async def _areplay(chunks: list[R]) -> AsyncGenerator[R, None]:
    for chunk in chunks:
        yield chunk
