"""RAG through a LlamaIndex query engine with the real model: the formatted text-QA prompt is
far longer than the model's window, and only the same question may be answered from cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llamaindex_mocks import RecordingLLM
from rag_context import CHUNKS, OTHER_CONTEXT, OTHER_QUESTION, QUESTION, REWORDED

from modelcache import Cache, SentenceTransformerEmbedder
from modelcache_llamaindex import wrap_llm

pytestmark = pytest.mark.model


class FixedRetriever(BaseRetriever):
    """Returns the same chunks for every question, as a vector retriever over a small shop FAQ."""

    def __init__(self, chunks: list[str]) -> None:
        super().__init__()
        self._nodes = [NodeWithScore(node=TextNode(text=c), score=1.0) for c in chunks]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes


def test_query_engine_hits_only_for_the_same_question_over_the_same_context(
    make_cache: Callable[..., Cache], minilm: SentenceTransformerEmbedder, llama_settings: Any
) -> None:
    inner = RecordingLLM()
    llm = wrap_llm(inner, make_cache(embedder=minilm))

    def ask(question: str, chunks: list[str] = CHUNKS) -> str:
        engine = RetrieverQueryEngine.from_args(FixedRetriever(chunks), llm=llm)
        return str(engine.query(question))

    first = ask(QUESTION)
    assert len(inner.calls) == 1 and minilm.count_tokens(inner.calls[0]) > minilm.max_tokens
    other = ask(OTHER_QUESTION)  # another question over the same context: a miss
    assert len(inner.calls) == 2 and other != first
    assert ask(REWORDED) == first  # the question reworded: a hit
    assert len(inner.calls) == 2
    ask(QUESTION, OTHER_CONTEXT.split("\n\n"))  # the same question over another context: a miss
    assert len(inner.calls) == 3
