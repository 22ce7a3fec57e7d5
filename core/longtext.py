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
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .embedding.base import count_words

__all__ = ["PART_MARGIN", "LongTextCheck", "Region", "differing_regions", "part_threshold"]

log = logging.getLogger("modelcache")

# How far below the short-question threshold a differing part may score. Both prompts share
# the rest of the text (the retrieved context), which fixes the subject as earlier turns do for
# a follow-up, so a reworded question needs less; on benchmarks/data/rag_pairs.jsonl (MiniLM)
# reworded questions scored 0.73-1.00 and other questions over the same context at most 0.62.
PART_MARGIN = 0.15

# A sentence ends at ., !, ?, their CJK forms or a colon / semicolon, followed by a space (texts
# are normalised, so newlines are spaces by now), or at a CJK full stop.
_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|(?<=[。！？；：])")
_KEY_DROP = re.compile(r"[^\w]+", re.UNICODE)


@dataclass(frozen=True)
class Region:
    """One place where two texts differ: the sentences of each side (either may be empty)."""

    old: str
    new: str


def part_threshold(short_threshold: float) -> float:
    """Similarity a differing part needs: the short-question threshold less ``PART_MARGIN``."""
    return short_threshold - PART_MARGIN


def _sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


def _key(sentence: str) -> str:
    """Comparison key of a sentence: case, spacing and punctuation do not count."""
    return _KEY_DROP.sub(" ", sentence.casefold()).strip()


def differing_regions(old: str, new: str) -> tuple[list[Region], int]:
    """The regions where two texts differ, widened to whole sentences, and the shared words.

    Sentences that appear anywhere in the other text (retrieved chunks in another order) do
    not count as differences.
    """
    a, b = _sentences(old), _sentences(new)
    ka, kb = [_key(s) for s in a], [_key(s) for s in b]
    in_a, in_b = set(ka), set(kb)
    regions: list[Region] = []
    shared = 0
    matcher = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            shared += sum(count_words(s) for s in a[i1:i2])
            continue
        old_part = [a[i] for i in range(i1, i2) if ka[i] and ka[i] not in in_b]
        new_part = [b[j] for j in range(j1, j2) if kb[j] and kb[j] not in in_a]
        shared += sum(count_words(a[i]) for i in range(i1, i2) if ka[i] in in_b)
        if old_part or new_part:
            regions.append(Region(" ".join(old_part), " ".join(new_part)))
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

    def applies(self, new: str, old: str) -> bool:
        """True when either text is long enough for its vector to hide a short difference."""
        return self._count(new) >= self._long or self._count(old) >= self._long

    def reason(self, new: str, old: str) -> str | None:
        """Why the stored text ``old`` cannot answer ``new``; None when every part agrees."""
        regions, shared = differing_regions(old, new)
        if not regions:
            return None
        if not shared:
            # nothing in common verbatim: a reworded text, not an edited prompt; the whole
            # vector and the guard over the whole text already decided
            return None
        changed = max(
            sum(count_words(r.old) for r in regions), sum(count_words(r.new) for r in regions)
        )
        if changed > self._max_changed * (shared + changed):
            return f"{changed} of {shared + changed} words differ"
        for region in regions:
            if not (_has_words(region.old) and _has_words(region.new)):
                return "text on one side only"
        vectors = self._embed([t for r in regions for t in (r.old, r.new)])
        for index, region in enumerate(regions):
            similarity = float(np.dot(vectors[2 * index], vectors[2 * index + 1]))
            if similarity < self._threshold:
                return f"a differing part scores {similarity:.3f}"
            if self._conflict is not None:
                conflict = self._conflict(region.new, region.old)
                if conflict is not None:
                    return f"a differing part conflicts: {conflict}"
        return None


def _has_words(text: str) -> bool:
    return count_words(text) > 0
