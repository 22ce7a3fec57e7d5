"""`export` and `import` of what a cache holds (expiry, attachments, corrupt rows), and import
files and options that must fail in one line."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_support import Invoke, as_json, assert_user_error

from modelcache import Cache, CacheConfig, Request

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
OTHER_IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,BBBB"}}


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _exported(invoke: Invoke, out: Path, path: Path | None = None) -> list[dict[str, Any]]:
    assert invoke("export", "-o", str(out), path=path).exit_code == 0
    return _lines(out)


def _cache(path: Path, clock: Callable[[], float] = time.time) -> Cache:
    return Cache(CacheConfig(path=str(path), embedder="fake"), clock=clock)


def _image_request(*parts: dict[str, Any], history: bool = False) -> Request:
    earlier = [
        {"role": "user", "content": "look at this one first"},
        {"role": "assistant", "content": "a dog"},
    ]
    current = {
        "role": "user",
        "content": [{"type": "text", "text": "what is in this image"}, *parts],
    }
    return Request.from_messages([*earlier, current] if history else [current], model="vision")


# ---- export / import ---------------------------------------------------------------------------
def test_export_leaves_out_expired_entries_and_import_keeps_each_expiry(
    invoke: Invoke, data_path: Path, tmp_path: Path
) -> None:
    with _cache(data_path, clock=lambda: time.time() - 1000) as cache:  # stored 1000 s ago
        cache.insert(Request.from_text("gone question"), "old", ttl=10)
        cache.insert(Request.from_text("lasting question"), "live", ttl=5000)
        cache.insert(Request.from_text("endless question"), "forever")
    out = tmp_path / "export.jsonl"
    assert invoke("export", "-o", str(out)).exit_code == 0
    exported = {row["query"]: row for row in _lines(out)}
    assert set(exported) == {"lasting question", "endless question"}

    since = dict(exported["lasting question"], query="expired since the export")
    since["expires_at"] = time.time() - 1
    with out.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(since) + "\n")
    copy = tmp_path / "copy"
    result = as_json(invoke("import", str(out), "--json", path=copy))
    assert (result["imported"], result["expired"]) == (2, 1)
    assert "skipped 1 expired" in invoke("import", str(out), path=tmp_path / "again").stdout

    again = tmp_path / "again.jsonl"
    assert invoke("export", "-o", str(again), path=copy).exit_code == 0
    restored = {row["query"]: row for row in _lines(again)}
    assert set(restored) == {"lasting question", "endless question"}
    lasting = restored["lasting question"]
    assert lasting["expires_at"] == exported["lasting question"]["expires_at"]
    assert lasting["ttl"] == 5000  # its own ttl, not what remained of it
    assert restored["endless question"]["expires_at"] is None
    assert restored["endless question"]["ttl"] is None


def test_an_export_imported_into_its_own_cache_is_skipped_with_a_sliding_ttl(
    invoke: Invoke, data_path: Path, tmp_path: Path
) -> None:
    start = time.time() - 10
    moment = [start]
    config = CacheConfig(path=str(data_path), embedder="fake", sliding_ttl=True)
    with Cache(config, clock=lambda: moment[0]) as cache:
        cache.insert(Request.from_text("What is the capital of France?"), "Paris", ttl=100)
        assert cache.lookup(Request.from_text("What is the capital of France?")) is not None
    out = tmp_path / "export.jsonl"
    assert invoke("export", "-o", str(out)).exit_code == 0
    (exported,) = _lines(out)
    assert (exported["ttl"], exported["hit_count"]) == (100, 1)
    with Cache(config, clock=lambda: moment[0]) as cache:
        moment[0] = start + 5  # a hit after the export renews the entry: it expires later
        assert cache.lookup(Request.from_text("What is the capital of France?")) is not None

    assert as_json(invoke("import", str(out), "--json"))["skipped"] == 1
    (own,) = _exported(invoke, tmp_path / "own.jsonl")
    assert (own["hit_count"], own["expires_at"]) == (2, start + 105)  # kept, not rewritten
    copy = tmp_path / "copy"
    assert as_json(invoke("import", str(out), "--json", path=copy))["imported"] == 1
    assert as_json(invoke("import", str(out), "--json", path=copy))["skipped"] == 1
    (restored,) = _exported(invoke, tmp_path / "copy.jsonl", copy)
    assert (restored["ttl"], restored["expires_at"]) == (100, exported["expires_at"])


def test_import_writes_rows_of_one_ttl_in_one_batch_whatever_their_expiry(
    invoke: Invoke, data_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _cache(data_path) as cache:
        for i in range(20):
            cache.insert(Request.from_text(f"question number {i}"), f"answer {i}", ttl=3600)
    out = tmp_path / "export.jsonl"
    assert invoke("export", "-o", str(out)).exit_code == 0
    assert len({row["expires_at"] for row in _lines(out)}) > 1  # one insert, one expiry each
    calls: list[int] = []
    insert_many = Cache.insert_many

    def counted(self: Cache, items: Any, **options: Any) -> list[str]:
        items = list(items)
        calls.append(len(items))
        return insert_many(self, items, **options)

    monkeypatch.setattr(Cache, "insert_many", counted)
    assert as_json(invoke("import", str(out), "--json", path=tmp_path / "copy"))["imported"] == 20
    assert calls == [20]


def test_import_of_an_expiry_uses_it_over_the_ttl_option(invoke: Invoke, tmp_path: Path) -> None:
    rows = [
        {"query": "row with expiry", "answer": "a", "expires_at": time.time() + 600},
        {"query": "row with ttl", "answer": "b", "ttl": 30},
        {"query": "plain row", "answer": "c"},
    ]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert invoke("import", str(src), "--ttl", "7200").exit_code == 0
    exported = {r["query"]: r for r in map(json.loads, invoke("export").stdout.splitlines())}
    assert exported["row with expiry"]["expires_at"] == pytest.approx(time.time() + 600, abs=5)
    assert exported["row with expiry"]["ttl"] == 7200  # the option: a row without its own ttl
    assert (exported["row with ttl"]["ttl"], exported["plain row"]["ttl"]) == (30, 7200)
    # what remains of an expiry made a new ttl on every run: the same file was imported again
    again = invoke("import", str(src), "--ttl", "7200", "--json")
    assert json.loads(again.stdout)["skipped"] == 3, again.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"query": "q1", "answer": "a", "expires_at": "soon"}\n'
        '{"query": "q2", "answer": "a", "ttl": -1}\n'
        '{"query": "q3", "answer": "a", "expires_at": 1e400}\n',
        encoding="utf-8",
    )
    result = invoke("import", str(bad))
    assert_user_error(result, "3 invalid row(s)")
    assert (
        "expires_at must be a number" in result.stderr and "ttl must be positive" in result.stderr
    )


def test_export_import_keeps_the_attachments_and_the_entry_id(
    invoke: Invoke, data_path: Path, tmp_path: Path
) -> None:
    with _cache(data_path) as cache:
        ids = [
            cache.insert(_image_request(IMAGE), "a cat"),
            cache.insert(_image_request(IMAGE, history=True), "a cat, after a dog"),
            cache.insert(Request.from_text("what is in this image", model="vision"), "no image"),
        ]
    out = tmp_path / "export.jsonl"
    assert invoke("export", "-o", str(out)).exit_code == 0
    copy = tmp_path / "copy"
    assert as_json(invoke("import", str(out), "--json", path=copy))["imported"] == 3
    assert invoke("export", "-o", str(tmp_path / "again.jsonl"), path=copy).exit_code == 0
    assert sorted(r["id"] for r in _lines(tmp_path / "again.jsonl")) == sorted(ids)
    with _cache(copy) as cache:
        same = cache.lookup(_image_request(IMAGE))
        assert same is not None and same.answer == "a cat"
        assert cache.lookup(_image_request(OTHER_IMAGE)) is None
        text_only = cache.lookup(Request.from_text("what is in this image", model="vision"))
        assert text_only is not None and text_only.answer == "no image"


def test_export_import_keeps_the_attachments_of_earlier_turns(
    invoke: Invoke, data_path: Path, tmp_path: Path
) -> None:
    def ask(image: dict[str, Any]) -> Request:
        earlier = {"role": "user", "content": [{"type": "text", "text": "and this one?"}, image]}
        reply = {"role": "assistant", "content": "a dog"}
        return Request.from_messages([earlier, reply, {"role": "user", "content": "and?"}])

    with _cache(data_path) as cache:
        entry_id = cache.insert(ask(IMAGE), "an image in an earlier turn")
    out = tmp_path / "export.jsonl"
    assert invoke("export", "-o", str(out)).exit_code == 0
    (row,) = _lines(out)
    assert row["history"][0][2] == ask(IMAGE).history[0].attachments  # the turn's own digest
    assert row["history"][1] == ["assistant", "a dog"]  # a turn without any: as before
    copy = tmp_path / "copy"
    assert as_json(invoke("import", str(out), "--json", path=copy))["imported"] == 1
    assert as_json(invoke("import", str(out), "--json"))["skipped"] == 1  # into itself
    assert invoke("export", "-o", str(tmp_path / "again.jsonl"), path=copy).exit_code == 0
    assert [r["id"] for r in _lines(tmp_path / "again.jsonl")] == [entry_id]
    with _cache(copy) as cache:
        same = cache.lookup(ask(IMAGE))
        assert same is not None and same.kind == "exact"
        assert cache.lookup(ask(OTHER_IMAGE)) is None


def test_import_refuses_attachments_it_cannot_rebuild(
    invoke: Invoke, data_path: Path, tmp_path: Path
) -> None:
    earlier = {"role": "user", "content": [{"type": "text", "text": "and this one?"}, IMAGE]}
    request = Request.from_messages(
        [earlier, {"role": "assistant", "content": "a dog"}, {"role": "user", "content": "and?"}]
    )
    with _cache(data_path) as cache:
        cache.insert(request, "an image in an earlier turn")
    out = tmp_path / "export.jsonl"
    assert invoke("export", "-o", str(out)).exit_code == 0
    (row,) = _lines(out)
    row["history"] = [turn[:2] for turn in row["history"]]  # as an older export wrote it
    out.write_text(json.dumps(row) + "\n", "utf-8")
    result = invoke("import", str(out), path=tmp_path / "copy")
    assert_user_error(result, "1 invalid row(s)")
    assert "export.jsonl:1: an entry with attachments or message fields" in result.stderr
    row["history"][0].append("not a digest")
    out.write_text(json.dumps(row) + "\n", "utf-8")
    assert_user_error(invoke("import", str(out), path=tmp_path / "copy"), "third element must be")
    out.write_text(
        json.dumps({"query": "q", "answer": "a", "attachments": "not a digest"}) + "\n", "utf-8"
    )
    assert_user_error(invoke("import", str(out), path=tmp_path / "copy"), "attachments must be")


def test_export_skips_a_corrupt_entry_and_says_so(
    invoke: Invoke, data_path: Path, tmp_path: Path
) -> None:
    for i in range(3):
        assert invoke("insert", f"question {i}", f"answer {i}").exit_code == 0
    with sqlite3.connect(data_path / "modelcache.db") as db:
        (bad_id,) = db.execute(
            "SELECT id FROM modelcache_entry WHERE query = 'question 1'"
        ).fetchone()
        db.execute("UPDATE modelcache_entry SET answer_json = '{broken' WHERE id = ?", (bad_id,))
    out = tmp_path / "export.jsonl"
    result = invoke("export", "-o", str(out))
    assert_user_error(result, "skipped 1 entries whose stored data is corrupt")
    assert bad_id in result.stderr and "the other 2 were exported" in result.stderr
    assert sorted(r["query"] for r in _lines(out)) == ["question 0", "question 2"]


# ---- input files and options that fail in one line -----------------------------------------------
def test_import_of_a_file_that_is_not_utf8_names_the_line(invoke: Invoke, tmp_path: Path) -> None:
    jsonl = tmp_path / "latin.jsonl"
    jsonl.write_bytes(b'{"query": "fine", "answer": "a"}\n{"query": "caf\xe9", "answer": "b"}\n')
    assert_user_error(invoke("import", str(jsonl)), "latin.jsonl:2: not UTF-8 text")
    csv = tmp_path / "latin.csv"
    csv.write_bytes(b"query,answer\nfine,a\ncaf\xe9,b\n")
    assert_user_error(invoke("import", str(csv)), "latin.csv:3: not UTF-8 text")


def test_import_csv_with_a_bom_and_one_with_a_huge_field(invoke: Invoke, tmp_path: Path) -> None:
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffquery,answer\nWhat is 2+2?,4\n".encode())
    assert as_json(invoke("import", str(bom), "--json"))["imported"] == 1
    assert as_json(invoke("query", "What is 2+2?", "--json"))["answer"] == "4"
    huge = tmp_path / "huge.csv"
    huge.write_text(f'query,answer\nq1,a\nq2,"{"x" * 200_000}"\n', encoding="utf-8")
    assert_user_error(invoke("import", str(huge)), "huge.csv:3: not a valid CSV row")


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_ttl_must_be_finite(invoke: Invoke, tmp_path: Path, value: str) -> None:
    result = invoke("insert", "q", "a", "--ttl", value)
    assert result.exit_code == 2 and "--ttl" in result.output
    src = tmp_path / "qa.jsonl"
    src.write_text('{"query": "q", "answer": "a"}\n', encoding="utf-8")
    assert invoke("import", str(src), "--ttl", value).exit_code == 2
