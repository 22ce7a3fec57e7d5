"""An AI turn's calls and non-text content blocks key the turn exactly, without their random ids:
a repeat with fresh ids hits, a conversation whose calls differ never shares an answer."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from modelcache_langchain import ModelCache
from modelcache_langchain._convert import parse_prompt

Conversation = Callable[[Any], list[BaseMessage]]


def _id(prefix: str) -> str:
    """A fresh provider id, as every generation gets one."""
    return f"{prefix}{uuid.uuid4().hex}"


def _replies(cache: ModelCache, build: Conversation, one: Any, other: Any) -> list[Any]:
    """What a cached model answers to ``one``, ``other``, then ``one`` again (fresh ids each)."""
    responses: list[BaseMessage] = [AIMessage(t) for t in ("first", "second", "third")]
    model = FakeMessagesListChatModel(responses=responses, cache=cache)
    replies = [model.invoke(build(one)), model.invoke(build(other)), model.invoke(build(one))]
    return [r.content for r in replies]


def _tool_call_conversation(args: dict[str, Any]) -> list[BaseMessage]:
    call_id = _id("call_")
    return [
        HumanMessage("Clean up the orders table for me"),
        AIMessage("", tool_calls=[{"name": "run_sql", "args": args, "id": call_id}]),
        ToolMessage("ok", tool_call_id=call_id),
        AIMessage("Done."),
        HumanMessage("What exactly did you just do?"),
    ]


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (
            {"sql": "DELETE FROM orders WHERE status = 'cancelled'"},
            {"sql": "DELETE FROM orders WHERE status = 'cancelled' OR 1=1"},
        ),
        ({"table": "orders", "dry_run": True}, {"table": "orders"}),
        ({"sku": "aB3x"}, {"sku": "Ab3X"}),
    ],
)
def test_tool_call_arguments_key_the_turn(
    lc_cache: ModelCache, one: dict[str, Any], other: dict[str, Any]
) -> None:
    replies = _replies(lc_cache, _tool_call_conversation, one, other)
    assert replies == ["first", "second", "first"]


def test_invalid_tool_call_arguments_key_the_turn(lc_cache: ModelCache) -> None:
    def build(args: str) -> list[BaseMessage]:
        call = {"name": "run_sql", "args": args, "id": _id("call_"), "error": "bad JSON"}
        return [
            HumanMessage("Clean up the orders table for me"),
            AIMessage("", invalid_tool_calls=[call]),
            HumanMessage("What went wrong?"),
        ]

    assert _replies(lc_cache, build, '{"sql": "DROP', '{"sql": "DELETE') == [
        "first",
        "second",
        "first",
    ]


def _anthropic_conversation(args: dict[str, Any]) -> list[BaseMessage]:
    call_id = _id("toolu_")
    reply = AIMessage(
        [
            {"type": "thinking", "thinking": "The user wants a lookup.", "signature": _id("")},
            {"type": "text", "text": "Let me look that up."},
            {"type": "tool_use", "id": call_id, "name": "find_item", "input": args},
        ],
        tool_calls=[{"name": "find_item", "args": args, "id": call_id}],
    )
    return [
        HumanMessage("Is the item in stock?"),
        reply,
        ToolMessage("3 left", tool_call_id=call_id),
        AIMessage("Yes, 3 are left."),
        HumanMessage("When will more arrive?"),
    ]


def test_a_repeat_after_tool_use_blocks_hits_and_their_inputs_key_it(
    lc_cache: ModelCache,
) -> None:
    replies = _replies(lc_cache, _anthropic_conversation, {"sku": "aB3x"}, {"sku": "Ab3X"})
    assert replies == ["first", "second", "first"]


def test_tool_result_blocks_key_the_call_they_answer_not_its_id(lc_cache: ModelCache) -> None:
    def build(order: tuple[str, str]) -> list[BaseMessage]:
        ids = [_id("toolu_"), _id("toolu_")]
        calls = [
            {"name": "temp", "args": {"city": c}, "id": i} for c, i in zip(order, ids, strict=True)
        ]
        results = [{"type": "tool_result", "tool_use_id": i, "content": "18C"} for i in ids[:1]]
        return [
            HumanMessage("Which is warmer, Paris or London?"),
            AIMessage("", tool_calls=calls),
            HumanMessage([*results, {"type": "text", "text": "Paris first."}]),
        ]

    assert _replies(lc_cache, build, ("Paris", "London"), ("London", "Paris")) == [
        "first",
        "second",
        "first",
    ]


def _reasoning_conversation(question: str) -> list[BaseMessage]:
    reply = AIMessage(
        [
            {"type": "reasoning", "id": _id("rs_"), "summary": [], "encrypted_content": _id("")},
            {"type": "text", "text": "The capital of France is Paris.", "id": _id("msg_")},
        ]
    )
    return [HumanMessage("What is the capital of France?"), reply, HumanMessage(question)]


def test_a_repeat_after_a_reasoning_reply_hits(lc_cache: ModelCache) -> None:
    replies = _replies(
        lc_cache,
        _reasoning_conversation,
        "And what is its population?",
        "And what is its area?",
    )
    assert replies == ["first", "second", "first"]


def test_non_text_blocks_key_the_turn_but_never_reach_its_text() -> None:
    def image(url: str) -> str:
        block = {"type": "image_url", "image_url": {"url": url}, "id": _id("img_")}
        return dumps([HumanMessage([block]), AIMessage("A cat."), HumanMessage("What colour?")])

    cat, dog = (
        parse_prompt(image("https://x.test/cat.png")),
        parse_prompt(image("https://x.test/dog.png")),
    )
    assert cat.history[0].content == dog.history[0].content == "[image_url]"
    assert cat.history[0].attachments != dog.history[0].attachments
    assert parse_prompt(image("https://x.test/cat.png")) == cat  # the block's own id is not keyed
    assert not re.search(r"[0-9a-f]{16}", cat.history[0].content)
