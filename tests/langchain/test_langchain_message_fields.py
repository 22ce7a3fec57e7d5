"""Message fields that change the answer without being text (names, tool call ids and status,
legacy function calls, custom roles) key the entry; ordinary conversations keep their keys."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.load import dumps
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from modelcache import Message, Request
from modelcache_langchain import ModelCache
from modelcache_langchain._convert import parse_prompt


def chat(cache: ModelCache, *texts: str) -> FakeMessagesListChatModel:
    """A chat model answering ``texts`` in turn ('first', 'second' by default)."""
    responses: list[BaseMessage] = [AIMessage(t) for t in texts or ("first", "second")]
    return FakeMessagesListChatModel(responses=responses, cache=cache)


def answers(cache: ModelCache, one: list[Any], other: list[Any]) -> list[Any]:
    """What a cached model answers to ``one``, then ``other``, then ``one`` again (a third
    answer, "third", would show that the repeat missed)."""
    model = chat(cache, "first", "second", "third")
    return [model.invoke(one).content, model.invoke(other).content, model.invoke(one).content]


def test_the_name_on_the_question_keys_it(lc_cache: ModelCache) -> None:
    def ask(name: str, text: str = "What is my name?") -> list[Any]:
        return [HumanMessage(text, name=name)]

    assert answers(lc_cache, ask("alice"), ask("bob")) == ["first", "second", "first"]
    # a paraphrase is a hit for the same speaker only
    model = chat(lc_cache, "fresh")
    paraphrase = "Please, what is my name?"
    assert model.invoke(ask("alice", paraphrase)).response_metadata["cache_kind"] == "semantic"
    assert model.invoke(ask("carol", paraphrase)).content == "fresh"


def test_names_in_the_history_key_it(lc_cache: ModelCache) -> None:
    def talk(name: str) -> list[Any]:
        return [
            HumanMessage("I am the one who booked the room.", name=name),
            AIMessage("Noted."),
            HumanMessage("Who booked the room?"),
        ]

    assert answers(lc_cache, talk("alice"), talk("bob")) == ["first", "second", "first"]


def test_legacy_function_call_arguments_key_it(lc_cache: ModelCache) -> None:
    def weather(call: dict[str, str]) -> list[Any]:
        return [
            HumanMessage("What's the weather where my meeting is?"),
            AIMessage("", additional_kwargs={"function_call": call}),
            FunctionMessage(name="get_weather", content="sunny, 21C"),
        ]

    paris = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    london = {"name": "get_weather", "arguments": '{"city": "London"}'}
    assert answers(lc_cache, weather(paris), weather(london)) == ["first", "second", "first"]
    delete = {"name": "delete_all", "arguments": "{}"}
    assert chat(lc_cache, "fresh").invoke(weather(delete)).content == "fresh"
    assert parse_prompt(dumps(weather(paris))).history[1].content == (
        '[function_call get_weather {"city": "Paris"}]'
    )


def test_parallel_tool_results_key_the_call_they_answer(lc_cache: ModelCache) -> None:
    ask = HumanMessage("Which is warmer, Paris or London?")
    calls = AIMessage(
        "",
        tool_calls=[
            {"name": "get_temp", "args": {"city": "Paris"}, "id": "c1"},
            {"name": "get_temp", "args": {"city": "London"}, "id": "c2"},
        ],
    )

    def results(first_id: str, second_id: str) -> list[Any]:
        return [
            ask,
            calls,
            ToolMessage("18C", tool_call_id=first_id),
            ToolMessage("25C", tool_call_id=second_id),
        ]

    assert answers(lc_cache, results("c1", "c2"), results("c2", "c1")) == [
        "first",
        "second",
        "first",
    ]


def test_a_tool_results_status_keys_it(lc_cache: ModelCache) -> None:
    def run(status: str) -> list[Any]:
        return [
            HumanMessage("Run the job"),
            AIMessage("", tool_calls=[{"name": "run", "args": {}, "id": "x"}]),
            ToolMessage("done", tool_call_id="x", status=status),
        ]

    assert answers(lc_cache, run("success"), run("error")) == ["first", "second", "first"]
    # a failed call in the history, then a question
    follow = [*run("error"), AIMessage("It ran."), HumanMessage("Did it work?")]
    assert answers(lc_cache, follow, [*run("success"), *follow[3:]]) == [
        "first",
        "second",
        "first",
    ]


def test_a_custom_role_is_not_a_user(lc_cache: ModelCache) -> None:
    def say(role: str) -> list[Any]:
        return [ChatMessage(role=role, content="Summarise the previous speaker's view")]

    assert answers(lc_cache, say("critic"), say("user")) == ["first", "second", "first"]
    assert chat(lc_cache, "fresh").invoke(say("editor")).content == "fresh"


def test_a_named_system_message_is_another_partition() -> None:
    def system(name: str | None) -> str | None:
        return parse_prompt(
            dumps([SystemMessage("Be brief.", name=name), HumanMessage("Hi")])
        ).system

    assert system(None) == "Be brief."
    assert len({system(None), system("a"), system("b")}) == 3


def test_ordinary_conversations_keep_their_keys() -> None:
    """Fields that are absent or say nothing new add nothing: keys from before stay valid."""
    call = {"name": "lookup", "args": {"q": "x"}, "id": "call_1"}
    messages = [
        SystemMessage("You are terse."),
        HumanMessage("hi"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("found x", tool_call_id="call_1", name="lookup"),  # as LangGraph writes it
        AIMessage("hello"),
        ChatMessage(role="human", content="What is WAL?"),
    ]
    parsed = parse_prompt(dumps(messages))
    assert parsed.attachments == ""
    # only the turn that makes a call carries fields: the call itself
    call_turn = parsed.history[1].attachments
    assert call_turn
    assert [m.attachments for m in parsed.history] == ["", call_turn, "", ""]
    request = Request(query=parsed.query, system=parsed.system, history=parsed.history)
    turns = [("user", "hi", ""), ("assistant", '[tool_call lookup {"q": "x"}]', call_turn)]
    turns += [("tool", "found x", ""), ("assistant", "hello", "")]
    before = Request(
        query="What is WAL?",
        system="You are terse.",
        history=tuple(Message(role, text, attachments=a) for role, text, a in turns),
    )
    assert request.exact_key == before.exact_key
    # the other call id is random: a repeat of the same exchange with fresh ids keys alike
    fresh = [*messages[:2], AIMessage("", tool_calls=[{**call, "id": "call_9"}])]
    fresh += [ToolMessage("found x", tool_call_id="call_9"), *messages[4:]]
    assert parse_prompt(dumps(fresh)) == parsed
