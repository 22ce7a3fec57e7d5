"""The verifier hook really runs: on top-k candidates only, with its own threshold."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from modelcache import Cache, Request
from modelcache.errors import ConfigError
from modelcache.verifier import CallableVerifier, Verifier, load_verifier

STORED = "How do I reset my forgotten password?"
ASKED = "How can I reset my forgotten password?"


class Recorder:
    """A verifier callable that records what it was asked and answers a fixed score."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls: list[list[tuple[str, str]]] = []

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self.calls.append(list(pairs))
        return [self.value] * len(pairs)


def _cache(make_cache: Callable[..., Cache], fn: Recorder, **fields: object) -> Cache:
    cache = make_cache(similarity_threshold=0.5, similarity_threshold_long=0.5, **fields)
    cache.close()
    return Cache(cache.config, embedder=cache.embedder, verifier=fn)


def test_verifier_flips_the_decision(make_cache: Callable[..., Cache]) -> None:
    low, high = Recorder(0.1), Recorder(0.9)
    for fn, expect_hit in ((low, False), (high, True)):
        with _cache(make_cache, fn, verifier_threshold=0.5) as cache:
            cache.insert(Request.from_text(STORED), "answer")
            hit = cache.lookup(Request.from_text(ASKED))
            assert (hit is not None) is expect_hit
            assert fn.calls == [[(ASKED, STORED)]]  # (request, candidate), normalised text


def test_verifier_skips_exact_hits_and_confident_candidates(
    make_cache: Callable[..., Cache],
) -> None:
    fn = Recorder(0.0)
    with _cache(make_cache, fn, verifier_band=0.0) as cache:  # band 0: nothing is "unsure"
        cache.insert(Request.from_text(STORED), "answer")
        assert cache.lookup(Request.from_text(STORED)) is not None  # exact: no verifier
        assert cache.lookup(Request.from_text(ASKED)) is not None  # above threshold + band
    assert fn.calls == []


def test_verifier_falls_through_to_the_next_candidate(make_cache: Callable[..., Cache]) -> None:
    def picky(pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [1.0 if "account" in cand else 0.0 for _, cand in pairs]

    cache0 = make_cache(similarity_threshold=0.3, similarity_threshold_long=0.3, guard=False)
    cache0.close()
    with Cache(cache0.config, embedder=cache0.embedder, verifier=picky) as cache:
        cache.insert(Request.from_text("How do I reset my forgotten password?"), "first")
        cache.insert(Request.from_text("How do I reset my account password?"), "second")
        hit = cache.lookup(Request.from_text("How can I reset my forgotten password?"))
        assert hit is not None and hit.answer == "second"


def test_load_verifier_accepts_callables_and_verifiers() -> None:
    v = load_verifier(lambda pairs: [0.25 for _ in pairs])
    assert isinstance(v, Verifier) and v.score([("a", "b")]) == [0.25]
    assert load_verifier(v) is v
    assert CallableVerifier(lambda pairs: []).score([]) == []
    with pytest.raises(ValueError, match="2 pairs"):
        CallableVerifier(lambda pairs: [1.0]).score([("a", "b"), ("c", "d")])


def test_load_verifier_rejects_a_missing_directory(tmp_path: object) -> None:
    with pytest.raises(ConfigError):
        load_verifier(str(tmp_path) + "/nope")
