"""Sync / async / streaming parity, stream pass-through, replay and aborted streams."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse
from llamaindex_mocks import RecordingLLM

from modelcache import Cache
from modelcache_llamaindex import CachedLLM, wrap_llm

CHAT_WAYS = ["chat", "stream_chat", "achat", "astream_chat"]
COMPLETE_WAYS = ["complete", "stream_complete", "acomplete", "astream_complete"]
QUESTION = "Explain write-ahead logging in two sentences."

Response = ChatResponse | CompletionResponse


async def ask(llm: CachedLLM, way: str, question: str = QUESTION) -> list[Response]:
    """Call one of the eight endpoints; streams are drained into their list of chunks."""
    arg: Any = [ChatMessage(role="user", content=question)] if "chat" in way else question
    method = getattr(llm, way)
    if way in ("chat", "complete"):
        return [method(arg)]
    if way in ("stream_chat", "stream_complete"):
        return list(method(arg))
    if way in ("achat", "acomplete"):
        return [await method(arg)]
    return [chunk async for chunk in await method(arg)]


def text(response: Response) -> str:
    return response.message.content or "" if isinstance(response, ChatResponse) else response.text


def check_stream(chunks: list[Response]) -> None:
    """Deltas add up to the cumulative text of every chunk."""
    sofar = ""
    for chunk in chunks:
        sofar += chunk.delta or ""
        assert text(chunk) == sofar


@pytest.mark.parametrize(
    ("first", "ways"),
    [(way, CHAT_WAYS) for way in CHAT_WAYS] + [(way, COMPLETE_WAYS) for way in COMPLETE_WAYS],
)
async def test_any_endpoint_serves_its_siblings(cache: Cache, first: str, ways: list[str]) -> None:
    inner = RecordingLLM()
    llm = wrap_llm(inner, cache)
    miss = await ask(llm, first)
    expected = text(miss[-1])
    assert "cache_hit" not in miss[-1].additional_kwargs
    for way in ways:
        chunks = await ask(llm, way)
        assert text(chunks[-1]) == expected, way
        assert all(c.additional_kwargs["cache_hit"] is True for c in chunks), way
        if "stream" in way:
            assert len(chunks) > 1
            check_stream(chunks)
    assert len(inner.calls) == 1


async def test_chat_and_complete_do_not_share_answers(cache: Cache) -> None:
    inner = RecordingLLM()
    llm = wrap_llm(inner, cache)
    await ask(llm, "chat")
    await ask(llm, "complete")
    assert len(inner.calls) == 2


def test_streamed_miss_passes_chunks_through_and_stores_at_the_end(cache: Cache) -> None:
    direct = list(RecordingLLM().stream_complete(QUESTION))
    llm = wrap_llm(RecordingLLM(), cache)
    stream = llm.stream_complete(QUESTION)
    first = next(stream)
    assert (first.text, first.delta) == (direct[0].text, direct[0].delta)
    assert cache.stats()["entries"] == 0  # nothing stored while the stream is open
    rest = list(stream)
    assert [(c.text, c.delta) for c in [first, *rest]] == [(c.text, c.delta) for c in direct]
    assert cache.stats()["entries"] == 1


@pytest.mark.parametrize("way", ["stream_chat", "stream_complete"])
def test_aborted_or_failed_stream_stores_nothing(cache: Cache, way: str) -> None:
    inner = RecordingLLM(fail_after=3)
    llm = wrap_llm(inner, cache)
    arg: Any = [ChatMessage(role="user", content=QUESTION)] if "chat" in way else QUESTION
    with pytest.raises(ConnectionError):
        list(getattr(llm, way)(arg))
    inner.fail_after = None
    stream = getattr(llm, way)(arg)
    next(stream)
    stream.close()  # the reader went away after one chunk
    assert cache.stats()["entries"] == 0
    assert list(getattr(llm, way)(arg))[-1].additional_kwargs.get("cache_hit") is None
    assert len(inner.calls) == 3


@pytest.mark.parametrize("way", ["astream_chat", "astream_complete"])
async def test_async_aborted_or_failed_stream_stores_nothing(cache: Cache, way: str) -> None:
    inner = RecordingLLM(fail_after=3)
    llm = wrap_llm(inner, cache)
    arg: Any = [ChatMessage(role="user", content=QUESTION)] if "chat" in way else QUESTION
    with pytest.raises(ConnectionError):
        [chunk async for chunk in await getattr(llm, way)(arg)]
    inner.fail_after = None
    stream = await getattr(llm, way)(arg)
    await stream.__anext__()
    await stream.aclose()
    assert cache.stats()["entries"] == 0
    chunks = [chunk async for chunk in await getattr(llm, way)(arg)]
    assert chunks[-1].additional_kwargs.get("cache_hit") is None
    assert cache.stats()["entries"] == 1 and len(inner.calls) == 3


async def test_empty_answers_are_not_cached(cache: Cache) -> None:
    llm = wrap_llm(RecordingLLM(silent=True), cache)
    await ask(llm, "acomplete")
    await ask(llm, "chat")
    assert cache.stats()["entries"] == 0
