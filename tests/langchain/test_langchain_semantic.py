"""Paraphrases hit through LangChain with the real shipped model (loaded once per session)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import FakeListLLM
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from modelcache_langchain import ModelCache

pytestmark = pytest.mark.model


class ChatModel(FakeMessagesListChatModel):
    """Cycles through ``responses``; ``model`` is in its llm_string."""

    model: str = "gpt-4o"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model}


def chat(*texts: str, **fields: Any) -> ChatModel:
    """A chat model answering ``texts`` in turn."""
    return ChatModel(responses=[AIMessage(t) for t in texts], **fields)


def test_paraphrase_hits_and_unrelated_question_misses(real_cache: ModelCache) -> None:
    model = chat("Use the reset link.", "Paris.", "never", cache=real_cache)
    system = SystemMessage("You are a support bot.")
    assert model.invoke([system, HumanMessage("How do I reset my password?")]).content == (
        "Use the reset link."
    )
    paraphrase = model.invoke([system, HumanMessage("How can I reset my password?")])
    assert paraphrase.content == "Use the reset link."
    unrelated = model.invoke([system, HumanMessage("What is the capital of France?")])
    assert unrelated.content == "Paris."
    assert model.i == 2


async def test_paraphrase_hits_async_and_for_plain_llms(real_cache: ModelCache) -> None:
    llm = FakeListLLM(responses=["Use the reset link.", "other"], cache=real_cache)
    assert await llm.ainvoke("How do I reset my password?") == "Use the reset link."
    assert await llm.ainvoke("how can i reset my password") == "Use the reset link."
    assert llm.i == 1


def test_paraphrase_never_crosses_models(real_cache: ModelCache) -> None:
    assert chat("4o", cache=real_cache).invoke("How do I reset my password?").content == "4o"
    mini = chat("mini", model="gpt-4o-mini", cache=real_cache)
    assert mini.invoke("How can I reset my password?").content == "mini"
