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
from .onnx import OnnxSentenceEmbedder, default_onnx_cache_dir, export_onnx

__all__ = [
    "DEFAULT_THRESHOLDS",
    "BaseEmbedder",
    "Embedder",
    "FakeEmbedder",
    "LLMLayerEmbedder",
    "LangChainEmbedder",
    "LlamaIndexEmbedder",
    "MultilingualEmbedder",
    "OnnxSentenceEmbedder",
    "SentenceTransformerEmbedder",
    "Thresholds",
    "build_embedder",
    "default_onnx_cache_dir",
    "export_onnx",
    "l2_normalize",
    "shipped_model_path",
]


def build_embedder(
    spec: str,
    *,
    threads: int | None = 1,
    backend: str = "onnx",
    onnx_cache_dir: str | None = None,
) -> Embedder:
    """Build the embedder a config names: 'minilm', 'multilingual', 'fake', 'llm:<dir>' or a dir.

    Sentence-transformers models ('minilm' and folders) run under ONNX Runtime unless
    ``backend`` is 'torch'; an export failure falls back to torch with a warning. 'onnx-int8'
    runs them quantised, under their own name and thresholds.
    """
    if backend not in ("onnx", "torch", "onnx-int8"):
        raise ConfigError(
            f"unknown embedder backend {backend!r}: use 'onnx', 'onnx-int8' or 'torch'"
        )
    model_dir: str | None
    if spec == "minilm":
        model_dir = None
    elif spec == "multilingual":
        return MultilingualEmbedder(threads=threads or 1)
    elif spec == "fake":
        return FakeEmbedder()
    elif spec.startswith("llm:"):
        return LLMLayerEmbedder(spec[4:], threads=threads)
    elif spec.startswith(("st:", "/", ".", "~")) or "/" in spec:
        from pathlib import Path

        model_dir = str(Path(spec.removeprefix("st:")).expanduser())
    else:
        raise ConfigError(
            f"unknown embedder {spec!r}: use 'minilm', 'multilingual', 'llm:<dir>' "
            "or a model folder"
        )
    if backend == "torch":
        return SentenceTransformerEmbedder(model_dir, threads=threads)
    return OnnxSentenceEmbedder(
        model_dir,
        threads=threads,
        cache_dir=onnx_cache_dir,
        quantize=backend == "onnx-int8",
    )
