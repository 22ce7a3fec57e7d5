"""Bulk loads (issue 14, item 4): batched, pipelined ``insert_many`` with progress, partial
progress kept on failure, and batched ONNX inference equal to one text at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from modelcache import BackendError, Cache, ConfigError, FakeEmbedder, Request
from modelcache.embedding import OnnxSentenceEmbedder
from modelcache.engine import _INSERT_BATCH

COUNT = 2 * _INSERT_BATCH + 17  # three batches, the last one short


def _items(count: int = COUNT) -> list[tuple[Request, Any]]:
    return [
        (Request.from_text(f"bulk question number {i} about topic {i % 7}"), i)
        for i in range(count)
    ]


class FailingEmbedder(FakeEmbedder):
    """Fails on the ``fail_on``-th call to ``embed`` (1-based)."""

    def __init__(self, fail_on: int) -> None:
        super().__init__()
        self.calls = 0
        self.fail_on = fail_on

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("the embedding runtime died")
        return super().embed(texts)


def test_insert_many_reports_progress_per_written_batch(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    seen: list[tuple[int, int]] = []
    items = _items()
    ids = cache.insert_many(items, progress=lambda done, total: seen.append((done, total)))
    assert ids == [r.exact_key for r, _ in items]
    assert seen == [(_INSERT_BATCH, COUNT), (2 * _INSERT_BATCH, COUNT), (COUNT, COUNT)]
    assert cache.stats()["entries"] == COUNT
    for request, answer in items[:: _INSERT_BATCH // 2]:
        hit = cache.lookup(request)
        assert hit is not None and hit.answer == answer
    assert cache.check().ok


def test_a_duplicate_key_across_batches_keeps_the_last_answer(
    make_cache: Callable[..., Cache],
) -> None:
    cache = make_cache()
    items = _items()
    items.append((items[0][0], "replaced"))
    cache.insert_many(items)
    assert cache.stats()["entries"] == COUNT
    hit = cache.lookup(items[0][0])
    assert hit is not None and hit.answer == "replaced"


def test_a_failed_batch_keeps_the_batches_written_before_it(
    make_cache: Callable[..., Cache],
) -> None:
    cache = make_cache()
    writes = 0
    upsert = cache._vectors.upsert

    def second_fails(*args: Any, **kwargs: Any) -> None:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise RuntimeError("the Chroma folder is gone")
        upsert(*args, **kwargs)

    cache._vectors.upsert = second_fails  # type: ignore[method-assign]
    items = _items()
    with pytest.raises(BackendError):
        cache.insert_many(items)
    del cache._vectors.upsert
    assert cache.stats()["entries"] == _INSERT_BATCH
    kept = cache.stored(items)
    # the first batch holds the shortest texts (insert_many takes them shortest first)
    lengths = {r.exact_key: len(r.query_text) for r, _ in items}
    assert len(kept) == _INSERT_BATCH
    assert max(lengths[k] for k in kept) <= min(lengths[k] for k in set(lengths) - kept)
    assert cache.check().ok, "no row without its vector"
    cache.insert_many(items)  # loading again completes the load
    assert cache.stats()["entries"] == COUNT
    assert cache.check().ok


def test_an_embedding_failure_waits_for_the_batch_being_written(
    make_cache: Callable[..., Cache],
) -> None:
    cache = make_cache(embedder=FailingEmbedder(fail_on=2))
    items = _items()
    with pytest.raises(BackendError):
        cache.insert_many(items)
    assert cache.stats()["entries"] == _INSERT_BATCH, "the first batch was written in full"
    assert cache.check().ok


@pytest.mark.model
def test_batched_parallel_onnx_equals_one_text_at_a_time(minilm: OnnxSentenceEmbedder) -> None:
    texts = [
        "How do I reset my password?",
        "a",
        "What is the best way to learn a new language as an adult with little free time?",
        "Why is the sky blue?",
    ] * 12 + [f"question {i} " * (i % 9 + 1) for i in range(40)]
    parallel = OnnxSentenceEmbedder(workers=2)
    together = parallel.embed(texts)
    alone = np.stack([minilm.embed([t])[0] for t in texts])
    cosine = np.sum(together * alone, axis=1)
    assert float(cosine.min()) > 0.99999


def test_stored_names_only_live_entries_with_the_same_answer(
    make_cache: Callable[..., Cache], clock: Any
) -> None:
    cache = make_cache()
    items = _items(4)
    cache.insert_many(items[:2], metadata={"source": "faq"})
    cache.insert_many(items[2:3], ttl=10)
    keys = [r.exact_key for r, _ in items]
    assert cache.stored(items, metadata={"source": "faq"}) == set(keys[:2])
    assert cache.stored(items) == set(), "other metadata: not the stored entry"
    assert cache.stored(items[2:], ttl=10) == {keys[2]}
    changed = [(items[0][0], "another answer")]
    assert cache.stored(changed, metadata={"source": "faq"}) == set()
    clock.advance(11)
    assert cache.stored(items[2:], ttl=10) == set(), "an expired entry is loaded again"


def test_eviction_spares_every_entry_of_a_default_batch(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache(max_entries=1000, eviction="lfu")
    old = [(Request.from_text(f"old question number {i}"), "a") for i in range(1000)]
    cache.insert_many(old)
    for request, _ in old:
        cache.lookup(request)  # every old entry has a hit; the new ones have none
    cache.flush()
    new = [(Request.from_text(f"new question {i} " + "x" * i), "b") for i in range(_INSERT_BATCH)]
    cache.insert_many(new)
    # the longest texts come last in a batch: a protection shorter than the batch evicted them
    assert cache.stored(new) == {r.exact_key for r, _ in new}


def test_insert_many_keeps_each_given_expiry_and_the_ttl(
    make_cache: Callable[..., Cache], clock: Any
) -> None:
    cache = make_cache()
    items = _items(3)
    keys = [r.exact_key for r, _ in items]
    expiries = {keys[0]: clock.now + 40, keys[1]: clock.now + 70}  # what remained of them
    cache.insert_many(items, ttl=100, _expires_at=expiries)
    rows = {row["id"]: row for row in cache.export()}
    assert [(rows[k]["ttl"], rows[k]["expires_at"]) for k in keys] == [
        (100, clock.now + 40),
        (100, clock.now + 70),
        (100, clock.now + 100),  # not in the mapping: ttl from now
    ]
    clock.advance(50)
    assert cache.lookup(items[0][0]) is None
    hit = cache.lookup(items[1][0])
    assert hit is not None and hit.answer == 1
    with pytest.raises(ConfigError):
        cache.insert_many(items[:1], _expires_at={keys[0]: float("inf")})


def test_stored_with_an_expiry_is_the_same_entry_within_a_second_or_later(
    make_cache: Callable[..., Cache], clock: Any
) -> None:
    cache = make_cache()
    items = _items(2)
    keys = [r.exact_key for r, _ in items]
    at = clock.now + 60
    cache.insert_many(items, ttl=100, _expires_at={keys[0]: at, keys[1]: at})
    assert cache.stored(items, ttl=100, _expires_at={keys[0]: at + 0.5, keys[1]: at}) == set(keys)
    # an entry renewed since (a sliding ttl's hits) expires later: still the same entry
    assert cache.stored(items, ttl=100, _expires_at={keys[0]: at - 30}) == set(keys)
    # one that would expire sooner than the import says is written again
    assert cache.stored(items, ttl=100, _expires_at={keys[0]: at + 30}) == {keys[1]}
    assert cache.stored(items, ttl=90, _expires_at={keys[0]: at}) == set(), "another ttl"
