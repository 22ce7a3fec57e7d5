"""Async twins: the same results as the sync API, and the event loop keeps running meanwhile."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from loop_support import SlowEmbedder, ticks_during

from modelcache import Cache, Hit, Message, Request

Q = "How do I reset my password?"
PARAPHRASE = "How do I reset my password please?"


def rq(text: str = Q, **scope: Any) -> Request:
    """A single-turn request."""
    return Request.from_text(text, **scope)


def _hit(hit: Hit | None) -> tuple[Any, ...] | None:
    return None if hit is None else (hit.answer, hit.kind, round(hit.similarity, 5), hit.entry_id)


HISTORY = (Message("user", "What is tax law?"), Message("assistant", "Rules."))
ITEMS = [
    (rq(), "pw"),
    (rq("What is the capital of France?"), "Paris"),
    (rq(Q, tenant="other"), "other tenant"),
    (Request("explain more", history=HISTORY), {"more": "tax"}),
]
LOOKUPS = [
    rq(),
    rq(PARAPHRASE),
    rq("what is the capital of france?"),
    rq(Q, tenant="other"),
    rq(Q, tenant="nobody"),
    Request("explain more", history=HISTORY),
    Request("explain more"),
]


def _summary(stats: dict[str, Any]) -> tuple[Any, ...]:
    keys = ("entries", "lookups", "hits", "exact_hits", "semantic_hits", "misses", "inserts")
    return tuple(stats[k] for k in keys)


async def test_async_twins_match_the_sync_api(
    make_cache: Callable[..., Cache], tmp_path: Path
) -> None:
    sync, asyn = make_cache(tmp_path / "sync"), make_cache(tmp_path / "async")

    s_ids = sync.insert_many(ITEMS[:2])
    a_ids = await asyn.ainsert_many(ITEMS[:2])
    assert s_ids == a_ids
    assert sync.insert(*ITEMS[2], metadata={"m": 1}) == await asyn.ainsert(
        *ITEMS[2], metadata={"m": 1}
    )
    assert sync.insert(*ITEMS[3]) == await asyn.ainsert(*ITEMS[3])

    s_hits = [_hit(sync.lookup(r)) for r in LOOKUPS]
    a_hits = [_hit(await asyn.alookup(r)) for r in LOOKUPS]
    assert s_hits == a_hits
    assert sum(h is not None for h in s_hits) == 5
    assert _hit(sync.lookup(rq(PARAPHRASE), threshold=0.99)) == _hit(
        await asyn.alookup(rq(PARAPHRASE), threshold=0.99)
    )
    assert _summary(sync.stats()) == _summary(await asyn.astats())

    assert sync.remove([s_ids[1], "nope"]) == await asyn.aremove([a_ids[1], "nope"]) == 1
    assert sync.clear(tenant="other") == await asyn.aclear(tenant="other") == 1
    assert [_hit(sync.lookup(r)) for r in LOOKUPS] == [_hit(await asyn.alookup(r)) for r in LOOKUPS]
    assert sync.clear() == await asyn.aclear() == 2
    assert _summary(sync.stats()) == _summary(await asyn.astats())
    assert sync.check().ok and asyn.check().ok


async def test_slow_embedding_does_not_block_the_loop(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache(embedder=SlowEmbedder(delay=0.3))
    _, ticks, seconds = await ticks_during(cache.ainsert(rq(), "pw"))
    assert seconds >= 0.3 and ticks >= 10, f"loop blocked during ainsert: {ticks} ticks"
    hit, ticks, seconds = await ticks_during(cache.alookup(rq(PARAPHRASE)))
    assert hit is not None and hit.kind == "semantic"
    assert seconds >= 0.3 and ticks >= 10, f"loop blocked during alookup: {ticks} ticks"
    _, ticks, _ = await ticks_during(cache.ainsert_many([(rq("a b c"), 1), (rq("d e f"), 2)]))
    assert ticks >= 10, f"loop blocked during ainsert_many: {ticks} ticks"


async def test_concurrent_async_lookups(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    await cache.ainsert_many([(rq(f"question {i} about topic {i}"), i) for i in range(20)])
    hits = await asyncio.gather(
        *(cache.alookup(rq(f"question {i} about topic {i}")) for i in range(20))
    )
    assert [h.answer if h else None for h in hits] == list(range(20))
    stats = await cache.astats()
    assert (stats["lookups"], stats["exact_hits"]) == (20, 20)


@pytest.mark.parametrize(
    "name", ["lookup", "insert", "insert_many", "remove", "register", "clear", "stats"]
)
async def test_each_twin_shows_and_calls_its_sync_method(
    name: str, make_cache: Callable[..., Cache], monkeypatch: pytest.MonkeyPatch
) -> None:
    """help() and inspect see the sync method's parameters; the call reaches the instance's
    method, so a replaced one (a test double, a subclass override) is the one run."""
    sync, twin = getattr(Cache, name), getattr(Cache, f"a{name}")
    assert inspect.iscoroutinefunction(twin) and twin.__name__ == f"a{name}"
    assert inspect.signature(twin) == inspect.signature(sync)
    assert f":meth:`{name}`" in (twin.__doc__ or "")
    cache = make_cache()
    calls: list[tuple[Any, ...]] = []

    def double(*args: Any, **kwargs: Any) -> str:
        calls.append((args, kwargs))
        return "done"

    monkeypatch.setattr(cache, name, double)
    assert await getattr(cache, f"a{name}")(1, two=2) == "done"
    assert calls == [((1,), {"two": 2})]
