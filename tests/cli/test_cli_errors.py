"""User text in the terminal is never markup; `report`, `serve` and `eval` inputs fail in one
line, never with a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

Invoke = Callable[..., Result]


def _user_error(result: Result, text: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert text in result.stderr
    assert "Traceback" not in result.output


# ---- user text is never markup -------------------------------------------------------------------
def test_user_text_is_printed_as_is(invoke: Invoke, tmp_path: Path) -> None:
    scope = ("--tenant", "ac[/me]", "--model", "[bold]m[/x]")
    assert invoke(*scope, "insert", "what [/x] is this", "[/]answer").exit_code == 0
    hit = invoke(*scope, "query", "what [/x] is this")
    assert hit.exit_code == 0, hit.output
    assert "what [/x] is this" in hit.stdout and "[/]answer" in hit.stdout
    stats = invoke("stats")
    assert stats.exit_code == 0, stats.output
    assert "ac[/me]" in stats.stdout and "[bold]m[/x]" in stats.stdout
    out = tmp_path / "o[bold]ut.jsonl"
    exported = invoke("export", "-o", str(out))
    assert exported.exit_code == 0 and "o[bold]ut.jsonl" in exported.stderr
    cleared = invoke(*scope, "clear", "--yes")
    assert cleared.exit_code == 0, cleared.output
    assert "deleted 1 entries (tenant=ac[/me], model=[bold]m[/x])" in cleared.stdout


@pytest.mark.parametrize("at", ['"x"', "null", "1e400", "1e30", "true"])
def test_report_of_a_log_file_with_a_bad_time(invoke: Invoke, tmp_path: Path, at: str) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text(
        f'{{"at": 1700000000, "op": "lookup"}}\n{{"at": {at}, "op": "lookup"}}\n', "utf-8"
    )
    _user_error(invoke("report", "--log-file", str(log)), "log.jsonl:2: 'at' must be a time")


def test_report_of_a_log_file_with_bad_numbers(invoke: Invoke, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"at": 1700000000, "op": "lookup", "latency_ms": "fast"}\n', "utf-8")
    _user_error(invoke("report", "--log-file", str(log)), "'latency_ms' must be")
    log.write_text('{"at": 1700000000, "op": "lookup", "hit": true, "answer_tokens": 1e400}\n')
    _user_error(invoke("report", "--log-file", str(log)), "'answer_tokens' must be")


def test_serve_refuses_an_unknown_log_level(invoke: Invoke) -> None:
    _user_error(invoke("serve", "--log-level", "bogus"), "--log-level must be one of")


def test_eval_of_a_list_of_non_objects(invoke: Invoke, tmp_path: Path) -> None:
    src = tmp_path / "pairs.json"
    src.write_text("[1, 2]", encoding="utf-8")
    _user_error(invoke("eval", str(src)), "pairs.json: item 1: expected an object")
