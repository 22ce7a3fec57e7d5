"""The Embedder protocol and the shared machinery: normalisation and long-text windows."""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import threading
import zlib
from abc import ABC, abstractmethod
from bisect import bisect_left
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
_QUESTION_ENDS = ("?", "？")  # a sentence ending so is a chunk of its own (see ``_chunks``)
_MEMO_INIT = threading.Lock()
_TEXT_MEMO_CHARS = 1000  # texts this long or longer have their token count and windows memoised
_TEXT_MEMO_SIZE = 64
_SENTENCE_MEMO_SIZE = 16384  # sentences whose token count is kept (long texts' only)
_SPLIT_MEMO = 64  # texts whose sentence split is kept (process-wide)
_MOSTLY_KNOWN = 4  # a long text with under a quarter new sentences tokenizes only those


def split_sentences(text: str) -> list[str]:
    """Sentences of a text (stripped, empty ones dropped)."""
    return [text[start:end] for start, end in _sentence_spans(text)]


@functools.lru_cache(maxsize=_SPLIT_MEMO)
def _sentence_spans(text: str) -> tuple[tuple[int, int], ...]:
    """Start and end offsets of the sentences ``split_sentences`` returns, in order; memoised
    for the last few texts, so a prompt chunked for its vector is not split again for its
    diff against a stored one."""
    spans: list[tuple[int, int]] = []
    start = 0
    for end, after in [(m.start(), m.end()) for m in _SENTENCE_END.finditer(text)] + [
        (len(text), len(text))
    ]:
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            first = start + len(piece) - len(piece.lstrip())
            spans.append((first, first + len(stripped)))
        start = after
    return tuple(spans)


def count_words(text: str, limit: int | None = None) -> int:
    """Rough token count for models without a tokenizer: words, and one per CJK character;
    with ``limit``, counting stops there (is a long text at least that long?)."""
    if limit is None:
        return len(_WORD.findall(text))
    return sum(1 for _ in itertools.islice(_WORD.finditer(text), limit))


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

    def _token_starts(self, text: str) -> tuple[list[int], list[int]] | None:
        """Token ids of a text and the character offset where each starts, or None when the
        tokenizer gives no offsets (sentences are then tokenized one by one)."""
        return None

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
            count = len(ids) if ids is not None else count_words(text)
            limit = self.max_tokens
            if ids is None or limit is None or len(ids) <= limit:
                return count, [text]
            spans = _sentence_spans(text)
            lists = self._token_lists([text[a:b] for a, b in spans])
            return count, self._chunks(text, spans, [len(t) for t in lists])
        self._init_memo()
        with self._memo_lock:
            info = self._text_memo.get(text)
            if info is not None:
                self._text_memo.move_to_end(text)
                return info
        info = self._long_text_info(text)
        with self._memo_lock:
            self._text_memo[text] = info
            while len(self._text_memo) > _TEXT_MEMO_SIZE:
                self._text_memo.popitem(last=False)
        return info

    def _long_text_info(self, text: str) -> tuple[int, list[str]]:
        """Token count and windows of a long text. Sentences whose token count is memoised
        (the context of an earlier prompt) are not tokenized again: a prompt mostly made of
        known sentences has only its new ones tokenized, else the whole text is, in one call."""
        spans = _sentence_spans(text)
        sentences = [text[a:b] for a, b in spans]
        with self._memo_lock:
            known = [self._sentence_tokens.get(s) for s in sentences]
        unknown = [i for i, n in enumerate(known) if n is None]
        if self.max_tokens is not None and len(unknown) * _MOSTLY_KNOWN < len(sentences):
            fresh = self._token_lists([sentences[i] for i in unknown]) if unknown else []
            counts = [n or 0 for n in known]
            for i, ids in zip(unknown, fresh, strict=True):
                counts[i] = len(ids)
            total = sum(counts)  # sentences meet at spaces or CJK stops: no token spans two
        else:
            located = self._token_starts(text)
            if located is not None:
                ids, starts = located
                counts = [bisect_left(starts, b) - bisect_left(starts, a) for a, b in spans]
            else:
                whole = self._tokens(text)
                if whole is None or self.max_tokens is None:  # no tokenizer or no window
                    return (count_words(text) if whole is None else len(whole)), [text]
                ids = whole
                counts = [len(t) for t in self._token_lists(sentences)]
            total = len(ids)
        with self._memo_lock:
            for sentence, n in zip(sentences, counts, strict=True):
                self._sentence_tokens[sentence] = n
                self._sentence_tokens.move_to_end(sentence)
            while len(self._sentence_tokens) > _SENTENCE_MEMO_SIZE:
                self._sentence_tokens.popitem(last=False)
        if self.max_tokens is None or total <= self.max_tokens:
            return total, [text]
        return total, self._chunks(text, spans, counts)

    def _chunks(self, text: str, spans: Sequence[tuple[int, int]], counts: list[int]) -> list[str]:
        """Chunks of a text longer than the window (``spans``: its sentences, ``counts``: their
        token counts).

        A chunk is whole sentences up to the window; a chunk also ends after a sentence whose
        own hash says so (content-defined boundaries), so an edit in one place (another
        question after the same context) changes only the chunk around it, wherever it is.
        A question is a chunk of its own: it is what differs between prompts over the same
        context, and the long-text check compares it alone, so a lookup embeds it once for
        both. A sentence longer than the window is cut into overlapping token windows.
        """
        limit = self.max_tokens
        assert limit is not None  # callers return the text itself when there is no window
        pieces: list[str] = []
        current: list[str] = []
        size = 0
        for (a, b), count in zip(spans, counts, strict=True):
            sentence = text[a:b]
            question = sentence.endswith(_QUESTION_ENDS)
            if current and (question or size + count > limit):
                pieces.append(" ".join(current))
                current, size = [], 0
            if count > limit:
                pieces.extend(self._token_windows(self._tokens(sentence) or [], limit))
                continue
            current.append(sentence)
            size += count
            if question or zlib.crc32(sentence.encode("utf-8")) % _CHUNK_EVERY == 0:
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

    def _init_memo(self) -> OrderedDict[str, np.ndarray]:
        """The chunk-vector memo (and the text memo), created on first use."""
        memo: OrderedDict[str, np.ndarray] | None = getattr(self, "_memo", None)
        if memo is None:
            with _MEMO_INIT:
                if getattr(self, "_memo", None) is None:
                    self._memo_lock = threading.Lock()
                    self._text_memo: OrderedDict[str, tuple[int, list[str]]] = OrderedDict()
                    self._from_store: set[str] = set()  # memoised chunks read from a store
                    self._sentence_tokens: OrderedDict[str, int] = OrderedDict()
                    self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
                memo = self._memo
        return memo

    def clear_memo(self) -> None:
        """Forget the memoised chunk vectors, windows and sentence token counts (benchmarks
        measure a cold lookup)."""
        memo = getattr(self, "_memo", None)
        if memo is not None:
            with self._memo_lock:
                memo.clear()
                self._from_store.clear()
                self._text_memo.clear()
                self._sentence_tokens.clear()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch; long texts become the weighted mean of their chunk embeddings.

        Every piece not memoised (short texts, new chunks) goes to the model in one call: a
        model run has a fixed cost of several milliseconds however short its texts.
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        pieces: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            for window in self._windows(text):
                pieces.append(window)
                owners.append(i)
        if len(pieces) == len(texts):  # every text fits the window: no chunks to memoise
            distinct = list(dict.fromkeys(pieces))
            if len(distinct) == len(pieces):
                return l2_normalize(self._encode(pieces))
            once = dict(zip(distinct, l2_normalize(self._encode(distinct)), strict=True))
            return np.stack([once[piece] for piece in pieces])
        chunked = np.bincount(owners, minlength=len(texts))[owners] > 1
        memo = self._init_memo()
        known: dict[str, np.ndarray] = {}
        with self._memo_lock:
            # a short text beside a long one may be a memoised chunk (a stored question)
            for piece in pieces:
                vector = memo.get(piece)
                if vector is not None:
                    known[piece] = vector
                    memo.move_to_end(piece)
        whole = [int(k) for k in np.flatnonzero(~chunked)]
        parts = dict.fromkeys(pieces[k] for k in np.flatnonzero(chunked))
        missing = [piece for piece in parts if piece not in known]
        # a text that is also a new chunk (a lookup's question beside its prompt) runs once
        batch = list(dict.fromkeys([pieces[k] for k in whole if pieces[k] not in known] + missing))
        raw = np.zeros((len(pieces), self.dimension), dtype=np.float32)
        fresh = dict(zip(batch, l2_normalize(self._encode(batch)), strict=True)) if batch else {}
        for k in whole:
            raw[k] = known[pieces[k]] if pieces[k] in known else fresh[pieces[k]]
        if missing:
            with self._memo_lock:
                for piece in missing:
                    known[piece] = memo[piece] = fresh[piece]
                    self._from_store.discard(piece)
                # never this call's chunks (all at the end): a bulk load reads them back to store
                self._trim_memo(max(self.memo_size, len(parts)))
        for k in np.flatnonzero(chunked):
            raw[k] = known[pieces[k]]
        out = np.zeros((len(texts), raw.shape[1]), dtype=np.float32)
        for row, owner, piece in zip(raw, owners, pieces, strict=True):
            out[owner] += row * max(1, len(piece))
        return l2_normalize(out)

    def unknown_chunks(self, text: str) -> list[str]:
        """Chunks of a text longer than the window that this process holds no vector of."""
        windows = self._windows(text)
        if len(windows) < 2:
            return []
        memo = self._init_memo()
        with self._memo_lock:
            return [w for w in dict.fromkeys(windows) if w not in memo]

    def chunk_vectors(self, text: str) -> dict[str, np.ndarray]:
        """The vectors this process computed of a long text's chunks (none for a text that fits
        the window), for a store to keep: another process then embeds only a prompt's new
        chunks. Vectors read from a store are not handed on (one partition's rows never feed
        another's)."""
        windows = self._windows(text)
        if len(windows) < 2:
            return {}
        memo = self._init_memo()
        with self._memo_lock:
            return {w: memo[w] for w in windows if w in memo and w not in self._from_store}

    def borrowed(self, texts: Sequence[str]) -> set[str]:
        """Those of ``texts`` whose memoised vector was read from a store, not computed here."""
        self._init_memo()
        with self._memo_lock:
            return {t for t in texts if t in self._from_store}

    def remember_chunks(self, vectors: dict[str, np.ndarray]) -> None:
        """Memoise chunk vectors read from a store (another process embedded them)."""
        memo = self._init_memo()
        with self._memo_lock:
            for piece, vector in vectors.items():
                if piece not in memo:  # a vector computed here stays
                    memo[piece] = vector
                    self._from_store.add(piece)
                memo.move_to_end(piece)
            self._trim_memo(self.memo_size)

    def _trim_memo(self, size: int) -> None:
        """Drop the least recently used chunk vectors beyond ``size`` (the caller holds the
        lock)."""
        while len(self._memo) > size:
            piece, _ = self._memo.popitem(last=False)
            self._from_store.discard(piece)

    def memoised_vector(self, text: str) -> np.ndarray | None:
        """A long text's vector from its memoised chunks alone, or None when it fits the
        window or when none or all of its chunks are memoised.

        An estimate to recall candidates with (a new question changes one chunk of a RAG
        prompt): the chunks left then go to the model in one call with the parts the
        long-text check compares.
        """
        windows = self._windows(text)
        if len(windows) < 2:
            return None
        memo = self._init_memo()
        with self._memo_lock:
            found = [(w, memo[w]) for w in windows if w in memo]
        if not found or len(found) == len(windows):
            return None
        total = sum((vector * max(1, len(w)) for w, vector in found), np.zeros_like(found[0][1]))
        return l2_normalize(total)[0]


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
