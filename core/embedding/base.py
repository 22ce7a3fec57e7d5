"""The Embedder protocol and the shared machinery: normalisation and long-text windows."""

from __future__ import annotations

import hashlib
import re
import threading
import zlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "DEFAULT_THRESHOLDS",
    "BaseEmbedder",
    "Embedder",
    "FakeEmbedder",
    "Thresholds",
    "count_words",
    "l2_normalize",
    "split_sentences",
    "thresholds_of",
]

_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)
# A sentence ends at ., !, ?, a colon or semicolon followed by whitespace, or after a CJK stop.
_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|(?<=[。！？；：])")
# About one sentence in three ends a chunk, decided by its own text (see ``_windows``).
_CHUNK_EVERY = 3
_MEMO_INIT = threading.Lock()
_TEXT_MEMO_CHARS = 1000  # texts this long or longer have their token count and windows memoised
_TEXT_MEMO_SIZE = 64


def split_sentences(text: str) -> list[str]:
    """Sentences of a text (stripped, empty ones dropped)."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


def count_words(text: str) -> int:
    """Rough token count for models without a tokenizer: words, and one per CJK character."""
    return len(_WORD.findall(text))


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation to float32; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Thresholds:
    """Cosine thresholds calibrated for one embedder; config fields left unset use these.

    ``followup`` applies to a query with earlier turns (short follow-ups such as "death toll" /
    "how many people died" score far lower than standalone paraphrases); ``context`` is what the
    earlier turns (user turns and replies, embedded together) need. Numbers and method:
    docs/benchmarks.md.
    """

    short: float
    long: float
    followup: float
    context: float


# all-MiniLM-L6-v2 (the shipped model), also used for embedders nobody calibrated
DEFAULT_THRESHOLDS = Thresholds(short=0.85, long=0.90, followup=0.45, context=0.80)


def thresholds_of(embedder: object) -> Thresholds:
    """An embedder's calibrated thresholds, or the defaults when it carries none."""
    value = getattr(embedder, "thresholds", None)
    return value if isinstance(value, Thresholds) else DEFAULT_THRESHOLDS


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def name(self) -> str:
        """Stable identifier, stored with the cache so a reopen with another model fails."""
        ...

    @property
    def dimension(self) -> int:
        """Vector dimension, read from the model."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch: shape (len(texts), dimension), float32, unit rows."""
        ...

    def count_tokens(self, text: str) -> int:
        """Token count of a text, used to pick the short or long threshold."""
        ...


class BaseEmbedder(ABC):
    """Base for model-backed embedders: batches, long-text windows, normalisation.

    Texts longer than the model's window are split into sentence-aligned chunks whose
    embeddings are averaged (weighted by length), instead of being silently truncated. Chunk
    vectors are memoised: RAG prompts repeat the same retrieved context with another question,
    and only the chunk that holds the new text is encoded again.
    """

    batch_size: int = 64
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    memo_size: int = 4096  # chunk vectors kept (384-d: about 6 MB)

    @property
    @abstractmethod
    def name(self) -> str:
        """Stable identifier of the model."""

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Vector dimension of the model."""

    @abstractmethod
    def _encode(self, texts: list[str]) -> np.ndarray:
        """Raw model embeddings of texts that fit the window."""

    def _tokens(self, text: str) -> list[int] | None:
        """Token ids without special tokens, or None when the model has no tokenizer."""
        return None

    def _detokenize(self, ids: list[int]) -> str:
        raise NotImplementedError

    def _token_lists(self, texts: list[str]) -> list[list[int]]:
        """Token ids of several texts (models with a fast tokenizer do it in one call)."""
        return [self._tokens(t) or [] for t in texts]

    @property
    def max_tokens(self) -> int | None:
        """Tokens per window (special tokens excluded); None means no limit."""
        return None

    def count_tokens(self, text: str) -> int:
        """Model tokens when a tokenizer exists, else a word count."""
        if len(text) >= _TEXT_MEMO_CHARS:
            return self._text_info(text)[0]
        ids = self._tokens(text)
        return len(ids) if ids is not None else count_words(text)

    def _windows(self, text: str) -> list[str]:
        """The pieces a text is encoded in: itself when it fits the window, else chunks."""
        return self._text_info(text)[1]

    def _text_info(self, text: str) -> tuple[int, list[str]]:
        """Token count and windows of a text, memoised for the last few long texts: one lookup
        counts and windows the same prompt several times (threshold, long-text check, embed)."""
        if len(text) < _TEXT_MEMO_CHARS:  # short texts: cheaper to recount than to memoise
            ids = self._tokens(text)
            return (len(ids) if ids is not None else count_words(text)), self._chunks(text, ids)
        self._init_memo()
        with self._memo_lock:
            info = self._text_memo.get(text)
            if info is not None:
                self._text_memo.move_to_end(text)
                return info
        ids = self._tokens(text)
        info = (len(ids) if ids is not None else count_words(text)), self._chunks(text, ids)
        with self._memo_lock:
            self._text_memo[text] = info
            while len(self._text_memo) > _TEXT_MEMO_SIZE:
                self._text_memo.popitem(last=False)
        return info

    def _chunks(self, text: str, ids: list[int] | None) -> list[str]:
        """The text itself when it fits the window (``ids``: its tokens), else chunks.

        A chunk is whole sentences up to the window; a chunk also ends after a sentence whose
        own hash says so (content-defined boundaries), so an edit in one place (another
        question after the same context) changes only the chunk around it, wherever it is.
        A sentence longer than the window is cut into overlapping token windows.
        """
        limit = self.max_tokens
        if limit is None or ids is None or len(ids) <= limit:
            return [text]
        pieces: list[str] = []
        current: list[str] = []
        size = 0
        sentences = split_sentences(text)
        for sentence, sentence_ids in zip(sentences, self._token_lists(sentences), strict=True):
            if current and size + len(sentence_ids) > limit:
                pieces.append(" ".join(current))
                current, size = [], 0
            if len(sentence_ids) > limit:
                pieces.extend(self._token_windows(sentence_ids, limit))
                continue
            current.append(sentence)
            size += len(sentence_ids)
            if zlib.crc32(sentence.encode("utf-8")) % _CHUNK_EVERY == 0:
                pieces.append(" ".join(current))
                current, size = [], 0
        if current:
            pieces.append(" ".join(current))
        return pieces

    def _token_windows(self, ids: list[int], limit: int) -> list[str]:
        """Overlapping windows of ``limit`` tokens (stride three quarters of the window)."""
        stride = max(1, (limit * 3) // 4)
        starts = range(0, max(1, len(ids) - limit + stride), stride)
        return [self._detokenize(ids[s : s + limit]) for s in starts if ids[s : s + limit]]

    def _encode_memo(self, pieces: list[str]) -> np.ndarray:
        """Normalised vectors of the pieces, encoding only those not memoised."""
        memo = self._init_memo()
        with self._memo_lock:
            known = {p: memo[p] for p in pieces if p in memo}
            for piece in known:
                memo.move_to_end(piece)
        missing = list(dict.fromkeys(p for p in pieces if p not in known))
        if missing:
            fresh = l2_normalize(self._encode(missing))
            with self._memo_lock:
                for piece, vector in zip(missing, fresh, strict=True):
                    known[piece] = memo[piece] = vector
                while len(memo) > self.memo_size:
                    memo.popitem(last=False)
        return np.stack([known[p] for p in pieces])

    def _init_memo(self) -> OrderedDict[str, np.ndarray]:
        """The chunk-vector memo (and the text memo), created on first use."""
        memo: OrderedDict[str, np.ndarray] | None = getattr(self, "_memo", None)
        if memo is None:
            with _MEMO_INIT:
                if getattr(self, "_memo", None) is None:
                    self._memo_lock = threading.Lock()
                    self._text_memo: OrderedDict[str, tuple[int, list[str]]] = OrderedDict()
                    self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
                memo = self._memo
        return memo

    def clear_memo(self) -> None:
        """Forget the memoised chunk vectors and windows (benchmarks measure a cold lookup)."""
        memo = getattr(self, "_memo", None)
        if memo is not None:
            with self._memo_lock:
                memo.clear()
                self._text_memo.clear()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch; long texts become the weighted mean of their chunk embeddings."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        pieces: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            for window in self._windows(text):
                pieces.append(window)
                owners.append(i)
        if len(pieces) == len(texts):  # every text fits the window: no chunks to memoise
            return l2_normalize(self._encode(pieces))
        chunked = np.bincount(owners, minlength=len(texts))[owners] > 1
        raw = np.zeros((len(pieces), self.dimension), dtype=np.float32)
        whole = np.flatnonzero(~chunked)
        if whole.size:
            raw[whole] = l2_normalize(self._encode([pieces[k] for k in whole]))
        parts = np.flatnonzero(chunked)
        raw[parts] = self._encode_memo([pieces[k] for k in parts])
        out = np.zeros((len(texts), raw.shape[1]), dtype=np.float32)
        for row, owner, piece in zip(raw, owners, pieces, strict=True):
            out[owner] += row * max(1, len(piece))
        return l2_normalize(out)


class FakeEmbedder:
    """Deterministic hashing embedder for tests: similarity follows shared words and trigrams.

    Needs no model, so tests run in milliseconds; never use it for real traffic.
    """

    def __init__(self, dimension: int = 256) -> None:
        self._dimension = dimension

    @property
    def name(self) -> str:
        """Identifier stored with the cache."""
        return f"fake-hash-{self._dimension}"

    @property
    def dimension(self) -> int:
        """Vector dimension."""
        return self._dimension

    def count_tokens(self, text: str) -> int:
        """Word count."""
        return count_words(text)

    def _features(self, text: str) -> list[str]:
        words = [w.lower() for w in _WORD.findall(text)]
        grams = [f"#{w[i : i + 3]}" for w in words for i in range(max(1, len(w) - 2))]
        return words + words + grams

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Sum of signed hashed features, normalised."""
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat in self._features(text):
                digest = hashlib.blake2b(feat.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self._dimension] += 1.0 if (value >> 32) & 1 else -1.0
        return l2_normalize(out)
