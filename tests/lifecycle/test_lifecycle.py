"""Eviction, TTL, hit bookkeeping, query log and statistics, on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcache import Cache, CacheConfig, FakeEmbedder, Request


class _Clock:
    """A settable clock: TTL tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same tests on every supported SQL backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mc.db'}"
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def new_cache(tmp_path: Path, sql_url: str) -> Iterator[Any]:
    caches: list[Cache] = []

    def make(clock: _Clock | None = None, **config: Any) -> Cache:
        cfg = CacheConfig(path=str(tmp_path / "store"), sql_url=sql_url, guard=False, **config)
        cache = Cache(cfg, embedder=FakeEmbedder(), clock=clock or _Clock())
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        cache.close()


_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


def _req(word: str) -> Request:
    return Request.from_text(f"tell me about {word}")


def _alive(cache: Cache) -> list[str]:
    return sorted(e["query"].split()[-1] for e in cache.export())


def _fill(cache: Cache, clock: _Clock, words: list[str]) -> None:
    for word in words:
        clock.tick()
        cache.insert(_req(word), word)


def test_lru_keeps_the_entry_read_before_the_fifth_insert(new_cache: Any) -> None:
    clock = _Clock()
    cache = new_cache(clock, eviction="lru", max_entries_per_partition=4)
    _fill(cache, clock, _WORDS[:4])
    clock.tick()
    assert cache.lookup(_req("alpha")) is not None
    _fill(cache, clock, ["echo"])
    # 5 > 4: shrink to floor(4 * 0.9) = 3, evicting the two least recently used.
    assert _alive(cache) == ["alpha", "delta", "echo"]
    assert cache.check().ok
    assert cache.stats()["evictions"] == 2


def test_lfu_evicts_the_least_hit(new_cache: Any) -> None:
    clock = _Clock()
    cache = new_cache(clock, eviction="lfu", max_entries_per_partition=4)
    _fill(cache, clock, _WORDS[:4])
    for word, reads in (("alpha", 1), ("bravo", 3), ("charlie", 2), ("delta", 0)):
        for _ in range(reads):
            clock.tick()
            assert cache.lookup(_req(word)) is not None
    _fill(cache, clock, ["echo"])
    # delta (0 hits) and echo (0 hits, newer) tie on count: the older last hit goes first.
    assert _alive(cache) == ["bravo", "charlie", "echo"]
    assert cache.check().ok


def test_a_bulk_load_larger_than_the_target_is_not_shielded(new_cache: Any) -> None:
    cache = new_cache(_Clock(), eviction="lfu", max_entries_per_partition=4)
    cache.insert_many([(_req(word), word) for word in _WORDS])
    # 6 > 4: shrink to 3; the 6 entries just written cannot all be spared, or none could go
    assert len(_alive(cache)) == 3
    assert cache.check().ok


def test_fifo_evicts_the_oldest_despite_reads(new_cache: Any) -> None:
    clock = _Clock()
    cache = new_cache(clock, eviction="fifo", max_entries_per_partition=4)
    _fill(cache, clock, _WORDS[:4])
    for _ in range(5):
        clock.tick()
        cache.lookup(_req("alpha"))
    _fill(cache, clock, ["echo"])
    assert _alive(cache) == ["charlie", "delta", "echo"]
    assert cache.check().ok


def test_global_capacity_spans_partitions(new_cache: Any) -> None:
    clock = _Clock()
    cache = new_cache(clock, eviction="fifo", max_entries=4)
    for i, word in enumerate(_WORDS[:5]):
        clock.tick()
        cache.insert(Request.from_text(f"tell me about {word}", model=f"m{i % 2}"), word)
    assert len(list(cache.export())) == 3
    assert _alive(cache) == ["charlie", "delta", "echo"]
    assert cache.check().ok


def test_policy_none_never_evicts(new_cache: Any) -> None:
    clock = _Clock()
    cache = new_cache(clock, eviction="none", max_entries_per_partition=2)
    _fill(cache, clock, _WORDS)
    assert len(_alive(cache)) == len(_WORDS)


def test_ttl_expiry_with_injected_clock(new_cache: Any) -> None:
    clock = _Clock()
    cache = new_cache(clock, ttl_seconds=60)
    cache.insert(_req("alpha"), "default ttl")
    cache.insert(_req("bravo"), "short ttl", ttl=10)
    clock.tick(11)
    assert cache.lookup(_req("bravo")) is None  # expired: never a hit, exact or semantic
    assert cache.lookup(Request.from_text("tell me about bravo please")) is None
    assert cache.lookup(_req("alpha")) is not None
    clock.tick(50)
    assert cache.lookup(_req("alpha")) is None
    assert cache.purge_expired() == 2
    assert list(cache.export()) == []
    assert cache.check().ok
    assert cache.stats()["expirations"] == 2


def test_sliding_ttl_extends_life_on_hit(new_cache: Any) -> None:
    clock = _Clock()
    cache = new_cache(clock, ttl_seconds=10, sliding_ttl=True)
    cache.insert(_req("alpha"), "a")
    for _ in range(5):
        clock.tick(8)
        assert cache.lookup(_req("alpha")) is not None
        cache.flush()
    clock.tick(11)
    assert cache.lookup(_req("alpha")) is None


def test_hit_bookkeeping_is_deferred_then_flushed(new_cache: Any) -> None:
    clock = _Clock()
    cache = new_cache(clock)
    cache.insert(_req("alpha"), "a")
    for _ in range(3):
        clock.tick()
        cache.lookup(_req("alpha"))
    cache.flush()
    entry = next(cache.export())
    assert entry["hit_count"] == 3
    stats = cache.stats()
    assert stats["stored_hits"] == 3 and stats["tokens_saved"] > 0
    part = stats["partitions"][0]
    assert part["hits"] == 3 and part["exact_hits"] == 3 and part["lookups"] == 3


def test_query_log_records_lookups_and_inserts(new_cache: Any) -> None:
    clock = _Clock()
    cache = new_cache(clock, query_log=True)
    cache.insert(_req("alpha"), "a")
    cache.lookup(_req("alpha"))
    cache.lookup(Request.from_text("tell me about alpha now"))
    cache.lookup(Request.from_text("something else entirely"))
    rows = list(cache.export_log())
    assert [r["op"] for r in rows] == ["insert", "lookup", "lookup", "lookup"]
    exact, semantic, miss = rows[1:]
    assert exact["hit"] and exact["kind"] == "exact" and exact["similarity"] == 1.0
    assert semantic["hit"] and semantic["kind"] == "semantic"
    assert semantic["matched_query"] == "tell me about alpha"
    assert not miss["hit"] and miss["entry_id"] is None
    json.dumps(rows)  # JSONL-exportable


def test_query_log_burst_no_loss_below_bound_and_counted_drops_above(new_cache: Any) -> None:
    clock = _Clock()
    cache = new_cache(clock, query_log=True, query_log_queue=200)
    cache.insert(_req("alpha"), "a")
    cache._writer._stop.set()  # hold the writer so the burst meets a full queue
    cache._writer._wake.set()
    cache._writer._thread.join(timeout=5)
    cache._writer.run_once()
    before = cache._writer.written

    def burst(n: int) -> None:
        for _ in range(n):
            cache.lookup(_req("alpha"))

    threads = [threading.Thread(target=burst, args=(50,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache._writer.dropped == 0  # 200 lookups fit the bound of 200
    burst(30)
    assert cache._writer.dropped == 30
    cache.flush()
    assert cache._writer.written - before == 200
    assert cache.stats()["log_dropped"] == 30


def test_log_retention_purges_old_rows(new_cache: Any) -> None:
    clock = _Clock()
    cache = new_cache(clock, query_log=True, query_log_retention_days=1)
    cache.lookup(_req("alpha"))
    cache.flush()
    assert len(list(cache.export_log())) == 1
    clock.tick(2 * 86400)
    cache._maintenance._next_retention = 0.0
    cache.lookup(_req("bravo"))
    cache.flush()
    assert [r["query"] for r in cache.export_log()] == ["tell me about bravo"]


def test_eviction_under_concurrent_inserts_keeps_stores_consistent(new_cache: Any) -> None:
    cache = new_cache(None, eviction="lru", max_entries_per_partition=20)

    def writer(k: int) -> None:
        for i in range(30):
            cache.insert(Request.from_text(f"thread {k} question {i}"), i)
            cache.lookup(Request.from_text(f"thread {k} question {i // 2}"))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list(cache.export())) <= 20
    assert cache.check().ok


def test_exact_only_lookup_skips_the_semantic_path(new_cache: Any) -> None:
    cache = new_cache(None)
    cache.insert(_req("alpha"), "a")
    assert cache.lookup(Request.from_text("tell me about alpha now")) is not None
    assert cache.lookup(Request.from_text("tell me about alpha now"), exact_only=True) is None
    hit = cache.lookup(_req("alpha"), exact_only=True)
    assert hit is not None and hit.exact
