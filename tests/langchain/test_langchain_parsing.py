"""A chat prompt's messages are revived once, not again by the update after a miss or by an
exact repeat (reviving costs about 0.7 ms: langchain-core rebuilds its allowlist each time)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.load import dumps
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.outputs import Generation

import modelcache_langchain._convert as convert
from modelcache_langchain import ModelCache

LLM = "model_name='gpt-4o-mini' temperature=0.0"


def test_a_prompt_is_parsed_once(lc_cache: ModelCache, monkeypatch: pytest.MonkeyPatch) -> None:
    revived: list[Any] = []
    revive = convert._revive

    def counting(obj: Any, allowed: Any) -> Any:
        if allowed != "core":  # the messages of a prompt, not the stored generations
            revived.append(obj)
        return revive(obj, allowed)

    monkeypatch.setattr(convert, "_revive", counting)
    question = f"What is the capital of France? ({uuid.uuid4().hex})"
    prompt = dumps([SystemMessage("You are terse."), HumanMessage(question)])
    assert lc_cache.lookup(prompt, LLM) is None
    lc_cache.update(prompt, LLM, [Generation(text="Paris")])
    hit = lc_cache.lookup(prompt, LLM)
    assert hit is not None and hit[0].text == "Paris"
    assert len(revived) == 1
