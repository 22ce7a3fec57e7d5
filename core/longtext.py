"""Part-by-part acceptance of long texts (RAG prompts: retrieved context plus a question).

Averaged into one vector, a long prompt is mostly its context, so two different questions over
the same context score about 0.98. The recall vector stays one per entry (lookups stay fast);
a long candidate is then accepted only when what *differs* between the stored and the new text
agrees: the two texts are diffed sentence by sentence, each pair of differing regions is
embedded and compared (the short-question threshold, relaxed: see ``PART_MARGIN``), and the
guard runs over the regions (not over thousands of shared tokens). Text added on one side
only, or regions that make up much of the prompt (another context), reject. Design and
numbers: docs/concepts.md.
"""

from __future__ import annotations

import difflib
import functools
import heapq
import logging
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .embedding.base import count_words, split_sentences

__all__ = [
    "PART_MARGIN",
    "LongTextCheck",
    "Region",
    "by_edit_overlap",
    "differing_regions",
    "edit_overlap",
    "part_threshold",
]

log = logging.getLogger("modelcache")

# How far below the short-question threshold a differing part may score. Both prompts share
# the rest of the text (the retrieved context), which fixes the subject as earlier turns do for
# a follow-up, so a reworded question needs less; on benchmarks/data/rag_pairs.jsonl (MiniLM)
# reworded questions scored 0.73-1.00 and other questions over the same context at most 0.62.
PART_MARGIN = 0.15

_MEMO_SIZE = 2048  # region vectors kept per cache
_PARSE_MEMO = 256  # long texts whose sentences are kept split (a process-wide cache)
_SENTENCE_MEMO = 16384  # sentences whose key and word count are kept (process-wide)
_STORED_PARTS = 3  # last sentences of a stored long text embedded at insert ("Query:", the
# question, "Answer:" in the LangChain and LlamaIndex templates)
_READ_MEMO = 64  # text pairs whose diff a check keeps (a lookup reads each pair twice)
_KEY_DROP = re.compile(r"[^\w]+", re.UNICODE)
_ENDS = ".!?:;\n。！？；："  # characters that end a sentence (see ``split_sentences``)


@dataclass(frozen=True)
class Region:
    """One place where two texts differ: the sentences of each side (either may be empty)."""

    old: str
    new: str


def part_threshold(short_threshold: float) -> float:
    """Similarity a differing part needs: the short-question threshold less ``PART_MARGIN``."""
    return short_threshold - PART_MARGIN


def _key(sentence: str) -> str:
    """Comparison key of a sentence: case, spacing and punctuation do not count."""
    return _KEY_DROP.sub(" ", sentence.casefold()).strip()


@functools.lru_cache(maxsize=_SENTENCE_MEMO)
def _sentence_facts(sentence: str) -> tuple[str, int]:
    """Comparison key and word count of one sentence, memoised: a new prompt repeats the
    sentences of the context that earlier prompts held."""
    return _key(sentence), count_words(sentence)


@functools.lru_cache(maxsize=_PARSE_MEMO)
def _parse(text: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    """Sentences of a text, their comparison keys and word counts: one lookup diffs the same
    prompt against several candidates, and stored prompts recur across lookups."""
    sentences = tuple(split_sentences(text))
    facts = [_sentence_facts(s) for s in sentences]
    return sentences, tuple(k for k, _ in facts), tuple(n for _, n in facts)


def edit_overlap(old: str, new: str) -> float:
    """Words shared (Jaccard) by what lies between the common start and end of two texts,
    times the share of the text outside it: a cheap guess, without splitting sentences, at
    how small and how alike their differing parts are."""
    shared, start, low = _edit_span(old, new)
    return shared * _middle_jaccard(old, new, start, low)


def by_edit_overlap(new: str, olds: Sequence[str]) -> Iterator[str]:
    """``olds`` by ``edit_overlap`` with ``new``, highest first (ties in their given order).

    The share outside the edit bounds the score, so a text is scored only when it can still
    come next: stored prompts over another context (little in common) are seldom scored.
    """
    bounds = sorted((-span[0], i, span) for i, span in enumerate(_edit_span(o, new) for o in olds))
    scored: list[tuple[float, int]] = []
    for bound, i, (shared, start, low) in bounds:
        while scored and scored[0] < (bound, i):  # the best scored one beats every bound left
            yield olds[heapq.heappop(scored)[1]]
        score = shared * _middle_jaccard(olds[i], new, start, low)
        heapq.heappush(scored, (-score, i))
    while scored:
        yield olds[heapq.heappop(scored)[1]]


def _edit_span(old: str, new: str) -> tuple[float, int, int]:
    """The share of the longer text outside the edit, and where the edit starts in both texts
    and how far before their ends it stops, both widened to whole sentences."""
    low, high = 0, min(len(old), len(new))
    while low < high:  # longest common prefix, by halving (each comparison runs in C)
        mid = (low + high + 1) // 2
        low, high = (mid, high) if old[:mid] == new[:mid] else (low, mid - 1)
    start = low
    low, high = 0, min(len(old), len(new)) - start
    while low < high:  # longest common suffix of the rest
        mid = (low + high + 1) // 2
        low, high = (
            (mid, high) if old[len(old) - mid :] == new[len(new) - mid :] else (low, mid - 1)
        )
    # widened to the sentences around the edit: "how long" vs "how many days" share "how"
    start = max(old.rfind(c, 0, start) for c in _ENDS) + 1
    tail = old[len(old) - low :]
    low -= min((i for i in (tail.find(c) for c in _ENDS) if i >= 0), default=low)
    shared = (start + low) / max(1, len(old), len(new))  # another context: little in common
    return shared, start, low


def _middle_jaccard(old: str, new: str, start: int, low: int) -> float:
    """Jaccard similarity of the word sets of the two texts' edits (see ``_edit_span``)."""
    words_old = set(_key(old[start : len(old) - low]).split())
    words_new = set(_key(new[start : len(new) - low]).split())
    return len(words_old & words_new) / max(1, len(words_old | words_new))


def differing_regions(old: str, new: str) -> tuple[list[Region], int]:
    """The regions where two texts differ, widened to whole sentences, and the shared words.

    Sentences that appear as often elsewhere in the other text (retrieved chunks in another
    order) do not count as differences.
    """
    (a, ka, words_a), (b, kb, _) = _parse(old), _parse(new)
    count_a, count_b = Counter(ka), Counter(kb)
    regions: list[Region] = []
    shared = 0
    matcher = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            shared += sum(words_a[i1:i2])
            continue
        moved_a = [bool(ka[i]) and count_b[ka[i]] >= count_a[ka[i]] for i in range(i1, i2)]
        moved_b = [bool(kb[j]) and count_a[kb[j]] >= count_b[kb[j]] for j in range(j1, j2)]
        old_part = [a[i] for i, m in zip(range(i1, i2), moved_a, strict=True) if ka[i] and not m]
        new_part = [b[j] for j, m in zip(range(j1, j2), moved_b, strict=True) if kb[j] and not m]
        shared += sum(words_a[i] for i, m in zip(range(i1, i2), moved_a, strict=True) if m)
        if old_part or new_part:
            regions.append(Region(" ".join(old_part), " ".join(new_part)))
    # a sentence removed in one place and another added elsewhere (the diff may align an
    # edited copy of a repeated sentence that way) are compared as one pair
    removed = [r.old for r in regions if not r.new]
    added = [r.new for r in regions if not r.old]
    if removed and added:
        regions = [r for r in regions if r.old and r.new]
        regions.append(Region(" ".join(removed), " ".join(added)))
    return regions, shared


class LongTextCheck:
    """Accepts a long candidate only when the regions where it differs from the request agree."""

    def __init__(
        self,
        embed: Callable[[list[str]], np.ndarray],
        count_tokens: Callable[[str], int],
        *,
        long_tokens: int,
        threshold: float,
        conflict: Callable[[str, str], str | None] | None = None,
        max_changed: float = 0.5,
    ) -> None:
        self._embed = embed
        self._count = count_tokens
        self._long = long_tokens
        self._threshold = threshold
        self._conflict = conflict
        self._max_changed = max_changed
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._from_store: set[str] = set()  # memoised parts read from a store
        self._reads: OrderedDict[tuple[str, str], tuple[str | None, list[Region]]] = OrderedDict()
        self._lock = threading.Lock()

    def applies(self, new: str, old: str) -> bool:
        """True when either text is long enough for its vector to hide a short difference."""
        return any(
            # a word is at least one token: counting words first (and only as far as the
            # limit) spares tokenizing long texts
            count_words(text, self._long) >= self._long or self._count(text) >= self._long
            for text in (new, old)
        )

    def reason(self, new: str, old: str) -> str | None:
        """Why the stored text ``old`` cannot answer ``new``; None when every part agrees."""
        decided, regions = self._read(new, old)
        if not regions:
            return decided
        vectors = self._vectors([t for r in regions for t in (r.old, r.new)])
        for region in regions:
            similarity = float(np.dot(vectors[region.old], vectors[region.new]))
            if similarity < self._threshold:
                return f"a differing part scores {similarity:.3f}"
        return None

    def pending(self, new: str, old: str) -> list[str]:
        """The part texts a check of ``old`` against ``new`` would embed and has no vector of,
        so a lookup can embed them in the model call that embeds its prompt."""
        _, regions = self._read(new, old)
        texts = dict.fromkeys(t for r in regions for t in (r.old, r.new))
        with self._lock:
            return [t for t in texts if t not in self._memo]

    def stored_parts(self, text: str) -> list[str]:
        """Parts of a long text being stored that a later check likely compares: its last
        sentences, where prompt templates put the question. Splits the text now, so the first
        lookup over the same context diffs against a parsed prompt."""
        sentences = _parse(text)[0]
        with self._lock:
            return [s for s in sentences[-_STORED_PARTS:] if _has_words(s) and s not in self._memo]

    def part_vectors(self, text: str) -> dict[str, np.ndarray]:
        """The vectors this process computed of a long text's last sentences (see
        ``stored_parts``), for a store to keep beside its chunks."""
        sentences = _parse(text)[0]
        with self._lock:
            return {
                s: self._memo[s]
                for s in sentences[-_STORED_PARTS:]
                if s in self._memo and s not in self._from_store
            }

    def remember(self, texts: list[str], vectors: np.ndarray, *, loaded: bool = False) -> None:
        """Keep part vectors embedded elsewhere (see ``pending``) for the check to use;
        ``loaded``: read from a store, so never handed on to one (see ``part_vectors``)."""
        with self._lock:
            self._store(texts, vectors)
            if loaded:
                self._from_store.update(texts)

    def _read(self, new: str, old: str) -> tuple[str | None, list[Region]]:
        """``_settle``, memoised for the last few pairs: a lookup reads the pair it embeds
        parts for (``pending``) again when it checks the candidate (``reason``)."""
        with self._lock:
            found = self._reads.get((new, old))
            if found is not None:
                self._reads.move_to_end((new, old))
                return found
        found = self._settle(new, old)
        with self._lock:
            self._reads[(new, old)] = found
            while len(self._reads) > _READ_MEMO:
                self._reads.popitem(last=False)
        return found

    def _settle(self, new: str, old: str) -> tuple[str | None, list[Region]]:
        """A decision the texts settle alone (a reason, or None: accepted), with no regions;
        or the differing regions whose vectors decide."""
        regions, shared = differing_regions(old, new)
        if not regions:
            return None, []
        if not shared:
            # nothing in common verbatim: a reworded text, not an edited prompt, so the whole
            # vector decides, with the guard over the whole texts
            conflict = self._conflict(new, old) if self._conflict is not None else None
            return (None if conflict is None else f"guard: {conflict}"), []
        changed = max(
            sum(count_words(r.old) for r in regions), sum(count_words(r.new) for r in regions)
        )
        if changed > self._max_changed * (shared + changed):
            return f"{changed} of {shared + changed} words differ", []
        for region in regions:
            if not (_has_words(region.old) and _has_words(region.new)):
                return "text on one side only", []
        if self._conflict is not None:  # cheaper than embedding: first
            for region in regions:
                conflict = self._conflict(region.new, region.old)
                if conflict is not None:
                    return f"a differing part conflicts: {conflict}", []
        return None, regions

    def _vectors(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Vectors of short region texts, memoised: one lookup compares the same new question
        with several candidates, and stored questions recur across lookups."""
        with self._lock:
            found = {t: self._memo[t] for t in texts if t in self._memo}
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            fresh = self._embed(missing)
            with self._lock:
                self._store(missing, fresh)
            found.update(zip(missing, fresh, strict=True))
        return found

    def _store(self, texts: list[str], vectors: np.ndarray) -> None:
        """Memoise part vectors (the caller holds the lock), dropping the oldest past the cap."""
        for text, vector in zip(texts, vectors, strict=True):
            self._memo[text] = vector
            self._memo.move_to_end(text)
            self._from_store.discard(text)
        while len(self._memo) > _MEMO_SIZE:
            self._from_store.discard(self._memo.popitem(last=False)[0])


def _has_words(text: str) -> bool:
    return count_words(text) > 0
