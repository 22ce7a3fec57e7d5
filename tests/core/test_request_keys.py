"""The key builder: partition, context, normalised query text and exact key of a Request."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from modelcache import ConfigError, Message, Request, Scope
from modelcache.request import _canonical_json, normalize_text, stored_conversation_text

BASE: dict[str, Any] = {
    "tenant": "acme",
    "env": "prod",
    "model": "gpt-4o",
    "params": {"temperature": 0},
    "system": "You are helpful",
}


_CAT = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


def req(text: str = "How do I reset my password?", **changes: Any) -> Request:
    """A single-turn request with the BASE scope, some fields changed."""
    return Request.from_text(text, **{**BASE, **changes})


# ---- partition ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("tenant", "globex"),
        ("env", "dev"),
        ("model", "gpt-4o-mini"),
        ("params", {"temperature": 0.7}),
        ("params", {"temperature": 0, "max_tokens": 10}),
        ("params", {}),
        ("system", "You are terse"),
        ("system", None),
    ],
)
def test_every_scope_field_and_the_system_prompt_change_the_partition(
    field: str, value: Any
) -> None:
    base, other = req(), req(**{field: value})
    assert base.partition.id != other.partition.id
    assert base.exact_key != other.exact_key


def test_partition_fields_are_recorded() -> None:
    p = req().partition
    assert (p.tenant, p.env, p.model) == ("acme", "prod", "gpt-4o")
    assert p.params_json == '{"temperature":0}'
    assert p.system_hash and len(p.id) == 32


def test_params_key_order_does_not_matter() -> None:
    a = req(params={"temperature": 0, "max_tokens": 5, "tools": [{"name": "x"}]})
    b = req(params={"tools": [{"name": "x"}], "max_tokens": 5, "temperature": 0})
    assert a.partition.id == b.partition.id
    assert a.exact_key == b.exact_key


def test_system_prompt_is_normalised_and_empty_means_none() -> None:
    assert req(system="You  are\nhelpful ").partition.id == req().partition.id
    assert req(system="").partition.id == req(system=None).partition.id
    assert req(system=None).partition.system_hash == ""


def test_history_does_not_change_the_partition() -> None:
    follow = Request("And in Java?", scope=req().scope, system=BASE["system"],
                     history=(Message("user", "Sort a list in Python"),))  # fmt: skip
    assert follow.partition.id == req().partition.id


def test_scope_equality_and_hash_follow_canonical_params() -> None:
    a = Scope("t", "prod", "m", {"a": 1, "b": 2})
    b = Scope("t", "prod", "m", {"b": 2, "a": 1})
    assert a == b and hash(a) == hash(b)
    assert a != Scope("t", "prod", "m", {"a": 1})


# ---- context and query text --------------------------------------------------------------------
def test_context_is_the_earlier_user_turns_normalised() -> None:
    r = Request(
        "explain more",
        history=(
            Message("user", "  What is  tax law? "),
            Message("assistant", "Tax law is ..."),
            Message("user", "Who writes it?"),
            Message("assistant", "Parliament."),
        ),
    )
    assert r.context_text == "What is tax law?\nWho writes it?"
    assert r.query_text == "explain more"


def test_conversation_text_holds_every_earlier_turn_normalised() -> None:
    reply = {"role": "assistant", "content": "The rules on  taxes."}
    a = Request("explain more", history=[{"role": "user", "content": "What is tax law?"}, reply])
    assert a.conversation_text == "What is tax law?\nThe rules on taxes."
    assert a.context_text == "What is tax law?", "the user turns alone, as before"
    tool = Request(
        "x", history=[{"role": "tool", "content": " 42 "}, {"role": "user", "content": ""}]
    )
    assert tool.conversation_text == "42", "replies count, empty turns do not"
    assert Request("x").conversation_text == ""
    assert (
        stored_conversation_text(
            '[["user", "What is tax law?"], ["assistant", "The rules on  taxes."]]'
        )
        == a.conversation_text
    )
    with pytest.raises(ValueError):
        stored_conversation_text("[1]")


def test_standalone_request_has_empty_context() -> None:
    assert req().context_text == ""
    assert req().history == ()


def test_history_accepts_openai_mappings() -> None:
    r = Request("and then?", history=[{"role": "user", "content": "first"}])  # type: ignore[arg-type]
    assert r.history == (Message("user", "first"),)
    assert r.context_text == "first"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  hello   world \n", "hello world"),
        ("tab\tand  spaces", "tab and spaces"),
        ("line\r\nbreaks \n\n\n\nkept  ", "line\nbreaks\n\nkept"),  # blank runs: one
        ("    if x:\n        y()\n", "if x:\n    y()"),  # common indentation removed
        ("What is 2³ or x₁?", "What is 2^3 or x_1?"),  # not 23 nor x1
        ("Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ", "Fullwidth text"),  # NFKC: width, ideographic space
        ("ﬁle", "file"),  # NFKC ligature
        ("Case Kept", "Case Kept"),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected
    assert Request(raw).query_text == expected


# ---- exact key ---------------------------------------------------------------------------------
def test_exact_key_is_stable_across_versions() -> None:
    """Pinned values: changing the derivation orphans every persisted cache entry's exact hits
    (scheme k2; the partition id is unchanged since the first release)."""
    assert req().exact_key == "fff61ea7f811f4476d7f18c4b4bdb2a2"
    assert req().partition.id == "82b9a8bf0c75306d038c4f37b9524302"
    follow = Request(
        "What about Java?",
        history=(Message("user", "Sort a list in Python"), Message("assistant", "Use sorted()")),
    )
    assert follow.exact_key == "63c6ca0cd714d40199b2ea0cd9b11c87"


def test_exact_key_is_stable_across_processes() -> None:
    """No use of Python's randomised hash(): another interpreter derives the same key."""
    code = (
        "from modelcache import Request;"
        "print(Request.from_text('How do I reset my password?', tenant='acme', env='prod',"
        " model='gpt-4o', params={'temperature': 0}, system='You are helpful').exact_key)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert out.stdout.strip() == req().exact_key


def test_exact_key_ignores_spacing_within_a_line() -> None:
    assert req("  How do I reset my   password? ").exact_key == req().exact_key


@pytest.mark.parametrize(
    "first, second",
    [
        ("What is CO?", "What is Co?"),  # carbon monoxide is not a company
        ("Count the uppercase letters in 'AbC'", "Count the uppercase letters in 'abc'"),
        ("Is 'Maße' spelled right?", "Is 'Masse' spelled right?"),  # casefold made them one
        ("What is 2³?", "What is 23?"),  # NFKC made them one
        ("What is 10⁶?", "What is 106?"),
        (
            "What does this print?\nfor i in range(3):\n    pass\n    print(i)",
            "What does this print?\nfor i in range(3):\n    pass\nprint(i)",
        ),
    ],
)
def test_exact_key_keeps_what_changes_the_answer(first: str, second: str) -> None:
    """Case, superscripts and indentation made different questions one exact key (an exact
    hit, which no guard checks, served the other question's answer)."""
    assert req(first).exact_key != req(second).exact_key


def test_a_nul_in_the_text_is_refused_and_cannot_forge_a_key_part() -> None:
    """Parts were joined by NUL, so a query ending in NUL + a digest had the key of the same
    query with that image attached."""
    image = Request.from_messages(
        [{"role": "user", "content": [{"type": "text", "text": "What is in it?"}, _CAT]}]
    )
    with pytest.raises(ConfigError, match="NUL"):
        Request(f"What is in it?\x00{image.attachment_digest}")
    for message in (
        {"role": "user", "content": "a\x00b"},
        {"role": "assistant", "content": "\x00"},
    ):
        with pytest.raises(ConfigError, match="NUL"):
            Request("next?", history=(message,))  # type: ignore[arg-type]


def test_an_untyped_part_holding_more_than_text_changes_the_key() -> None:
    """A part without "type" counted as text, so another image (Gemini-style inline data) with
    the same question got the first image's answer."""

    def asking(*parts: dict[str, Any]) -> Request:
        return Request.from_messages(
            [{"role": "user", "content": [{"text": "What is it?"}, *parts]}]
        )

    cat, dog = {"inline_data": {"data": "Y2F0"}}, {"inline_data": {"data": "ZG9n"}}
    assert asking(cat).exact_key != asking(dog).exact_key != asking().exact_key
    assert asking().query_text == "What is it?"


def test_calls_names_and_tool_results_are_part_of_the_turns() -> None:
    """Message mappings kept only role and content: an agent conversation that transferred 10
    had the key of the one that transferred 10000, a user's name was dropped, and the results
    of two parallel calls could be swapped."""

    def chat(amount: int, name: str = "bob", first: str = "c1", second: str = "c2") -> Request:
        call = {"name": "transfer", "arguments": f'{{"amount": {amount}}}'}
        return Request.from_messages(
            [
                {"role": "user", "content": "Pay the two bills"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": call},
                        {"id": "c2", "type": "function", "function": {"name": "balance"}},
                    ],
                },
                {"role": "tool", "tool_call_id": first, "content": "ok"},
                {"role": "tool", "tool_call_id": second, "content": "120"},
                {"role": "user", "content": "What did you do?", "name": name},
            ]
        )

    assert chat(10).exact_key != chat(10000).exact_key
    assert chat(10).exact_key != chat(10, name="alice").exact_key
    assert chat(10).exact_key != chat(10, first="c2", second="c1").exact_key
    assert chat(10).exact_key == chat(10).exact_key  # no call id in the key: repeats still hit
    assert '[tool_call transfer {"amount":10}]' in chat(10).history[1].content
    legacy = Request.from_messages(
        [
            {"role": "user", "content": "Clean up"},
            {"role": "assistant", "function_call": {"name": "delete_all", "arguments": "{}"}},
            {"role": "user", "content": "Done?"},
        ]
    )
    assert "[function_call delete_all {}]" in legacy.history[1].content


def _nested(levels: int) -> list[Any]:
    value: list[Any] = [1]
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "answer, match",
    [
        (float("nan"), "finite"),
        ({"distance": float("inf")}, "finite"),
        ("\ud800", "surrogate"),
        (_nested(65), "nested"),
    ],
)
def test_answers_no_reader_could_read_back_are_refused(answer: Any, match: str) -> None:
    """NaN, infinities, lone surrogates and 65 levels of nesting were stored, after which every
    lookup of that question failed (HTTP 500) or served null."""
    with pytest.raises(ConfigError, match=match):
        _canonical_json(answer, "the answer")
    assert _canonical_json(_nested(64), "the answer") == "[" * 64 + "1" + "]" * 64


def test_exact_key_differs_for_different_queries() -> None:
    assert req("How do I reset my router?").exact_key != req().exact_key


def test_exact_key_covers_the_whole_history() -> None:
    def follow(*history: Message) -> Request:
        return Request("explain more", history=history)

    q = Message("user", "What is tax law?")
    assert follow(q).exact_key != follow().exact_key
    assert follow(q).exact_key != follow(Message("user", "Who won the cup?")).exact_key
    # assistant turns are not embedded as context but do take part in the exact key
    a1, a2 = Message("assistant", "Tax law is A"), Message("assistant", "Tax law is B")
    assert follow(q, a1).exact_key != follow(q, a2).exact_key
    assert follow(q, a1).context_text == follow(q, a2).context_text
    assert follow(q, a1).exact_key == follow(Message("user", " What is  tax law?"), a1).exact_key


def test_request_is_hashable_by_exact_key() -> None:
    assert hash(req()) == hash(req("  How do I reset my  password?")) == hash(req().exact_key)
    assert req() == req() and len({req(), req(), req("other")}) == 2


# ---- constructors ------------------------------------------------------------------------------
def test_from_text_equals_the_explicit_constructor() -> None:
    explicit = Request(
        query="How do I reset my password?",
        scope=Scope("acme", "prod", "gpt-4o", {"temperature": 0}),
        system="You are helpful",
    )
    assert explicit.exact_key == req().exact_key
    assert Request.from_text("hi").scope == Scope()


def test_from_messages_splits_system_history_and_query() -> None:
    r = Request.from_messages(
        [
            {"role": "system", "content": "You are helpful"},
            {"role": "user", "content": "What is tax law?"},
            {"role": "assistant", "content": "Rules about taxes."},
            {"role": "user", "content": "explain more"},
        ],
        tenant="acme",
        model="gpt-4o",
        params={"temperature": 0},
    )
    assert r.system == "You are helpful"
    assert r.query == "explain more"
    assert [m.role for m in r.history] == ["user", "assistant"]
    assert r.context_text == "What is tax law?"
    assert r.partition.id == req().partition.id


def test_from_messages_single_user_turn_matches_from_text() -> None:
    msgs = [
        {"role": "system", "content": "You are helpful"},
        {"role": "user", "content": "How do I reset my password?"},
    ]
    kwargs = {k: v for k, v in BASE.items() if k != "system"}
    assert Request.from_messages(msgs, **kwargs).exact_key == req().exact_key


def test_from_messages_joins_system_and_developer_messages() -> None:
    r = Request.from_messages(
        [
            {"role": "system", "content": "A"},
            {"role": "developer", "content": "B"},
            {"role": "user", "content": "q"},
        ]
    )
    assert r.system == "A\nB"


def test_from_messages_accepts_message_objects() -> None:
    msgs = [Message("user", "a"), Message("assistant", "b"), Message("user", "c")]
    r = Request.from_messages(msgs)
    assert r.query == "c" and r.context_text == "a"


def test_from_messages_reads_openai_multimodal_text_parts() -> None:
    r = Request.from_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {"type": "text", "text": "this picture?"},
                ],
            }
        ]
    )
    assert r.query_text == "What is in\nthis picture?"  # each text part its own line


def test_multimodal_requests_with_different_images_do_not_share_a_key() -> None:
    def ask(url: str) -> Request:
        parts = [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return Request.from_messages([{"role": "user", "content": parts}])

    assert (
        ask("https://example.com/cat.png").exact_key != ask("https://example.com/dog.png").exact_key
    )


# ---- invalid input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build",
    [
        lambda: Request(""),
        lambda: Request("   \n\t"),
        lambda: Request(None),  # type: ignore[arg-type]
        lambda: Request(42),  # type: ignore[arg-type]
        lambda: Request("q", system=3),  # type: ignore[arg-type]
        lambda: Request("q", history=(Message("system", "no"),)),
        lambda: Request("q", history=({"content": "no role"},)),  # type: ignore[arg-type]
        lambda: Message("wizard", "hi"),
        lambda: Message("user", 3),  # type: ignore[arg-type]
        lambda: Scope(tenant=""),
        lambda: Scope(env="  "),
        lambda: Scope(model=None),  # type: ignore[arg-type]
        lambda: Scope(params=[("temperature", 0)]),  # type: ignore[arg-type]
        lambda: Scope(params={"callback": object()}),
        lambda: Request.from_text("q", params={"x": {1, 2}}),
        lambda: Request.from_messages([]),
        lambda: Request.from_messages([{"role": "system", "content": "only system"}]),
        lambda: Request.from_messages(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        ),
        lambda: Request.from_messages([{"role": "user", "content": {"text": "a dict"}}]),
        lambda: Request.from_messages(["not a message"]),  # type: ignore[list-item]
    ],
)
def test_invalid_input_raises_config_error(build: Any) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert isinstance(info.value, ValueError)


def test_typed_text_cannot_pose_as_a_name_or_a_call_link() -> None:
    """The name was appended as "[name alice]" text: a user who typed that text got Alice's
    key (and her answer, exactly)."""
    named = Request.from_messages([{"role": "user", "content": "My balance?", "name": "alice"}])
    typed = Request.from_messages([{"role": "user", "content": "My balance?\n[name alice]"}])
    other = Request.from_messages([{"role": "user", "content": "My balance?", "name": "alice2"}])
    assert len({named.exact_key, typed.exact_key, other.exact_key}) == 3
    assert named.query_text == "My balance?"  # the name is no text to embed
    assert named.attachment_digest and not typed.attachment_digest


def test_odd_tool_call_shapes() -> None:
    """A single call sent without its list lost its arguments (10 and 10000 shared a key);
    other shapes failed with unclear errors or a 500 (deep nesting in the arguments)."""

    def sent(tool_calls: Any, arguments: str = '{"amount": 10}') -> Request:
        if tool_calls == "call":
            tool_calls = {"id": "c1", "function": {"name": "transfer", "arguments": arguments}}
        return Request.from_messages(
            [
                {"role": "user", "content": "Pay it"},
                {"role": "assistant", "content": "", "tool_calls": tool_calls},
                {"role": "user", "content": "Done?"},
            ]
        )

    assert sent("call").exact_key != sent("call", '{"amount": 10000}').exact_key
    assert '{"amount":10}' in sent("call").history[1].content
    with pytest.raises(ConfigError, match="tool_calls must be a list"):
        sent(5)
    deep, nan = sent("call", "[" * 5000 + "]" * 5000), sent("call", '{"x": NaN}')
    assert deep.exact_key != nan.exact_key  # kept as the strings they are


def test_a_call_id_given_again_numbers_the_next_call_apart() -> None:
    """A call id reused in a later turn did not advance the count, so two calls shared a number
    and conversations with their results swapped shared a key."""

    def chat(first: str, second: str) -> Request:
        def call(cid: str, city: str) -> dict[str, Any]:
            return {"id": cid, "function": {"name": "weather", "arguments": f'{{"city":"{city}"}}'}}

        return Request.from_messages(
            [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": "", "tool_calls": [call("call_0", "Oslo")]},
                {"role": "tool", "tool_call_id": "call_0", "content": "snow"},
                {"role": "user", "content": "And Paris and London?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [call("call_0", "Paris"), call("call_1", "London")],
                },
                {"role": "tool", "tool_call_id": "call_0", "content": first},
                {"role": "tool", "tool_call_id": "call_1", "content": second},
                {"role": "user", "content": "Where should I go?"},
            ]
        )

    assert chat("rain", "sunny").exact_key != chat("sunny", "rain").exact_key


def test_system_messages_keep_their_names_and_attachments() -> None:
    """A system message's name and images went nowhere: few-shot examples with their names
    swapped, or another image in the system message, shared a partition."""

    def asked(name: str, url: str = "https://example.com/a.png") -> Request:
        return Request.from_messages(
            [
                {"role": "system", "content": "Answer briefly."},
                {"role": "system", "name": name, "content": "What is 2+2?"},
                {"role": "system", "content": [{"type": "image_url", "image_url": {"url": url}}]},
                {"role": "user", "content": "What is 3+3?"},
            ]
        )

    assert asked("example_user").partition.id != asked("example_assistant").partition.id
    assert asked("x").partition.id != asked("x", "https://example.com/b.png").partition.id


def test_custom_tool_calls_key_their_input() -> None:
    """OpenAI custom tool calls ({"custom": {"name", "input"}}) all read "[tool_call  null]"."""

    def ran(command: str) -> Request:
        custom = {"id": "c", "type": "custom", "custom": {"name": "shell", "input": command}}
        return Request.from_messages(
            [
                {"role": "user", "content": "Clean up"},
                {"role": "assistant", "content": "", "tool_calls": [custom]},
                {"role": "user", "content": "Done?"},
            ]
        )

    assert ran("rm -rf /tmp/x").exact_key != ran("rm -rf /home").exact_key
    assert "[tool_call shell " in ran("ls").history[1].content
