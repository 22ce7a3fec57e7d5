"""What enters a LlamaIndex call's partition and key: settings that change the answer (prompt
formats, token ids, schemas) do, participant names enter the key only, credentials never do."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from llama_index.core.llms import MockLLM
from llama_index.core.prompts import PromptTemplate
from llamaindex_mocks import (
    FRENCH_FORMAT,
    AddressedFormat,
    RecordingLLM,
    TemplatingLLM,
    french_prompt,
    prompt_in,
)
from pydantic import Field, SecretStr

from modelcache import Cache, CacheConfig, FakeEmbedder, Scope
from modelcache_llamaindex import wrap_llm
from modelcache_llamaindex._keys import chat_plan, complete_plan, llm_settings, to_json


def user(text: str, **extra: Any) -> ChatMessage:
    return ChatMessage(role="user", content=text, additional_kwargs=extra)


def chat_key(messages: list[ChatMessage], llm: Any = None, **kwargs: Any) -> str:
    plan = chat_plan(llm or MockLLM(), messages, kwargs, Scope())
    assert plan is not None
    return plan.request.exact_key


def complete_key(llm: Any, prompt: str = "Write a haiku about rain", **kwargs: Any) -> str:
    plan = complete_plan(llm, prompt, False, kwargs, Scope())
    assert plan is not None
    return plan.request.exact_key


def schema(*fields: str) -> dict[str, Any]:
    properties = {name: {"type": "string"} for name in fields}
    return {"type": "json_schema", "schema": {"properties": properties}}


def test_answer_changing_arguments_with_credential_like_names_stay_in_the_key() -> None:
    hi = [user("hi")]
    for name, a, b in [
        ("stop_token_ids", [11], [2]),
        ("eos_token_id", 13, 2),
        ("keywords", ["a"], ["b"]),
        ("response_format", schema("summary", "key_points"), schema("summary")),
    ]:
        assert chat_key(hi, **{name: a}) != chat_key(hi, **{name: b}), name
        setting_a = TemplatingLLM(generate_kwargs={name: a})
        setting_b = TemplatingLLM(generate_kwargs={name: b})
        assert complete_key(setting_a) != complete_key(setting_b), name


def test_a_schema_field_named_like_a_credential_is_a_miss(cache: Cache) -> None:
    points = {"response_format": schema("summary", "key_points")}
    with_points = wrap_llm(TemplatingLLM(generate_kwargs=points), cache)
    without = wrap_llm(TemplatingLLM(generate_kwargs={"response_format": schema("summary")}), cache)
    with_points.complete("Summarise the article")
    assert "cache_hit" not in without.complete("Summarise the article").additional_kwargs


def test_credentials_never_enter_the_partition_and_rotating_them_still_hits(cache: Cache) -> None:
    def model(secret: str) -> TemplatingLLM:
        return TemplatingLLM(
            api_key=secret,
            generate_kwargs={  # the keys of a pass-through dict are the provider's arguments
                "token": secret,
                "extra_headers": {"Authorization": secret},
                "temperature": 0.3,
            },
        )

    first = wrap_llm(model("sk-first-secret"), cache)
    first.complete("Summarise the article", api_key=SecretStr("sk-call"), auth_token="sk-call")
    rotated = wrap_llm(model("sk-other-secret"), cache)
    hit = rotated.complete("Summarise the article", auth_token="sk-other-call")
    assert hit.additional_kwargs["cache_hit"]
    dumped = json.dumps([cache.stats()["partitions"], list(cache.export())])
    assert "sk-" not in dumped and "api_key" not in dumped and "Authorization" not in dumped
    assert '"temperature": 0.3' in dumped


class ProxyLLM(RecordingLLM):
    """The shape of OpenAILike / LiteLLM-style settings: a base URL and pass-through dicts."""

    api_base: str = "https://api.example.com/v1"
    http_options: dict[str, Any] = Field(default_factory=dict)
    additional_kwargs: dict[str, Any] = Field(default_factory=dict)


def proxy(secret: str, host: str = "llm-proxy.internal") -> ProxyLLM:
    headers = {"X-Auth-Token": secret, "Private-Token": secret, "x-functions-key": secret}
    return ProxyLLM(
        api_base=f"https://alice:{secret}@{host}/v1?sig={secret}&api-version=2024-06-01",
        http_options={"headers": headers, "timeout_ms": 500},
        additional_kwargs={
            "extra_body": {"credentials": {"key": secret}, "top_k": 5},
            "extra_query": {"access-key": secret},
        },
    )


def test_credentials_in_urls_headers_and_nested_dicts_never_enter_the_partition(
    cache: Cache,
) -> None:
    first = wrap_llm(proxy("pw-first-1"), cache)
    first.complete("Summarise the article")
    first.complete("What is the capital of France?", api_base="https://bob:pw-call@proxy/v1")
    rotated = wrap_llm(proxy("pw-second-2"), cache)
    assert rotated.complete("Summarise the article").additional_kwargs["cache_hit"]
    again = rotated.complete("What is the capital of France?", api_base="https://bob:pw-x@proxy/v1")
    assert again.additional_kwargs["cache_hit"]
    other_host = wrap_llm(proxy("pw-first-1", host="other-proxy.internal"), cache)
    assert "cache_hit" not in other_host.complete("Summarise the article").additional_kwargs
    dumped = json.dumps([cache.stats()["partitions"], list(cache.export())])
    assert "pw-" not in dumped and "alice" not in dumped and "bob" not in dumped
    assert "llm-proxy.internal/v1" in dumped and "2024-06-01" in dumped and '"top_k": 5' in dumped


def test_schema_fields_named_like_credentials_stay_in_the_key() -> None:
    def answer_format(password_type: str) -> dict[str, Any]:
        properties = {"password": {"type": password_type}, "api_key": {"type": "string"}}
        return {"type": "json_schema", "schema": {"properties": properties}}

    hi = [user("hi")]
    text, number = answer_format("string"), answer_format("integer")
    assert chat_key(hi, response_format=text) != chat_key(hi, response_format=number)
    plain = to_json({"response_format": text, "extra": {"headers": {"x": 1}}}, scrub=True)
    assert set(plain["response_format"]["schema"]["properties"]) == {"password", "api_key"}
    assert plain["extra"] == {}  # headers are credentials, whatever they hold


def test_prompt_formats_enter_the_partition(cache: Cache) -> None:
    question = "Translate to French: good morning"
    french = wrap_llm(TemplatingLLM(completion_to_prompt=prompt_in("French")), cache)
    german = wrap_llm(TemplatingLLM(completion_to_prompt=prompt_in("German")), cache)
    yes_no = PromptTemplate("Reply only with YES or NO. {query_str}")
    wrapped = wrap_llm(TemplatingLLM(query_wrapper_prompt=yes_no), cache)
    first = french.complete(question)
    assert "German" in german.complete(question).text
    assert "YES or NO" in wrapped.complete(question).text
    again = wrap_llm(TemplatingLLM(completion_to_prompt=prompt_in("French")), cache)
    assert again.complete(question).text == first.text  # the same format still hits

    def chat_in(language: str) -> Any:
        return lambda ms: f"Answer in {language}. {ms[-1].content}"

    french_chat = wrap_llm(TemplatingLLM(messages_to_prompt=chat_in("French")), cache)
    german_chat = wrap_llm(TemplatingLLM(messages_to_prompt=chat_in("German")), cache)
    french_chat.chat([user("Say good night")])
    assert "German" in german_chat.chat([user("Say good night")]).message.content


class Language:
    """A prompt format object: a callable whose template is its state."""

    def __init__(self, language: str) -> None:
        self.language = language

    def __call__(self, prompt: str) -> str:
        return f"Answer in {self.language}. {prompt}"

    def format(self, prompt: str) -> str:
        return f"Answer in {self.language}. {prompt}"


def formats_in(language: str) -> list[Any]:
    """The same prompt format in every callable form a user may configure."""
    cached = functools.lru_cache(prompt_in(language))
    captured = Language(language)
    return [
        f"<s>[INST] Answer in {language}. {{}} [/INST]".format,  # a bound C method
        Language(language),
        Language(language).format,
        functools.partial(Language(language)),
        lambda prompt: captured(prompt),
        cached,
        AddressedFormat(f"Answer in {language}. {{}}"),
    ]


def test_prompt_format_callables_are_keyed_by_the_object_they_are_bound_to(cache: Cache) -> None:
    for french, german, french_again in zip(
        formats_in("French"), formats_in("German"), formats_in("French"), strict=True
    ):
        key = complete_key(TemplatingLLM(completion_to_prompt=french))
        assert key != complete_key(TemplatingLLM(completion_to_prompt=german)), french
        assert key == complete_key(TemplatingLLM(completion_to_prompt=french_again)), french
    question = "Translate: good morning"
    fr = wrap_llm(TemplatingLLM(completion_to_prompt="[INST] French. {} [/INST]".format), cache)
    de = wrap_llm(TemplatingLLM(completion_to_prompt="[INST] German. {} [/INST]".format), cache)
    fr.complete(question)
    assert "German" in de.complete(question).text


def test_a_prompt_format_with_no_stable_key_is_not_cached(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = memoryview(b"Answer in French. ")  # C state, and an address in its repr

    def opaque(prompt: str) -> str:
        return bytes(buffer).decode() + prompt

    inner = TemplatingLLM(completion_to_prompt=opaque)
    llm = wrap_llm(inner, cache)
    with caplog.at_level(logging.WARNING, logger="modelcache.llamaindex"):
        for _ in range(3):
            assert "cache_hit" not in llm.complete("Translate: good morning").additional_kwargs
    assert len(inner.calls) == 3 and llm.fault_count == 0
    warnings = [r.getMessage() for r in caplog.records]
    assert (
        len(warnings) == 1 and "memoryview" in warnings[0] and "completion_to_prompt" in warnings[0]
    )


def test_default_prompt_formats_and_model_state_stay_out_of_the_partition() -> None:
    settings = llm_settings(RecordingLLM(calls=["a call"], delay=0.5))
    assert settings == llm_settings(RecordingLLM())
    for name in ("messages_to_prompt", "completion_to_prompt", "query_wrapper_prompt", "calls"):
        assert name not in settings


def test_a_function_digest_is_the_same_in_another_process() -> None:
    here = to_json(french_prompt, scrub=True)
    assert here != to_json(prompt_in("French"), scrub=True)
    assert to_json(prompt_in("French"), scrub=True) == to_json(prompt_in("French"), scrub=True)
    assert to_json(prompt_in("French"), scrub=True) != to_json(prompt_in("German"), scrub=True)
    script = (
        "from llamaindex_mocks import french_prompt\n"
        "from modelcache_llamaindex._keys import to_json\n"
        "print(to_json(french_prompt, scrub=True))\n"
    )
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"  # another set order
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join(sys.path)}
    there = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert there.stdout.strip() == here


def test_an_object_digest_is_the_same_in_another_process() -> None:
    here = to_json(FRENCH_FORMAT, scrub=True)
    assert here == to_json(AddressedFormat("Answer in French. {}"), scrub=True)
    script = (
        "from llamaindex_mocks import FRENCH_FORMAT\n"
        "from modelcache_llamaindex._keys import to_json\n"
        "print(to_json(FRENCH_FORMAT, scrub=True))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    there = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert there.stdout.strip() == here


def test_participant_names_are_part_of_the_key_but_never_of_the_partition() -> None:
    question = "What is my name?"
    alice, bob, nobody = user(question, name="Alice"), user(question, name="Bob"), user(question)
    assert len({chat_key([alice]), chat_key([bob]), chat_key([nobody])}) == 3
    plans = [chat_plan(MockLLM(), [m], {}, Scope()) for m in (alice, bob, nobody)]
    assert len({p.request.partition.id for p in plans if p is not None}) == 1
    for plan in plans:
        assert plan is not None and "Alice" not in repr(plan.request)
    persona = ChatMessage(role="assistant", content="Hello!", additional_kwargs={"name": "Ann"})
    other = ChatMessage(role="assistant", content="Hello!", additional_kwargs={"name": "Bea"})
    assert chat_key([nobody, persona, user("Who greeted me?")]) != chat_key(
        [nobody, other, user("Who greeted me?")]
    )


def test_a_named_question_never_answers_another_participant(cache: Cache) -> None:
    inner = RecordingLLM()
    llm = wrap_llm(inner, cache)
    llm.chat([user("How do I reset my password?", name="maria")])
    for other in ("mario", None):
        extra = {"name": other} if other else {}
        response = llm.chat([user("How do I reset my password please?", **extra)])
        assert "cache_hit" not in response.additional_kwargs
    again = llm.chat([user("How do I reset my password please?", name="maria")])
    assert again.additional_kwargs["cache_kind"] == "semantic" and len(inner.calls) == 3


def test_participant_names_never_multiply_partitions(tmp_path: Path) -> None:
    config = CacheConfig(path=str(tmp_path), max_partitions_per_tenant=2, lookup_timeout=10.0)
    with Cache(config, embedder=FakeEmbedder()) as engine:
        llm = wrap_llm(RecordingLLM(), engine)
        for i in range(4):  # one end user each: OpenAI's `name` field identifies the user
            llm.chat([user("What are your opening hours?", name=f"user{i}")])
        system = ChatMessage(role="system", content="You are the support bot of ACME.")
        llm.chat([system, user("How do I reset my password?")])
        hit = llm.chat([system, user("How do I reset my password?")])
        assert hit.additional_kwargs["cache_hit"] and llm.fault_count == 0
        repeat = llm.chat([user("What are your opening hours?", name="user3")])
        assert repeat.additional_kwargs["cache_hit"]
        rows = [{k: v for k, v in row.items() if k != "answer"} for row in engine.export()]
        assert "user3" not in json.dumps([engine.stats()["partitions"], rows])


def test_tool_results_key_by_the_call_they_answer() -> None:
    def conversation(ids: tuple[str, str], results: tuple[str, str], name: str = "weather") -> Any:
        calls = ChatMessage(
            role="assistant",
            blocks=[
                ToolCallBlock(tool_call_id=ids[0], tool_name="weather", tool_kwargs={"c": "Oslo"}),
                ToolCallBlock(tool_call_id=ids[1], tool_name="weather", tool_kwargs={"c": "Rome"}),
            ],
        )
        tools = [
            ChatMessage(
                role="tool", content="21 degrees", additional_kwargs={"tool_call_id": results[0]}
            ),
            ChatMessage(
                role="tool",
                content="9 degrees",
                additional_kwargs={"tool_call_id": results[1], "name": name},
            ),
        ]
        return [user("Which city is warmer, Oslo or Rome?"), calls, *tools]

    base = chat_key(conversation(("a", "b"), ("a", "b")))
    assert chat_key(conversation(("a", "b"), ("b", "a"))) != base  # results swapped
    assert chat_key(conversation(("x", "y"), ("x", "y"))) == base  # other ids, same pairing
    assert chat_key(conversation(("a", "b"), ("a", "b"), name="forecast")) != base


def _agent_turns(arguments: dict[str, Any], legacy: bool, call_id: str) -> list[ChatMessage]:
    """A question answered after a tool call, its result and a reply; the call as a
    ``ToolCallBlock`` or in the older ``additional_kwargs["tool_calls"]`` form."""
    if legacy:
        function = {"name": "run_query", "arguments": json.dumps(arguments)}
        kwargs = {"tool_calls": [{"id": call_id, "type": "function", "function": function}]}
        call = ChatMessage(role="assistant", content="", additional_kwargs=kwargs)
    else:
        block = ToolCallBlock(tool_call_id=call_id, tool_name="run_query", tool_kwargs=arguments)
        call = ChatMessage(role="assistant", blocks=[block])
    result = ChatMessage(role="tool", content="ok", additional_kwargs={"tool_call_id": call_id})
    return [
        user("Run the report query for me"),
        call,
        result,
        ChatMessage(role="assistant", content="Done."),
        user("Summarise the result."),
    ]


@pytest.mark.parametrize("legacy", [False, True], ids=["blocks", "additional_kwargs"])
@pytest.mark.parametrize(
    ("arguments", "other"),
    [
        (
            {"sql": "DELETE FROM orders WHERE status='cancelled'"},
            {"sql": "DELETE FROM orders WHERE status='cancelled' OR 1=1"},
        ),
        ({"table": "orders", "dry_run": True}, {"table": "orders"}),
        ({"sku": "aB3x"}, {"sku": "Ab3X"}),
    ],
    ids=["added-clause", "dropped-flag", "case"],
)
def test_a_tool_call_with_other_arguments_never_shares_an_answer(
    cache: Cache, arguments: dict[str, Any], other: dict[str, Any], legacy: bool
) -> None:
    inner = RecordingLLM(chat_model=True)
    llm = wrap_llm(inner, cache)
    llm.chat(_agent_turns(arguments, legacy, "call_a1"))
    repeat = llm.chat(_agent_turns(arguments, legacy, "call_b2"))  # fresh id, same call
    assert repeat.additional_kwargs["cache_kind"] == "exact"
    response = llm.chat(_agent_turns(other, legacy, "call_c3"))
    assert "cache_hit" not in response.additional_kwargs and len(inner.calls) == 2


def test_only_a_tool_calls_name_and_arguments_enter_its_key() -> None:
    def calls(*specs: tuple[str, str, str]) -> list[ChatMessage]:
        tool_calls = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
            for i, n, a in specs
        ]
        turn = ChatMessage(
            role="assistant", content="", additional_kwargs={"tool_calls": tool_calls}
        )
        return [user("Weather in Oslo and Rome?"), turn, user("Which is warmer?")]

    base = chat_key(calls(("a", "weather", '{"c": "Oslo"}'), ("b", "weather", '{"c": "Rome"}')))
    spaced = calls(("x", "weather", '{ "c":"Oslo" }'), ("y", "weather", '{"c": "Rome"}'))
    assert chat_key(spaced) == base  # other ids, the same arguments spelled otherwise
    renamed = calls(("a", "forecast", '{"c": "Oslo"}'), ("b", "weather", '{"c": "Rome"}'))
    swapped = calls(("a", "weather", '{"c": "Rome"}'), ("b", "weather", '{"c": "Oslo"}'))
    assert len({base, chat_key(renamed), chat_key(swapped)}) == 3
