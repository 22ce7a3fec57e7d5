"""Crowding margin: in a crowded neighbourhood the best candidate must stand out to be served."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from modelcache import Cache, FakeEmbedder, Message, Request
from modelcache.crowding import crowding_threshold

QUERY = "how do I water a fern"


class PlacedEmbedder(FakeEmbedder):
    """Texts placed at chosen cosine similarities to QUERY (each on its own axis)."""

    def __init__(self, placed: dict[str, float]) -> None:
        super().__init__(64)
        self._placed = placed

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for text in texts:
            vec = np.zeros(self.dimension, dtype=np.float32)
            if text in self._placed:
                cos = self._placed[text]
                axis = 1 + list(self._placed).index(text)
                vec[0], vec[axis] = cos, np.sqrt(1 - cos * cos)
            elif text == QUERY:
                vec[0] = 1.0
            else:
                vec = super().embed([text])[0]
            out.append(vec)
        return np.stack(out)


def _fill(make_cache: Callable[..., Cache], placed: dict[str, float], **fields: object) -> Cache:
    cache = make_cache(embedder=PlacedEmbedder(placed), guard=False, **fields)
    cache.insert_many([(Request.from_text(t), t) for t in placed])
    return cache


CROWD = {"water a fern best": 0.90, **{f"crowd entry {i}": 0.88 for i in range(4)}}
STANDOUT = {"water a fern best": 0.95, **{f"crowd entry {i}": 0.80 for i in range(4)}}


def test_function() -> None:
    assert crowding_threshold([0.9, 0.88, 0.88, 0.88, 0.88], 0.85, 0.05, 5) == pytest.approx(0.93)
    assert crowding_threshold([0.9, 0.7, 0.6, 0.6, 0.5], 0.85, 0.05, 5) == 0.85
    assert crowding_threshold([0.9, 0.88], 0.85, 0.05, 5) == 0.85  # too few to be crowded
    assert crowding_threshold([0.9] * 5, 0.85, None, 5) == 0.85  # turned off


def test_crowded_neighbourhood_misses(make_cache: Callable[..., Cache]) -> None:
    cache = _fill(make_cache, CROWD, crowding_margin=0.05)
    assert cache.lookup(Request.from_text(QUERY)) is None


def test_turned_off_serves_the_crowded_best(make_cache: Callable[..., Cache]) -> None:
    cache = _fill(make_cache, CROWD, crowding_margin=None)
    hit = cache.lookup(Request.from_text(QUERY))
    assert hit is not None and hit.answer == "water a fern best"


def test_a_candidate_that_stands_out_is_served(make_cache: Callable[..., Cache]) -> None:
    cache = _fill(make_cache, STANDOUT, crowding_margin=0.05)
    hit = cache.lookup(Request.from_text(QUERY))
    assert hit is not None and hit.answer == "water a fern best"


def test_rank_beyond_the_recalled_candidates_changes_nothing(
    make_cache: Callable[..., Cache],
) -> None:
    cache = _fill(make_cache, CROWD, crowding_margin=0.05, crowding_rank=6)
    assert cache.lookup(Request.from_text(QUERY)) is not None


def test_follow_ups_keep_their_own_threshold(make_cache: Callable[..., Cache]) -> None:
    """The margin is for short standalone queries; follow-ups are judged by their context."""
    history = (Message("user", "ferns"), Message("assistant", "Ferns like shade."))
    cache = make_cache(embedder=PlacedEmbedder(CROWD), guard=False, crowding_margin=0.05)
    cache.insert_many([(Request(query=t, history=history), t) for t in CROWD])
    hit = cache.lookup(Request(query=QUERY, history=history))
    assert hit is not None and hit.answer == "water a fern best"
