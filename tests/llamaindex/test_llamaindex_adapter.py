"""CachedLLM basics: wrapping, metadata, partitions, hit marks, fault fallback, tracing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import (
    ChatMessage,
    ImageBlock,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.llms import LLM, MockLLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.prompts import PromptTemplate
from llamaindex_mocks import CountingFunctionLLM, RecordingLLM
from loop_support import SlowEmbedder, ticks_during

import modelcache_llamaindex
from modelcache import Cache, CacheConfig, ConfigError, FakeEmbedder, LlamaIndexEmbedder
from modelcache_llamaindex import CachedFunctionCallingLLM, CachedLLM, wrap_llm


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def test_public_api() -> None:
    assert modelcache_llamaindex.__all__ == ["CachedFunctionCallingLLM", "CachedLLM", "wrap_llm"]


def test_wrap_llm_picks_the_variant_and_delegates_metadata(cache: Cache) -> None:
    plain = wrap_llm(RecordingLLM(model="rec-7", chat_model=True), cache)
    assert type(plain) is CachedLLM and isinstance(plain, LLM)
    assert not isinstance(plain, FunctionCallingLLM)
    assert plain.metadata.model_name == "rec-7" and plain.metadata.is_chat_model

    tools = wrap_llm(CountingFunctionLLM(), cache, tenant="acme", env="dev")
    assert isinstance(tools, CachedFunctionCallingLLM) and isinstance(tools, FunctionCallingLLM)
    assert isinstance(tools, CachedLLM)
    assert tools.metadata == tools.llm.metadata and tools.metadata.is_function_calling_model
    assert (tools.tenant, tools.env) == ("acme", "dev")

    rewrapped = wrap_llm(plain, cache, tenant="other")
    assert rewrapped.llm is plain.llm  # never cached twice


def test_configuration_errors_surface_at_wrap_time(cache: Cache) -> None:
    with pytest.raises(ConfigError):
        wrap_llm(MockLLM(), cache, env="moon")
    with pytest.raises(ConfigError):
        wrap_llm(MockLLM(), cache, tenant="")


def test_prompt_settings_are_inherited_for_predict(cache: Cache) -> None:
    inner = RecordingLLM(system_prompt="Answer briefly.")
    llm = wrap_llm(inner, cache)
    assert llm.system_prompt == "Answer briefly."
    assert llm.callback_manager is inner.callback_manager
    prompt = PromptTemplate("Tell me about {topic}.")
    first = llm.predict(prompt, topic="caching")
    assert llm.predict(prompt, topic="caching") == first
    assert len(inner.calls) == 1 and inner.calls[0].startswith("Answer briefly.")


def test_complete_miss_then_marked_hit(cache: Cache) -> None:
    inner = RecordingLLM()
    llm = wrap_llm(inner, cache)
    miss = llm.complete("What is the capital of France?")
    assert "cache_hit" not in miss.additional_kwargs
    hit = llm.complete("What is the capital of France?")
    assert hit.text == miss.text and len(inner.calls) == 1
    assert hit.additional_kwargs["cache_hit"] is True
    assert hit.additional_kwargs["cache_similarity"] == pytest.approx(1.0)
    assert hit.additional_kwargs["cache_kind"] == "exact"


def test_chat_round_trips_message_with_tool_calls(cache: Cache) -> None:
    inner = CountingFunctionLLM()
    llm = wrap_llm(inner, cache)
    reply = ChatMessage(
        role="assistant",
        blocks=[
            TextBlock(text="Let me add."),
            ToolCallBlock(tool_call_id="call-1", tool_name="add", tool_kwargs={"a": 2}),
        ],
        additional_kwargs={"vendor": {"trace": [1, 2]}},
    )
    inner.response_generator = lambda messages, **kw: reply
    first = llm.chat([user("Add two and three please")])
    second = llm.chat([user("Add two and three please")])
    assert inner.calls == 1
    assert second.additional_kwargs["cache_hit"] is True
    assert second.message == first.message == reply
    assert "cache_hit" not in second.message.additional_kwargs  # providers never see the marks
    selection = llm.get_tool_calls_from_response(second)
    assert [(s.tool_id, s.tool_name, s.tool_kwargs) for s in selection] == [
        ("call-1", "add", {"a": 2})
    ]


def test_answers_are_json_with_role_and_content(cache: Cache) -> None:
    llm = wrap_llm(RecordingLLM(), cache)
    response = llm.chat([user("Why is the sky blue?")])
    llm.complete("Why is the sky blue?")
    answers = {row["params"]["kind"]: row["answer"] for row in cache.export()}
    assert answers["chat"]["content"] == response.message.content
    assert answers["chat"]["role"] == "assistant"
    assert answers["chat"]["message"]["blocks"][0]["text"] == response.message.content
    assert answers["complete"]["text"].startswith("Answer 2:")


def test_system_prompt_and_history_separate_answers(cache: Cache) -> None:
    inner = RecordingLLM()
    llm = wrap_llm(inner, cache)
    # "it" points back into the conversation: never a standalone question whatever came before
    question = user("How many moons does it have?")
    llm.chat([question])
    llm.chat([ChatMessage(role="system", content="You are a pirate."), question])
    llm.chat(
        [user("Tell me about Jupiter."), ChatMessage(role="assistant", content="Big."), question]
    )
    assert len(inner.calls) == 3
    hit = llm.chat([ChatMessage(role="system", content="You are a pirate."), question])
    assert hit.additional_kwargs["cache_hit"] and len(inner.calls) == 3


def test_partition_holds_model_settings_and_call_kwargs(cache: Cache) -> None:
    inner = RecordingLLM()
    llm = wrap_llm(inner, cache)
    others = [RecordingLLM(temperature=0.9), RecordingLLM(model="recording-2"), RecordingLLM()]
    ask = "Summarise the plot of Hamlet."
    llm.complete(ask)
    wrap_llm(others[0], cache).complete(ask)
    wrap_llm(others[1], cache).complete(ask)
    llm.complete(ask, top_p=0.5)
    wrap_llm(others[2], cache, tenant="someone-else").complete(ask)
    llm.chat([user(ask)])
    assert len(inner.calls) == 3 and all(len(m.calls) == 1 for m in others)  # all misses
    # A different API key is the same model: it hits, and no secret is ever stored.
    rotated = wrap_llm(RecordingLLM(api_key="sk-rotated"), cache)
    assert rotated.complete(ask).additional_kwargs["cache_hit"]
    stats = cache.stats()
    dumped = json.dumps([stats["partitions"], list(cache.export())])
    assert "sk-" not in dumped and "api_key" not in dumped
    models = {p["model"] for p in stats["partitions"]}
    assert models == {"RecordingLLM:recording-1", "RecordingLLM:recording-2"}
    params = next(p["params"] for p in stats["partitions"] if p["params"].get("top_p") == 0.5)
    assert params["temperature"] == 0.1 and params["kind"] == "complete"


def test_tool_schemas_enter_the_partition(cache: Cache) -> None:
    from llama_index.core.tools import FunctionTool

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    def mul(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    inner = CountingFunctionLLM()
    llm = wrap_llm(inner, cache)
    for tool in (add, add, mul):
        llm.chat_with_tools([FunctionTool.from_defaults(tool)], user_msg="Combine 2 and 3")
    assert inner.calls == 2
    schemas = [p["params"]["tools"][0]["function"]["name"] for p in cache.stats()["partitions"]]
    assert sorted(schemas) == ["add", "mul"]


def test_turns_after_the_question_match_exactly_only(cache: Cache) -> None:
    inner = RecordingLLM()
    llm = wrap_llm(inner, cache)
    call = ChatMessage(
        role="assistant",
        blocks=[
            ToolCallBlock(tool_call_id="c1", tool_name="weather", tool_kwargs={"city": "Oslo"})
        ],
    )

    def conversation(result: str) -> list[ChatMessage]:
        tool = ChatMessage(role="tool", content=result, additional_kwargs={"tool_call_id": "c1"})
        return [user("What is the weather in Oslo today?"), call, tool]

    llm.chat(conversation("sunny and 21 degrees"))
    assert llm.chat(conversation("sunny and 21 degrees")).additional_kwargs["cache_hit"]
    rainy = llm.chat(conversation("heavy rain and 9 degrees"))
    assert "cache_hit" not in rainy.additional_kwargs and len(inner.calls) == 2


def test_media_and_empty_requests_bypass_the_cache(cache: Cache) -> None:
    inner = RecordingLLM()
    llm = wrap_llm(inner, cache)
    picture = ChatMessage(
        role="user",
        blocks=[TextBlock(text="What is in this picture?"), ImageBlock(image=b"GIF89a")],
    )
    llm.chat([picture])
    llm.chat([picture])
    llm.chat([ChatMessage(role="system", content="Only a system prompt")])
    assert len(inner.calls) == 3 and cache.stats()["entries"] == 0
    assert llm.fault_count == 0


def test_cache_faults_fall_back_to_the_model(
    cache: Cache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cache, "lookup", broken)
    monkeypatch.setattr(cache, "insert", broken)
    inner = RecordingLLM()
    llm = wrap_llm(inner, cache)
    with caplog.at_level(logging.WARNING, logger="modelcache.llamaindex"):
        response = llm.complete("Is the cache up?")
        streamed = list(llm.stream_complete("Is the cache up?"))
    assert response.text.startswith("Answer 1") and streamed[-1].text.startswith("Answer 2")
    assert llm.fault_count == 4
    # the exception's type only: its text may quote the prompt
    assert "lookup failed" in caplog.text and "RuntimeError" in caplog.text
    assert "disk on fire" not in caplog.text


async def test_async_cache_faults_fall_back_to_the_model(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("network partition")

    monkeypatch.setattr(cache, "alookup", broken)
    monkeypatch.setattr(cache, "ainsert", broken)
    llm = wrap_llm(RecordingLLM(), cache)
    assert (await llm.acomplete("Still there?")).text.startswith("Answer 1")
    assert llm.fault_count == 2


async def test_async_endpoints_keep_the_event_loop_running(tmp_path: Path) -> None:
    """The cache's lookup and store of acomplete / achat run in a worker thread: a slow
    embedding leaves the loop free."""
    config = CacheConfig(path=str(tmp_path), lookup_timeout=10.0)
    with Cache(config, embedder=SlowEmbedder()) as engine:
        llm = wrap_llm(RecordingLLM(), engine)
        # a miss: the lookup and the store each embed once
        _, ticks, _ = await ticks_during(llm.acomplete("Is the loop free?"))
        assert ticks >= 20, f"loop blocked during acomplete: {ticks} ticks"
        _, ticks, _ = await ticks_during(llm.achat([user("Is the loop still free?")]))
        assert ticks >= 20, f"loop blocked during achat: {ticks} ticks"


def test_corrupt_stored_answer_is_a_miss(cache: Cache) -> None:
    inner = RecordingLLM()
    llm = wrap_llm(inner, cache)
    llm.complete("What is two plus two?")
    for row in cache.export():
        request = modelcache_request(row)
        cache.insert(request, {"unexpected": 1})
    response = llm.complete("What is two plus two?")
    assert len(inner.calls) == 2 and llm.fault_count == 1
    assert response.text.startswith("Answer 2")


def modelcache_request(row: dict) -> object:
    from modelcache import Request

    return Request.from_text(
        row["query"], tenant=row["tenant"], env=row["env"], model=row["model"], params=row["params"]
    )


def test_callbacks_trace_hits(cache: Cache) -> None:
    handler = LlamaDebugHandler()
    inner = RecordingLLM(callback_manager=CallbackManager([handler]))
    llm = wrap_llm(inner, cache)
    llm.complete("Trace me, please.")
    handler.flush_event_logs()
    llm.complete("Trace me, please.")
    pairs = handler.get_llm_inputs_outputs()
    assert len(pairs) == 1  # the hit never reached the wrapped model
    completion = pairs[0][1].payload[EventPayload.COMPLETION]
    assert completion.additional_kwargs["cache_hit"] is True
    assert pairs[0][0].event_type == CBEventType.LLM
    assert pairs[0][0].payload[EventPayload.SERIALIZED]["cached_by"] == "CachedLLM"


# ---- settings under the names other caches' users know ------------------------------------------
class _WordEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model over the fake embedder, as a user's own model would be."""

    def _vector(self, text: str) -> list[float]:
        return FakeEmbedder().embed([text])[0].tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)


def test_wrap_llm_builds_an_engine_from_familiar_settings(tmp_path: Path) -> None:
    cached = wrap_llm(MockLLM(), path=str(tmp_path), embed_model=_WordEmbedding(), ttl=60)
    try:
        assert cached.cache.config.ttl_seconds == 60
        assert isinstance(cached.cache.embedder, LlamaIndexEmbedder)
        cached.complete("How do I reset my password?")
        hit = cached.complete("How do I reset my password please?")
        assert hit.additional_kwargs["cache_kind"] == "semantic"
    finally:
        cached.cache.close()


def test_wrap_llm_refuses_distance_thresholds_and_mixed_arguments(
    cache: Cache, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"similarity_threshold.*0\.85"):
        wrap_llm(MockLLM(), path=str(tmp_path / "never"), distance_threshold=0.15)
    with pytest.raises(ConfigError, match="not both"):
        wrap_llm(MockLLM(), cache, ttl=60)
    with pytest.raises(ConfigError):
        wrap_llm(MockLLM(), path=str(tmp_path / "never"), env="production")
    assert not (tmp_path / "never").exists()
