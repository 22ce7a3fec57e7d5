"""RAG prompts through LangChain with the real model: a prompt template with {context} and
{question}, where the context is far longer than the model's window."""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate
from rag_context import CONTEXT, OTHER_CONTEXT, OTHER_QUESTION, QUESTION, REWORDED

from modelcache import SentenceTransformerEmbedder
from modelcache_langchain import ModelCache

pytestmark = pytest.mark.model

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "You are the shop's assistant. Answer from the context only."),
        ("human", "Context:\n{context}\n\nQuestion: {question}\nAnswer:"),
    ]
)


def test_rag_prompt_hits_only_for_the_same_question_over_the_same_context(
    real_cache: ModelCache, minilm: SentenceTransformerEmbedder
) -> None:
    assert minilm.count_tokens(CONTEXT) > minilm.max_tokens  # averaged over windows
    model = FakeListChatModel(
        responses=["Thirty days.", "Dana Whitfield.", "Fourteen days.", "unused"], cache=real_cache
    )
    chain = PROMPT | model

    def ask(question: str, context: str = CONTEXT) -> str:
        return str(chain.invoke({"context": context, "question": question}).content)

    assert ask(QUESTION) == "Thirty days."
    assert ask(OTHER_QUESTION) == "Dana Whitfield."  # another question, same context: a miss
    assert ask(REWORDED) == "Thirty days."  # the question reworded: a hit
    assert ask(QUESTION, OTHER_CONTEXT) == "Fourteen days."  # another context: a miss
    assert model.i == 3
