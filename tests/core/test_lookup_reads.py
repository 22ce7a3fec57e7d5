"""The lookup's fast paths return what the general ones do: raw SQLite reads vs Core SQL, and
remembered token counts vs counting again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelcache import Cache, FakeEmbedder, Request


def _rows(store: Any, raw: bool, call: Callable[[], Any]) -> Any:
    store._raw_reads = raw
    try:
        return call()
    finally:
        store._raw_reads = True


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
    pid = alpha[0].partition.id
    ids = [r.exact_key for r in alpha] + [other.exact_key, short.exact_key, "f" * 32]

    for now in (clock(), clock() + 60):  # before and after the short entry expired
        for key in (alpha[5].exact_key, short.exact_key, other.exact_key, "f" * 32):
            raw = _rows(store, True, lambda k=key, t=now: store.get_live(k, pid, t))
            core = _rows(store, False, lambda k=key, t=now: store.get_live(k, pid, t))
            assert (raw and raw.model_dump()) == (core and core.model_dump())
    assert store.get_live(short.exact_key, pid, clock() + 60) is None
    assert store.get_live(alpha[5].exact_key, pid, clock()) is not None

    raw_many = _rows(store, True, lambda: store.get_many(ids, pid))
    core_many = _rows(store, False, lambda: store.get_many(ids, pid))
    assert len(raw_many) == len(alpha) + 1  # more than one IN (...) chunk; never the other tenant
    assert other.exact_key not in raw_many
    assert {k: v.model_dump() for k, v in raw_many.items()} == {
        k: v.model_dump() for k, v in core_many.items()
    }


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
