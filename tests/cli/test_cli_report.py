"""`modelcache report` and `modelcache stats --since`: the query-log summary in the terminal."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

Invoke = Callable[..., Result]


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def traffic(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """One insert, two exact hits and a miss, with the query log on."""
    monkeypatch.setenv("MODELCACHE_QUERY_LOG", "true")
    assert invoke("insert", "how do I reset my password", "click forgot password").exit_code == 0
    for text in ("how do I reset my password", "how do I reset my password", "unrelated"):
        assert invoke("query", text, "--json").exit_code == 0


def test_report_prints_hit_rate_latency_and_tokens(invoke: Invoke, traffic: None) -> None:
    result = invoke("report")
    assert result.exit_code == 0, result.output
    assert "3 lookups" in result.stdout and "67% hits (2 exact, 0 semantic)" in result.stdout
    assert "Hit rate by hour" in result.stdout and "Lookup latency" in result.stdout
    assert "tokens saved:" in result.stdout


def test_report_json_matches_the_log(invoke: Invoke, traffic: None) -> None:
    data = _json(invoke("report", "--json"))
    assert (data["lookups"], data["hits"], data["exact_hits"], data["inserts"]) == (3, 2, 2, 1)
    assert data["tokens_saved"] > 0 and data["latency"]["miss"]["count"] == 1
    assert sum(h["lookups"] for h in data["hours"]) == 3


def test_report_since_the_future_is_empty(invoke: Invoke, traffic: None) -> None:
    assert _json(invoke("report", "--since", str(time.time() + 60), "--json"))["lookups"] == 0
    result = invoke("report", "--since", str(time.time() + 60))
    assert result.exit_code == 0 and "no lookups" in result.output


def test_report_reads_an_exported_log_file(invoke: Invoke, traffic: None, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    assert invoke("export", "--log", "--output", str(log)).exit_code == 0
    from_file = _json(invoke("report", "--log-file", str(log), "--json"))
    assert from_file == _json(invoke("report", "--json"))


def test_report_rejects_a_file_that_is_not_a_log(invoke: Invoke, tmp_path: Path) -> None:
    entries = tmp_path / "entries.jsonl"
    entries.write_text('{"query": "q", "answer": "a"}\n', encoding="utf-8")
    result = invoke("report", "--log-file", str(entries))
    assert result.exit_code == 1 and "not a query-log row" in result.output


def test_bad_since_is_a_one_line_error(invoke: Invoke) -> None:
    for command in ("report", "stats"):
        result = invoke(command, "--since", "last tuesday")
        assert result.exit_code == 1 and "24h" in result.output, result.output


def test_stats_since_adds_recent_lookups_per_partition(invoke: Invoke, traffic: None) -> None:
    data = _json(invoke("stats", "--since", "1h", "--json"))
    (part,) = data["partitions"]
    assert part["since"] == {"lookups": 3, "hits": 2}
    later = _json(invoke("stats", "--since", str(time.time() + 60), "--json"))
    assert later["partitions"][0]["since"] == {"lookups": 0, "hits": 0}
    table = invoke("stats", "--since", "1h")
    assert table.exit_code == 0 and "67%" in table.stdout
    assert "query log since" in table.stdout
    assert "since" not in _json(invoke("stats", "--json"))["partitions"][0]
