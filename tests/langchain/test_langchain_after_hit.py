"""A conversation that goes on after a cache hit stays cacheable: the fields LangChain or a
provider adds to an earlier reply (token usage, response metadata, a tool's raw output) never
enter the key, so they can never make the next prompt fail to revive."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from modelcache_langchain import ModelCache
from modelcache_langchain._convert import parse_prompt


def kind(message: Any) -> str | None:
    """How the cache served a reply: 'exact', 'semantic', or None for the model."""
    return message.response_metadata.get("cache_kind")


@pytest.mark.parametrize("how", ["cache=", "set_llm_cache"])
def test_the_turn_after_a_hit_is_cached(
    lc_cache: ModelCache, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    responses = ["Paris.", "About 2 million.", "not cached"]
    if how == "cache=":
        model = FakeListChatModel(responses=responses, cache=lc_cache)
    else:
        set_llm_cache(lc_cache)
        model = FakeListChatModel(responses=responses)

    ask = [HumanMessage("What is the capital of France?")]
    assert kind(model.invoke(ask)) is None
    hit = model.invoke(ask)
    assert (kind(hit), hit.content) == ("exact", "Paris.")
    assert hit.usage_metadata == {"total_cost": 0}  # what LangChain sets on a hit
    follow = [*ask, hit, HumanMessage("How many people live there?")]
    first = model.invoke(follow)
    assert (kind(first), first.content) == (None, "About 2 million.")
    again = model.invoke(follow)
    assert (kind(again), again.content) == ("exact", "About 2 million.")
    assert "not cacheable" not in caplog.text


def test_fields_that_never_key_a_prompt_never_make_it_uncacheable() -> None:
    lock = threading.Lock()  # not serialisable: dumps writes a "not_implemented" node
    reply = AIMessage(
        "Checking.",
        tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "a"}],
        usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        response_metadata={"total_cost": 0, "client": lock},
        additional_kwargs={"parsed": lock},
    )
    result = ToolMessage("21C", tool_call_id="a", artifact=lock)
    plain_reply = AIMessage(
        "Checking.", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "a"}]
    )
    ask = HumanMessage("Is it warm in Paris?")
    more = HumanMessage("And tomorrow?")
    with_extras = parse_prompt(dumps([ask, reply, result, more]))
    plain = parse_prompt(dumps([ask, plain_reply, ToolMessage("21C", tool_call_id="a"), more]))
    assert with_extras == plain


def test_a_tool_call_only_in_additional_kwargs_still_keys_the_reply() -> None:
    # a reply serialised with its OpenAI-style tool calls in additional_kwargs only (no
    # tool_calls field): the message's validator reads them from there, so they are kept
    raw = [
        {"id": "a", "type": "function", "function": {"name": "weather", "arguments": '{"c": 1}'}}
    ]
    reply = AIMessage("", additional_kwargs={"tool_calls": raw, "refusal": None})
    messages = json.loads(dumps([HumanMessage("Weather?"), reply, HumanMessage("Why?")]))
    for field in ("tool_calls", "invalid_tool_calls"):
        del messages[1]["kwargs"][field]
    parsed = parse_prompt(json.dumps(messages))
    assert parsed.history[1].content == '[tool_call weather {"c": 1}]'
