"""The query-log summary behind `modelcache report`, `stats --since` and the traffic notebook."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from modelcache import Cache, CacheConfig, Request
from modelcache.embedding import FakeEmbedder
from modelcache.report import parse_since, summarize

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 3600  # the start of a clock hour


def _row(at: float, op: str = "lookup", **fields: Any) -> dict[str, Any]:
    base = {"at": at, "op": op, "partition_id": "p1", "tenant": "t", "model": "m", "query": "q"}
    return {**base, "hit": False, "kind": None, "latency_ms": 1.0, **fields}


def test_summary_counts_hits_by_hour_and_kind() -> None:
    rows = [
        _row(T0 + 10, latency_ms=4.0),
        _row(T0 + 20, hit=True, kind="exact", latency_ms=1.0, answer_tokens=30),
        _row(T0 + 3600 + 5, hit=True, kind="semantic", latency_ms=9.0, answer_tokens=12),
        _row(T0 + 3600 + 6, hit=True, kind="semantic", latency_ms=11.0, answer_tokens=None),
        _row(T0 + 3600 + 7, op="insert", latency_ms=0.0),
    ]
    s = summarize(rows)
    assert (s.lookups, s.hits, s.exact_hits, s.semantic_hits, s.inserts) == (4, 3, 1, 2, 1)
    assert s.hit_rate == 0.75
    hours = [(h.start, h.lookups, h.hits, h.tokens_saved) for h in s.hours]
    assert hours == [(T0, 2, 1, 30), (T0 + 3600, 2, 2, 12)]
    assert [h.hit_rate for h in s.hours] == [0.5, 1.0]
    assert (s.latency["semantic"].count, s.latency["semantic"].p50_ms) == (2, 10.0)
    assert (s.latency["exact"].p50_ms, s.latency["miss"].p95_ms) == (1.0, 4.0)
    assert s.tokens_saved == 42 and s.hits_without_tokens == 1  # one entry is gone
    assert (s.first_at, s.last_at) == (T0 + 10, T0 + 3600 + 7)
    assert s.partitions["p1"].lookups == 4 and s.partitions["p1"].hits == 3


def test_time_saved_uses_the_median_gap_from_a_miss_to_its_insert() -> None:
    rows = [
        _row(100.0, query="a"),
        _row(102.0, op="insert", query="a"),  # the LLM took 2 s
        _row(110.0, query="b"),
        _row(114.0, op="insert", query="b"),  # 4 s
        _row(120.0, query="c"),
        _row(123.0, op="insert", query="c"),  # 3 s
        _row(130.0, query="d"),
        _row(130.0 + 3600, op="insert", query="d"),  # an hour later: a bulk load, not a call
        _row(140.0, op="insert", query="e"),  # inserted without a miss first
        _row(150.0, hit=True, kind="exact", query="a", latency_ms=500.0),
        _row(151.0, hit=True, kind="semantic", query="b", latency_ms=1000.0),
    ]
    s = summarize(rows)
    assert s.llm_seconds == 3.0
    assert s.time_saved_s == pytest.approx((3.0 - 0.5) + (3.0 - 1.0))


def test_time_saved_is_unknown_without_a_miss_and_its_insert() -> None:
    s = summarize([_row(1.0, hit=True, kind="exact"), _row(2.0, op="insert", query="x")])
    assert s.llm_seconds is None and s.time_saved_s is None


def test_since_drops_older_rows_and_an_empty_log_summarizes_to_zero() -> None:
    rows = [_row(10.0), _row(20.0, hit=True, kind="exact"), _row(30.0)]
    s = summarize(rows, since=20.0)
    assert (s.lookups, s.hits, s.first_at) == (2, 1, 20.0)
    empty = summarize([])
    assert (empty.lookups, empty.hit_rate, empty.hours, empty.first_at) == (0, 0.0, [], None)
    assert empty.latency["miss"].p50_ms is None
    json.dumps(empty.to_dict())


def test_to_dict_is_json_with_hit_rates() -> None:
    data = summarize([_row(T0, hit=True, kind="exact", answer_tokens=5), _row(T0 + 1)]).to_dict()
    assert data["hit_rate"] == 0.5 and data["hours"][0]["hit_rate"] == 0.5
    assert json.loads(json.dumps(data))["latency"]["exact"]["count"] == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", 1000.0 - 86_400),
        ("30m", 1000.0 - 1800),
        ("90s", 910.0),
        ("1.5d", 1000.0 - 129_600),
        ("1700000000", 1_700_000_000.0),
        ("2026-11-30T08:00", datetime(2026, 11, 30, 8, tzinfo=timezone.utc).timestamp()),
        ("2026-11-30T08:00+01:00", datetime(2026, 11, 30, 7, tzinfo=timezone.utc).timestamp()),
    ],
)
def test_parse_since(text: str, expected: float) -> None:
    assert parse_since(text, now=1000.0) == pytest.approx(expected)


def test_parse_since_rejects_nonsense_naming_the_forms() -> None:
    with pytest.raises(ValueError, match="24h"):
        parse_since("yesterday", now=0.0)


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_summary_of_a_real_cache_log_counts_tokens_of_stored_entries(tmp_path: Path) -> None:
    clock = _Clock()
    config = CacheConfig(path=str(tmp_path / "c"), guard=False, query_log=True)
    with Cache(config, embedder=FakeEmbedder(), clock=clock) as cache:
        question = Request.from_text("how do I reset my password")
        answer = "Open settings, choose security, then reset password by email."
        assert cache.lookup(question) is None
        clock.now += 2.0  # the application's LLM call
        cache.insert(question, answer)
        clock.now += 3600
        assert cache.lookup(question) is not None
        assert cache.lookup(question) is not None
        rows = list(cache.export_log())
        stored_tokens = next(r for r in rows if r["hit"])["answer_tokens"]
        s = summarize(rows)
    assert stored_tokens > 0
    assert (s.lookups, s.hits, s.exact_hits, s.inserts) == (3, 2, 2, 1)
    assert s.tokens_saved == 2 * stored_tokens and s.hits_without_tokens == 0
    assert s.llm_seconds == 2.0 and s.time_saved_s is not None and 0 < s.time_saved_s < 4.0
    assert [(h.lookups, h.hits) for h in s.hours] == [(1, 0), (2, 2)]


def test_the_log_of_a_removed_entry_keeps_its_hits_without_tokens(tmp_path: Path) -> None:
    config = CacheConfig(path=str(tmp_path / "c"), guard=False, query_log=True)
    with Cache(config, embedder=FakeEmbedder()) as cache:
        question = Request.from_text("what are your opening hours")
        cache.insert(question, "nine to five")
        hit = cache.lookup(question)
        assert hit is not None
        cache.remove([hit.entry_id])
        s = summarize(cache.export_log())
    assert (s.hits, s.tokens_saved, s.hits_without_tokens) == (1, 0, 1)
