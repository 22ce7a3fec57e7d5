"""What a prompt format or setting reads decides its key: module and class attributes, plain
data of any size; the environment and the clock make it uncached; request labels, a text that
starts with a URL and names with lone surrogates are keyed without loss or leak."""

from __future__ import annotations

import datetime
import logging
import os
import re
import sys
import textwrap
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
from llama_index.core.base.llms.types import ChatMessage
from llamaindex_mocks import RecordingLLM, TemplatingLLM
from pydantic import BaseModel, ConfigDict, Field

from modelcache import Cache, CacheConfig, FakeEmbedder, Scope
from modelcache_llamaindex import _keys, wrap_llm
from modelcache_llamaindex._keys import complete_plan, to_json

app_settings: Any = types.ModuleType("app_settings")  # an app's settings module, read by attribute
app_settings.LANGUAGE = "French"
EXAMPLES = [{"q": f"question {i}", "a": f"answer {i}"} for i in range(20_000)]
BIG = [{"q": f"question {i}", "a": {f"answer {i}"}} for i in range(20_000)]  # sets: walked


class Style:
    """An app's settings class, read by attribute."""

    tone = "formal"


def settings_prompt(prompt: str) -> str:
    return f"Answer in {app_settings.LANGUAGE}. {prompt}"


def styled_prompt(prompt: str) -> str:
    return f"Answer in a {Style.tone} tone. {prompt}"


def few_shot_prompt(prompt: str) -> str:
    shots = "\n".join(f"Q: {e['q']}\nA: {e['a']}" for e in EXAMPLES[:3])
    return f"{shots}\nQ: {prompt}\nA:"


def big_prompt(prompt: str) -> str:
    return f"{BIG[0]['q']} {prompt}"


def env_prompt(prompt: str) -> str:
    return f"Answer in {os.getenv('APP_LANGUAGE', 'English')}. {prompt}"


def environ_prompt(prompt: str) -> str:
    return f"Answer in {os.environ.get('APP_LANGUAGE', 'English')}. {prompt}"


def dated_prompt(prompt: str) -> str:
    return f"Today is {datetime.datetime.now():%A}. {prompt}"


def clock_prompt(prompt: str) -> str:
    return f"[{time.time():.0f}] {prompt}"


def library_prompt(prompt: str) -> str:
    return textwrap.dedent(re.sub(r"\s+", " ", f"  [INST] {prompt} [/INST]"))


TEMPLATE = jinja2.Template("<|user|>{{ prompt }}<|assistant|>")  # its filters use `random`


def jinja_prompt(prompt: str) -> str:
    return TEMPLATE.render(prompt=prompt)


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    sys.modules["app_settings"] = app_settings
    yield
    app_settings.LANGUAGE, Style.tone = "French", "formal"
    del sys.modules["app_settings"]


def key(llm: Any, **kwargs: Any) -> str | None:
    plan = complete_plan(llm, "What is the tallest mountain?", False, kwargs, Scope())
    return None if plan is None else plan.request.exact_key


def test_a_format_reading_a_settings_module_or_class_keys_their_values(cache: Cache) -> None:
    for fmt in (settings_prompt, styled_prompt):
        llm = TemplatingLLM(completion_to_prompt=fmt)
        before = key(llm)
        app_settings.LANGUAGE, Style.tone = "English", "casual"
        assert before is not None and key(llm) != before, fmt
        app_settings.LANGUAGE, Style.tone = "French", "formal"
        assert key(llm) == before, fmt
    wrapped = wrap_llm(TemplatingLLM(completion_to_prompt=settings_prompt), cache)
    wrapped.complete("What is the tallest mountain?")
    app_settings.LANGUAGE = "English"
    assert "English" in wrapped.complete("What is the tallest mountain?").text


def test_a_format_reading_the_environment_or_the_clock_is_not_cached(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    inner = TemplatingLLM(completion_to_prompt=env_prompt)
    llm = wrap_llm(inner, cache)
    with caplog.at_level(logging.WARNING, logger="modelcache.llamaindex"):
        for _ in range(2):
            assert "cache_hit" not in llm.complete("Say hi").additional_kwargs
    assert len(inner.calls) == 2 and llm.fault_count == 0
    assert [r.getMessage().count("os.getenv") for r in caplog.records] == [1]
    for fmt in (env_prompt, environ_prompt, dated_prompt, clock_prompt):
        assert key(TemplatingLLM(completion_to_prompt=fmt)) is None, fmt.__name__
    # library functions a format calls are keyed by name: such a format is still cached
    for fmt in (library_prompt, jinja_prompt):
        assert key(TemplatingLLM(completion_to_prompt=fmt)) is not None, fmt.__name__


def test_plain_data_a_format_reads_is_keyed_whatever_its_size_and_every_call() -> None:
    llm = TemplatingLLM(completion_to_prompt=few_shot_prompt)
    before = key(llm)
    assert before is not None
    EXAMPLES[1000]["a"] = "another answer"  # changed in place, in this process
    try:
        assert key(llm) != before
    finally:
        EXAMPLES[1000]["a"] = "answer 1000"
    assert key(llm) == before
    pairs, lists = [(1, "a")], [[1, "a"]]
    assert to_json(lambda: pairs, scrub=False) != to_json(lambda: lists, scrub=False)
    ints, strings = {1: "a"}, {"1": "a"}
    assert to_json(lambda: ints, scrub=False) != to_json(lambda: strings, scrub=False)


def test_a_format_over_the_walk_limit_is_given_up_at_once_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    llm = TemplatingLLM(completion_to_prompt=big_prompt)
    with caplog.at_level(logging.WARNING, logger="modelcache.llamaindex"):
        assert key(llm) is None
    assert "'BIG'" in caplog.text and "completion_to_prompt" in caplog.text
    walked: list[Any] = []
    original = _keys._callable_shape

    def counted(fn: Any, walk: Any) -> Any:
        walked.append(fn)
        return original(fn, walk)

    monkeypatch.setattr(_keys, "_callable_shape", counted)
    assert key(llm) is None and walked == []


def test_a_setting_that_starts_with_a_url_keeps_its_text() -> None:
    def system(language: str) -> str:
        return f"https://acme.example/help?lang={language[:2]} - Answer in {language}."

    english = TemplatingLLM(system_prompt=system("English"))
    assert key(english) != key(TemplatingLLM(system_prompt=system("French")))
    rotated = "https://proxy.example/v1?sig=two"
    assert to_json({"base": "https://proxy.example/v1?sig=one"}, scrub=True) == to_json(
        {"base": rotated}, scrub=True
    )


class _Processor:
    def __call__(self, ids: list[int], scores: list[float]) -> list[float]:
        return scores


class _Sampling(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    temperature: float
    processor: Any = None


class _SamplingLLM(TemplatingLLM):
    sampling: _Sampling


def test_a_setting_that_cannot_be_converted_is_never_left_out_of_the_partition() -> None:
    cold = key(_SamplingLLM(sampling=_Sampling(temperature=0.0, processor=_Processor())))
    hot = key(_SamplingLLM(sampling=_Sampling(temperature=1.5, processor=_Processor())))
    assert cold is not None and hot is not None and cold != hot
    opaque = _Sampling(temperature=0.0, processor=memoryview(b"state"))
    assert key(_SamplingLLM(sampling=opaque)) is None
    loop: dict[str, Any] = {"temperature": 0.1}
    loop["self"] = loop
    assert key(TemplatingLLM(generate_kwargs=loop)) is None
    assert key(TemplatingLLM(), extra=[loop]) is None


class _OpenAILike(TemplatingLLM):
    """An OpenAI-compatible model's shape: extra request fields in ``additional_kwargs``."""

    additional_kwargs: dict[str, Any] = Field(default_factory=dict)


def test_request_labels_stay_out_of_the_partition(tmp_path: Path) -> None:
    config = CacheConfig(path=str(tmp_path), max_partitions_per_tenant=2, lookup_timeout=10.0)
    with Cache(config, embedder=FakeEmbedder()) as engine:
        inner = RecordingLLM()
        llm = wrap_llm(inner, engine)
        question = [ChatMessage(role="user", content="What is the capital of Spain?")]
        for i in range(4):
            llm.chat(question, user=f"user{i}@example.com", metadata={"session": str(i)})
        assert len(inner.calls) == 1 and llm.fault_count == 0
        assert "example.com" not in str(engine.stats()["partitions"])
    labelled = _OpenAILike(additional_kwargs={"user": "ann", "seed": 1})
    other = _OpenAILike(additional_kwargs={"user": "bob", "seed": 1})
    assert key(labelled) == key(other)
    assert key(labelled) != key(_OpenAILike(additional_kwargs={"seed": 2}))


def test_a_name_with_a_lone_surrogate_is_keyed_and_never_logged(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    name = "alice.smith@example.com\ud800"
    message = ChatMessage(role="user", content="What is the capital of France?")
    message.additional_kwargs["name"] = name
    llm = wrap_llm(RecordingLLM(), cache)
    with caplog.at_level(logging.INFO, logger="modelcache.llamaindex"):
        llm.chat([message])
        assert llm.chat([message]).additional_kwargs["cache_hit"]
    assert "alice" not in caplog.text and llm.fault_count == 0
