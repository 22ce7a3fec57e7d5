"""End to end: Settings.llm, a query engine over an index, FunctionAgent, a slow model, MiniLM."""

from __future__ import annotations

import time
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.embeddings import MockEmbedding
from llamaindex_mocks import CountingFunctionLLM, RecordingLLM

from modelcache import Cache
from modelcache_llamaindex import CachedFunctionCallingLLM, wrap_llm

DOCS = [
    "ModelCache stores LLM answers in SQL and their query vectors in Chroma.",
    "A request is partitioned by tenant, environment, model, parameters and system prompt.",
    "Exact repeats are answered from SQL without computing an embedding.",
]


@pytest.fixture
def index(llama_settings: Any) -> VectorStoreIndex:
    """A small index with a local mock embedding (no model download)."""
    llama_settings.embed_model = MockEmbedding(embed_dim=8)
    return VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])


def test_query_engine_through_settings_llm(
    cache: Cache, llama_settings: Any, index: VectorStoreIndex
) -> None:
    inner = RecordingLLM()
    llama_settings.llm = wrap_llm(inner, cache)
    question = "Where does ModelCache keep answers?"

    first = index.as_query_engine().query(question)
    calls = len(inner.calls)
    assert calls >= 1
    second = index.as_query_engine().query(question)
    assert str(second) == str(first) and len(inner.calls) == calls

    # The non-streamed miss also serves the streaming engine, replayed token by token.
    streamed = index.as_query_engine(streaming=True).query(question)
    tokens = list(streamed.response_gen)
    assert len(tokens) > 1 and "".join(tokens) == str(first)
    assert len(inner.calls) == calls


def test_streaming_query_engine_miss_then_hit(
    cache: Cache, llama_settings: Any, index: VectorStoreIndex
) -> None:
    inner = RecordingLLM(chat_model=True)
    llama_settings.llm = wrap_llm(inner, cache)
    engine = index.as_query_engine(streaming=True)
    question = "How are exact repeats answered?"
    first = "".join(engine.query(question).response_gen)
    calls = len(inner.calls)
    second = "".join(engine.query(question).response_gen)
    assert second == first and len(inner.calls) == calls
    assert str(index.as_query_engine().query(question)) == first  # and the plain engine hits


@pytest.mark.parametrize("streaming", [True, False])
async def test_function_agent_second_run_hits(cache: Cache, streaming: bool) -> None:
    ran: list[int] = []

    def add(a: int = 2, b: int = 3) -> int:
        """Add two integers."""
        ran.append(a + b)
        return a + b

    inner = CountingFunctionLLM()
    llm = wrap_llm(inner, cache)
    assert isinstance(llm, CachedFunctionCallingLLM)
    agent = FunctionAgent(tools=[add], llm=llm, streaming=streaming, system_prompt="Use tools.")
    first = await agent.run(user_msg="What is 2 + 3?")
    calls = inner.calls
    assert calls == 2 and ran == [5]  # tool call, then the answer after the tool result
    second = await agent.run(user_msg="What is 2 + 3?")
    assert inner.calls == calls  # both model turns came from the cache
    assert ran == [5, 5]  # tools still run: only the model is cached
    assert str(second) == str(first)
    assert [(t.tool_name, t.tool_id) for t in second.tool_calls] == [
        (t.tool_name, t.tool_id)
        for t in first.tool_calls  # replayed call ids included
    ]


def test_slow_model_time_saved(cache: Cache) -> None:
    inner = RecordingLLM(delay=0.4)
    llm = wrap_llm(inner, cache)
    started = time.perf_counter()
    miss = llm.chat([ChatMessage(role="user", content="Write a haiku about caches.")])
    miss_s = time.perf_counter() - started
    started = time.perf_counter()
    hit = llm.chat([ChatMessage(role="user", content="Write a haiku about caches.")])
    hit_s = time.perf_counter() - started
    assert hit.message.content == miss.message.content and len(inner.calls) == 1
    assert miss_s >= 0.4 > 2 * hit_s  # generous: only shows the order of magnitude


@pytest.mark.model
def test_paraphrase_hits_with_the_real_model(real_engine: Cache, tenant: str) -> None:
    inner = RecordingLLM(chat_model=True)
    llm = wrap_llm(inner, real_engine, tenant=tenant)

    def chat(text: str) -> Any:
        return llm.chat([ChatMessage(role="user", content=text)])

    original = chat("How do I reset my password?")
    paraphrase = chat("How can I reset my password?")
    assert paraphrase.message.content == original.message.content
    assert paraphrase.additional_kwargs["cache_kind"] == "semantic"
    assert 0.0 < paraphrase.additional_kwargs["cache_similarity"] < 1.0
    assert "cache_hit" not in chat("How do I delete my account?").additional_kwargs
    assert len(inner.calls) == 2
