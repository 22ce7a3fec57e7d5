"""The lookup's fast paths return what the general ones do: raw SQLite reads vs Core SQL, and
remembered token counts vs counting again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np

from modelcache import Cache, FakeEmbedder, Message, Request
from modelcache.storage.rows import Entry


def _rows(store: Any, raw: bool, call: Callable[[], Any]) -> Any:
    store._raw_reads = raw
    try:
        return call()
    finally:
        store._raw_reads = True


def _plain(entry: Entry | None) -> Any:
    """An entry's fields, comparable (its context vector as a list)."""
    if entry is None:
        return None
    values = [getattr(entry, f.name) for f in fields(entry)]
    return [v.tolist() if isinstance(v, np.ndarray) else v for v in values]


def test_raw_sqlite_reads_equal_the_core_reads(
    make_cache: Callable[..., Cache], clock: Any
) -> None:
    cache = make_cache()
    store = cache._sql
    assert store._raw_reads  # SQLite takes the raw path
    alpha = [Request.from_text(f"question number {i} about alpha?") for i in range(620)]
    cache.insert_many([(r, {"n": i, "text": "é ✓"}) for i, r in enumerate(alpha)])
    other = Request.from_text("question number 3 about alpha?", tenant="other")
    cache.insert(other, "another tenant's answer", metadata={"k": [1, 2]})
    short = Request.from_text("an answer that expires soon?")
    cache.insert(short, "soon gone", ttl=10)
    follow = Request(query="and about alpha?", history=[Message(role="user", content="hi")])
    cache.insert(follow, "a follow-up")
    pid = alpha[0].partition.id
    ids = [r.exact_key for r in alpha] + [other.exact_key, short.exact_key, follow.exact_key]
    ids.append("f" * 32)

    for now in (clock(), clock() + 60):  # before and after the short entry expired
        keys = (alpha[5].exact_key, short.exact_key, follow.exact_key, other.exact_key, "f" * 32)
        for key in keys:
            raw = _rows(store, True, lambda k=key, t=now: store.get_live(k, pid, t))
            core = _rows(store, False, lambda k=key, t=now: store.get_live(k, pid, t))
            assert _plain(raw) == _plain(core)
        raw_many = _rows(store, True, lambda t=now: store.get_live_many(ids, pid, t))
        core_many = _rows(store, False, lambda t=now: store.get_live_many(ids, pid, t))
        # more than one IN (...) chunk; never the other tenant's row, nor a missing one
        assert set(raw_many) == {r.exact_key for r in [*alpha, short, follow]}
        assert {k: _plain(v) for k, v in raw_many.items()} == {
            k: _plain(v) for k, v in core_many.items()
        }
        assert (raw_many[short.exact_key] is None) == (now > clock())  # expired: None
    assert store.get_live(short.exact_key, pid, clock() + 60) is None
    assert store.get_live(alpha[5].exact_key, pid, clock()) is not None
    entry = store.get_live(follow.exact_key, pid, clock())
    assert entry is not None and entry.context_vector is not None  # decoded for acceptance
    assert entry.context_vector.shape == (cache.embedder.dimension,)


class _CountingEmbedder(FakeEmbedder):
    """Counts how often each text is tokenized."""

    def __init__(self) -> None:
        super().__init__()
        self.counted: dict[str, int] = {}

    def count_tokens(self, text: str) -> int:
        self.counted[text] = self.counted.get(text, 0) + 1
        return super().count_tokens(text)


def test_a_lookup_tokenizes_a_text_once(make_cache: Callable[..., Cache]) -> None:
    embedder = _CountingEmbedder()
    cache = make_cache(embedder=embedder)
    cache.insert(Request.from_text("How do I reset my password?"), "use the link")
    paraphrase = Request.from_text("How do I reset my password please?")
    first = cache.lookup(paraphrase, threshold=0.5)
    second = cache.lookup(paraphrase, threshold=0.5)
    assert first is not None and second is not None and first.answer == second.answer
    assert embedder.counted[paraphrase.query_text] == 1
