"""Embedders: the protocol, the shipped default, multilingual, LLM layer, framework adapters."""

from __future__ import annotations

from ..errors import ConfigError
from .adapters import LangChainEmbedder, LlamaIndexEmbedder
from .base import DEFAULT_THRESHOLDS, BaseEmbedder, Embedder, FakeEmbedder, Thresholds, l2_normalize
from .models import (
    LLMLayerEmbedder,
    MultilingualEmbedder,
    SentenceTransformerEmbedder,
    shipped_model_path,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "BaseEmbedder",
    "Embedder",
    "FakeEmbedder",
    "LLMLayerEmbedder",
    "LangChainEmbedder",
    "LlamaIndexEmbedder",
    "MultilingualEmbedder",
    "SentenceTransformerEmbedder",
    "Thresholds",
    "build_embedder",
    "l2_normalize",
    "shipped_model_path",
]


def build_embedder(spec: str, *, threads: int | None = 1) -> Embedder:
    """Build the embedder a config names: 'minilm', 'multilingual', 'fake', 'llm:<dir>' or a dir."""
    if spec == "minilm":
        return SentenceTransformerEmbedder(threads=threads)
    if spec == "multilingual":
        return MultilingualEmbedder(threads=threads or 1)
    if spec == "fake":
        return FakeEmbedder()
    if spec.startswith("llm:"):
        return LLMLayerEmbedder(spec[4:], threads=threads)
    if spec.startswith(("st:", "/", ".", "~")) or "/" in spec:
        from pathlib import Path

        return SentenceTransformerEmbedder(
            str(Path(spec.removeprefix("st:")).expanduser()), threads=threads
        )
    raise ConfigError(
        f"unknown embedder {spec!r}: use 'minilm', 'multilingual', 'llm:<dir>' or a model folder"
    )
