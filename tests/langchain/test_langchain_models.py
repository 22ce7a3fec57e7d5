"""ModelCache behind LangChain models (langchain-core fakes), modelled on its cache tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pytest
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import FakeListLLM
from langchain_core.language_models.fake_chat_models import (
    FakeMessagesListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration
from langchain_core.runnables import RunnableLambda

from modelcache import Cache
from modelcache_langchain import ModelCache


class ChatModel(FakeMessagesListChatModel):
    """Cycles through ``responses``; ``model`` and ``temperature`` are in its llm_string."""

    model: str = "gpt-4o"
    temperature: float = 0.0

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "temperature": self.temperature}


class SerializableChatModel(ChatModel):
    """A model whose llm_string is its JSON serialisation plus call parameters."""

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True


class SpyCache(ModelCache):
    """Counts every call LangChain makes into the cache (the sync call BaseCache's async
    method makes in its worker thread counts as that async call only)."""

    _in_async: ContextVar[bool] = ContextVar("in_async", default=False)  # the executor copies it

    def __init__(self, engine: Cache) -> None:
        super().__init__(engine)
        self.calls: list[str] = []

    def _count(self, call: str) -> None:
        if not self._in_async.get():
            self.calls.append(call)

    def lookup(self, prompt: str, llm_string: str) -> Any:
        self._count("lookup")
        return super().lookup(prompt, llm_string)

    def update(self, prompt: str, llm_string: str, return_val: Any) -> None:
        self._count("update")
        super().update(prompt, llm_string, return_val)

    async def alookup(self, prompt: str, llm_string: str) -> Any:
        self.calls.append("alookup")
        token = self._in_async.set(True)
        try:
            return await super().alookup(prompt, llm_string)
        finally:
            self._in_async.reset(token)

    async def aupdate(self, prompt: str, llm_string: str, return_val: Any) -> None:
        self.calls.append("aupdate")
        token = self._in_async.set(True)
        try:
            await super().aupdate(prompt, llm_string, return_val)
        finally:
            self._in_async.reset(token)


def chat(*texts: str, **fields: Any) -> ChatModel:
    """A chat model answering ``texts`` in turn."""
    return ChatModel(responses=[AIMessage(t) for t in texts], **fields)


def entries(engine: Cache) -> list[dict[str, Any]]:
    """Every stored entry."""
    return list(engine.export())


@pytest.fixture
def other_engine(make_cache: Callable[..., Cache], tmp_path: Path) -> Cache:
    """A second, independent engine."""
    return make_cache(tmp_path / "other")


# ---- where the cache comes from -----------------------------------------------------------------
def test_local_cache_answers_the_repeat(lc_cache: ModelCache) -> None:
    model = chat("first", "second", cache=lc_cache)
    assert model.invoke("How are you?").content == "first"
    assert model.invoke("How are you?").content == "first"
    assert model.i == 1  # the model ran once


def test_global_cache_is_used(lc_cache: ModelCache) -> None:
    set_llm_cache(lc_cache)
    model = chat("first", "second")
    assert model.invoke("How are you?").content == "first"
    assert model.invoke("How are you?").content == "first"
    assert len(entries(lc_cache.engine)) == 1


def test_local_cache_wins_over_global(engine: Cache, other_engine: Cache) -> None:
    global_cache, local_cache = ModelCache(engine), ModelCache(other_engine)
    set_llm_cache(global_cache)
    model = chat("first", "second", cache=local_cache)
    model.invoke("How are you?")
    assert entries(engine) == []
    assert len(entries(other_engine)) == 1


def test_cache_false_never_touches_the_cache(engine: Cache) -> None:
    spy = SpyCache(engine)
    set_llm_cache(spy)
    model = chat("first", "second", cache=False)
    assert model.invoke("How are you?").content == "first"
    assert model.invoke("How are you?").content == "second"
    assert spy.calls == []
    assert entries(engine) == []


def test_swapping_caches(engine: Cache, other_engine: Cache) -> None:
    first, second = ModelCache(engine), ModelCache(other_engine)
    model = chat("one", "two", "three", cache=first)
    assert model.invoke("hi").content == "one"
    model.cache = second
    assert model.invoke("hi").content == "two"  # a different cache: miss
    model.cache = first
    assert model.invoke("hi").content == "one"  # back: hit
    model.cache = second
    assert model.invoke("hi").content == "two"
    assert model.i == 2


# ---- partitions: model, parameters, system prompt, history ---------------------------------------
def test_other_model_or_temperature_misses(lc_cache: ModelCache) -> None:
    question = "Summarise the release notes"
    assert chat("4o", cache=lc_cache).invoke(question).content == "4o"
    assert chat("mini", model="gpt-4o-mini", cache=lc_cache).invoke(question).content == "mini"
    assert chat("warm", temperature=0.7, cache=lc_cache).invoke(question).content == "warm"
    call_time = chat("kwarg", cache=lc_cache).invoke(question, temperature=0.3)
    assert call_time.content == "kwarg"  # call-time parameters are part of the llm_string too
    # the same configuration hits, however it was set
    assert chat("x", cache=lc_cache).invoke(question).content == "4o"
    assert chat("x", cache=lc_cache).invoke(question, temperature=0.7).content == "warm"
    models = sorted(e["model"] for e in entries(lc_cache.engine))
    assert models == ["gpt-4o", "gpt-4o", "gpt-4o", "gpt-4o-mini"]


def test_serializable_model_llm_string(lc_cache: ModelCache) -> None:
    model = SerializableChatModel(responses=[AIMessage("a"), AIMessage("b")], cache=lc_cache)
    assert "---" in model._get_llm_string()
    assert model.invoke("hi").content == "a"
    assert model.invoke("hi").content == "a"
    assert model.invoke("hi", model="gpt-4o-mini").content == "b"
    assert sorted(e["model"] for e in entries(lc_cache.engine)) == ["gpt-4o", "gpt-4o-mini"]


def test_other_system_prompt_misses(lc_cache: ModelCache) -> None:
    model = chat("pirate", "formal", cache=lc_cache)
    question = HumanMessage("Say hello")
    assert model.invoke([SystemMessage("Talk like a pirate"), question]).content == "pirate"
    assert model.invoke([SystemMessage("Be formal"), question]).content == "formal"
    assert model.invoke([SystemMessage("Talk like a pirate"), question]).content == "pirate"


def test_same_follow_up_after_other_history_misses(lc_cache: ModelCache) -> None:
    model = chat("tax detail", "football detail", cache=lc_cache)
    tax = [HumanMessage("How is capital gains tax computed?"), AIMessage("On the gain.")]
    football = [HumanMessage("Who won the 2014 football world cup?"), AIMessage("Germany.")]
    follow_up = HumanMessage("Explain more")
    assert model.invoke([*tax, follow_up]).content == "tax detail"
    assert model.invoke([*football, follow_up]).content == "football detail"
    assert model.invoke([*tax, follow_up]).content == "tax detail"
    stored = {e["query"] for e in entries(lc_cache.engine)}
    assert stored == {"Explain more"}  # the last user message is keyed, never the JSON


def test_tool_calls_round_trip(lc_cache: ModelCache) -> None:
    call = AIMessage(
        "",
        tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}],
        response_metadata={"finish_reason": "tool_calls"},
    )
    model = FakeMessagesListChatModel(responses=[call, AIMessage("other")], cache=lc_cache)
    first = model.invoke("Weather in Paris?")
    second = model.invoke("Weather in Paris?")
    assert model.i == 1
    assert second.tool_calls == first.tool_calls == call.tool_calls
    assert second.response_metadata["finish_reason"] == "tool_calls"


def test_tool_result_conversation_is_exact_only(lc_cache: ModelCache) -> None:
    """A conversation ending on a tool result hits only on an exact repeat."""
    model = chat("18 degrees", "25 degrees", "let me check", cache=lc_cache)
    ask = HumanMessage("Weather in Paris?")
    call = AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "c1"}])

    def turn(result: str) -> list[Any]:
        return [ask, call, ToolMessage(result, tool_call_id="c1")]

    assert model.invoke(turn('{"celsius": 18}')).content == "18 degrees"
    assert model.invoke(turn('{"celsius": 25}')).content == "25 degrees"
    assert model.invoke(turn('{"celsius": 18}')).content == "18 degrees"
    assert model.invoke([ask]).content == "let me check"  # a tool turn never answers the ask
    assert len(entries(lc_cache.engine)) == 3


# ---- batch, async, streaming -------------------------------------------------------------------
def test_batch(lc_cache: ModelCache) -> None:
    model = chat("a", "b", "c", cache=lc_cache)
    model.invoke("first question")
    outputs = model.batch(["first question", "second question"], config={"max_concurrency": 1})
    assert [o.content for o in outputs] == ["a", "b"]
    assert model.i == 2


async def test_abatch(engine: Cache) -> None:
    spy = SpyCache(engine)
    model = chat("a", "b", "c", cache=spy)
    await model.ainvoke("first question")
    outputs = await model.abatch(["first question", "second question"])
    assert sorted(o.content for o in outputs) == ["a", "b"]
    assert model.i == 2
    assert sorted(spy.calls) == ["alookup"] * 3 + ["aupdate"] * 2  # the async path only


def test_llm_batch_and_cache(lc_cache: ModelCache) -> None:
    llm = FakeListLLM(responses=["r1", "r2", "r3"], cache=lc_cache)
    assert llm.invoke("Tell me a joke") == "r1"
    assert llm.batch(["Tell me a joke", "Tell me a story"]) == ["r1", "r2"]
    assert llm.invoke("Tell me a story") == "r2"
    assert {e["query"] for e in entries(lc_cache.engine)} == {"Tell me a joke", "Tell me a story"}


async def test_astream_events_miss_streams_and_hit_does_not(engine: Cache) -> None:
    """Called inside a runnable (as in agents), a miss streams tokens and is cached; a hit
    returns the whole message at once with no ``on_chat_model_stream`` events."""
    spy = SpyCache(engine)
    model = GenericFakeChatModel(
        messages=iter([AIMessage("hello there friend"), AIMessage("never")]), cache=spy
    )

    async def call(question: str) -> Any:
        return await model.ainvoke(question)

    chain = RunnableLambda(call)

    async def run() -> tuple[list[str], str]:
        tokens, final = [], ""
        async for event in chain.astream_events("Greet me", version="v2"):
            if event["event"] == "on_chat_model_stream":
                tokens.append(event["data"]["chunk"].content)
            elif event["event"] == "on_chat_model_end":
                final = event["data"]["output"].content
        return tokens, final

    tokens, final = await run()
    assert "".join(tokens) == final == "hello there friend"
    assert len(tokens) > 1
    assert spy.calls == ["alookup", "aupdate"]
    tokens, final = await run()
    assert tokens == []
    assert final == "hello there friend"
    assert spy.calls == ["alookup", "aupdate", "alookup"]


async def test_stream_and_astream_bypass_the_cache(engine: Cache) -> None:
    """``.stream()``/``.astream()`` (and ``astream_events`` on the bare model) skip caches."""
    spy = SpyCache(engine)
    model = GenericFakeChatModel(
        messages=iter([AIMessage("one two"), AIMessage("three four"), AIMessage("five")]),
        cache=spy,
    )
    assert "".join(c.content for c in model.stream("hi")) == "one two"
    assert "".join([c.content async for c in model.astream("hi")]) == "three four"
    kinds = [e["event"] async for e in model.astream_events("hi", version="v2")]
    assert "on_chat_model_stream" in kinds
    assert spy.calls == []
    assert entries(engine) == []


async def test_async_invoke_round_trip(lc_cache: ModelCache) -> None:
    model = chat("first", "second", cache=lc_cache)
    assert (await model.ainvoke("How are you?")).content == "first"
    assert (await model.ainvoke("How are you?")).content == "first"
    assert model.invoke("How are you?").content == "first"  # sync and async share entries


# ---- hit markers --------------------------------------------------------------------------------
MARKS = ("cache_hit", "cache_kind", "cache_similarity", "cache_entry_id")


def test_chat_hits_are_marked_in_response_metadata(lc_cache: ModelCache) -> None:
    model = chat("Use the reset link.", "never", cache=lc_cache)
    miss = model.invoke("How do I reset my password?")
    assert not any(key in miss.response_metadata for key in MARKS)
    exact = model.invoke("How do I reset my password?")
    assert exact.response_metadata["cache_hit"] is True
    assert exact.response_metadata["cache_kind"] == "exact"
    assert exact.response_metadata["cache_similarity"] == 1.0
    [entry] = entries(lc_cache.engine)
    assert exact.response_metadata["cache_entry_id"] == entry["id"]
    semantic = model.invoke("How do I reset my password please?")
    assert semantic.content == "Use the reset link."
    assert semantic.response_metadata["cache_kind"] == "semantic"
    assert 0 < semantic.response_metadata["cache_similarity"] < 1
    # what was stored is unchanged: the next exact hit is marked exact, not semantic
    again = model.invoke("How do I reset my password?")
    assert again.response_metadata["cache_kind"] == "exact"
    assert "cache_hit" not in json.dumps(entries(lc_cache.engine)[0]["answer"])


def test_chat_generation_info_is_marked(lc_cache: ModelCache) -> None:
    model = chat("first", cache=lc_cache)
    model.invoke("How are you?")
    result = model.generate([[HumanMessage("How are you?")]])
    info = result.generations[0][0].generation_info
    assert info is not None and info["cache_hit"] is True and info["cache_kind"] == "exact"


async def test_async_chat_hits_are_marked(lc_cache: ModelCache) -> None:
    model = chat("first", cache=lc_cache)
    await model.ainvoke("How are you?")
    hit = await model.ainvoke("How are you?")
    assert hit.response_metadata["cache_hit"] is True


def test_completion_hits_are_marked_in_generation_info(lc_cache: ModelCache) -> None:
    llm = FakeListLLM(responses=["r1", "r2"], cache=lc_cache)
    miss = llm.generate(["Tell me a joke"]).generations[0][0]
    assert not any(key in (miss.generation_info or {}) for key in MARKS)
    hit = llm.generate(["Tell me a joke"]).generations[0][0]
    assert hit.text == "r1"
    assert hit.generation_info is not None
    assert hit.generation_info["cache_hit"] is True
    assert hit.generation_info["cache_kind"] == "exact"


def test_stale_markers_are_never_stored(lc_cache: ModelCache) -> None:
    """A generation that carries a hit's marks (re-stored by an application or another cache
    layer) is stored without them, so a later exact hit reports its own kind."""
    stale = {"cache_hit": True, "cache_kind": "semantic", "cache_similarity": 0.9}
    lc_cache.update(
        "q",
        "llm",
        [
            ChatGeneration(
                message=AIMessage("a", response_metadata={**stale, "model_name": "m"}),
                generation_info={**stale, "finish_reason": "stop"},
            )
        ],
    )
    [generation] = lc_cache.lookup("q", "llm") or []
    assert isinstance(generation, ChatGeneration)
    assert generation.generation_info is not None
    assert generation.generation_info["cache_kind"] == "exact"
    assert generation.generation_info["finish_reason"] == "stop"
    assert generation.message.response_metadata["cache_kind"] == "exact"
    assert generation.message.response_metadata["model_name"] == "m"
    stored = json.dumps(entries(lc_cache.engine)[0]["answer"])
    assert "cache_kind" not in stored and "model_name" in stored


def test_hit_markers_can_be_turned_off(engine: Cache) -> None:
    model = chat("first", cache=ModelCache(engine, hit_markers=False))
    model.invoke("How are you?")
    assert "cache_hit" not in model.invoke("How are you?").response_metadata
