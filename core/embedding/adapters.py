"""Adapters so that a LangChain ``Embeddings`` or a LlamaIndex ``BaseEmbedding`` can embed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import BaseEmbedder

__all__ = ["LangChainEmbedder", "LlamaIndexEmbedder"]


class _ProbedEmbedder(BaseEmbedder):
    """Reads the dimension by embedding one probe text (the only way these APIs expose it)."""

    def __init__(self, model: Any, name: str | None) -> None:
        self._model = model
        cls = type(model)
        label = getattr(model, "model", None) or getattr(model, "model_name", None)
        self._name = name or f"{cls.__module__}.{cls.__qualname__}" + (f":{label}" if label else "")
        self._dimension = int(np.asarray(self._encode(["dimension probe"])).shape[1])

    @property
    def name(self) -> str:
        """Class (and model) of the wrapped embedding model, unless given."""
        return self._name

    @property
    def dimension(self) -> int:
        """Probed once at construction."""
        return self._dimension


class LangChainEmbedder(_ProbedEmbedder):
    """Any ``langchain_core.embeddings.Embeddings`` (``embed_documents``)."""

    def __init__(self, embeddings: Any, *, name: str | None = None) -> None:
        super().__init__(embeddings, name)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.embed_documents(list(texts)), dtype=np.float32)


class LlamaIndexEmbedder(_ProbedEmbedder):
    """Any LlamaIndex ``BaseEmbedding`` (``get_text_embedding_batch``)."""

    def __init__(self, embed_model: Any, *, name: str | None = None) -> None:
        super().__init__(embed_model, name)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.get_text_embedding_batch(list(texts)), dtype=np.float32)
