"""The `modelcache` command: round trips, bulk load, export, clear, errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_support import Invoke, as_json, assert_user_error
from typer.testing import CliRunner

from modelcache.cli import app


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "demo", "serve", "query", "insert", "import", "export", "stats", "clear", "bench",
        "eval", "calibrate", "finetune",
    ):  # fmt: skip
        assert command in result.stdout
    assert "--path" in result.stdout and "--tenant" in result.stdout
    assert CliRunner().invoke(app, ["import", "--help"]).exit_code == 0


def test_insert_then_query_with_scope(invoke: Invoke) -> None:
    stored = as_json(invoke("--tenant", "acme", "--model", "gpt-4", "insert", "What is WAL?",
                            "Write-ahead logging", "--json"))  # fmt: skip
    assert stored["tenant"] == "acme" and stored["model"] == "gpt-4" and len(stored["id"]) == 32
    hit = as_json(invoke("--tenant", "acme", "--model", "gpt-4", "query", "What is WAL?", "--json"))
    assert hit["hit"] and hit["kind"] == "exact" and hit["answer"] == "Write-ahead logging"
    miss = as_json(
        invoke("--tenant", "acme", "--model", "gpt_4", "query", "What is WAL?", "--json")
    )
    assert miss["hit"] is False
    text = invoke("--tenant", "acme", "--model", "gpt-4", "query", "What is WAL?")
    assert text.exit_code == 0 and "hit" in text.stdout and "Write-ahead logging" in text.stdout
    assert "miss" in invoke("query", "What is WAL?").stdout


def test_insert_json_answer_and_system_prompt(invoke: Invoke) -> None:
    r = invoke("insert", "list primes", '{"primes": [2, 3, 5]}', "--json-answer", "--system", "s1")
    assert r.exit_code == 0
    assert as_json(invoke("query", "list primes", "--system", "s1", "--json"))["answer"] == {
        "primes": [2, 3, 5]
    }
    assert not as_json(invoke("query", "list primes", "--system", "s2", "--json"))["hit"]
    assert_user_error(invoke("insert", "q", "{bad", "--json-answer"), "not valid JSON")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_import_jsonl_then_export_round_trip(invoke: Invoke, tmp_path: Path) -> None:
    rows = [{"question": f"question {i}", "answer": f"answer {i}"} for i in range(300)]
    rows.append({"query": "with history", "answer": {"json": True},
                 "history": [{"role": "user", "content": "earlier"},
                             {"role": "assistant", "content": "reply"}]})  # fmt: skip
    rows.append({"messages": [{"role": "system", "content": "be nice"},
                              {"role": "user", "content": "from messages"}],
                 "answer": "m", "tenant": "t2", "metadata": {"source": "faq"}})  # fmt: skip
    src = write_jsonl(tmp_path / "qa.jsonl", rows)
    result = as_json(invoke("import", str(src), "--batch-size", "64", "--json"))
    assert result["imported"] == 302
    assert as_json(invoke("stats", "--json"))["entries"] == 302
    assert as_json(invoke("query", "question 7", "--json"))["answer"] == "answer 7"
    hit = as_json(
        invoke("--tenant", "t2", "query", "from messages", "--system", "be nice", "--json")
    )
    assert hit["hit"]

    out = tmp_path / "export.jsonl"
    assert invoke("export", "--output", str(out)).exit_code == 0
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(exported) == 302 and {"query", "answer", "tenant", "history"} <= set(exported[0])
    only_t2 = invoke("--tenant", "t2", "export")
    assert len(only_t2.stdout.splitlines()) == 1

    copy = tmp_path / "copy"
    assert as_json(invoke("import", str(out), "--json", path=copy))["imported"] == 302
    assert as_json(invoke("query", "with history", "--json", path=copy))["hit"] is False
    assert as_json(invoke("query", "question 299", "--json", path=copy))["answer"] == "answer 299"


def test_import_run_again_skips_what_is_stored(invoke: Invoke, tmp_path: Path) -> None:
    rows = [{"question": f"question {i}", "answer": f"answer {i}"} for i in range(40)]
    half = write_jsonl(tmp_path / "half.jsonl", rows[:25])  # as if the first run stopped here
    assert as_json(invoke("import", str(half), "--json"))["imported"] == 25
    rows[3]["answer"] = "a new answer"  # changed since: written again
    full = write_jsonl(tmp_path / "full.jsonl", rows)
    result = as_json(invoke("import", str(full), "--batch-size", "8", "--json"))
    assert (result["imported"], result["skipped"]) == (16, 24)
    assert as_json(invoke("stats", "--json"))["entries"] == 40
    assert as_json(invoke("query", "question 3", "--json"))["answer"] == "a new answer"
    again = invoke("import", str(full))
    assert again.exit_code == 0 and "skipped 40 already stored" in again.stdout
    longer = as_json(invoke("import", str(full), "--ttl", "60", "--json"))  # a new ttl: rewritten
    assert (longer["imported"], longer["skipped"]) == (40, 0)


def test_import_csv(invoke: Invoke, tmp_path: Path) -> None:
    src = tmp_path / "qa.csv"
    src.write_text(
        'question,answer,model\nWhat is 2+2?,4,calc\n"Hello, there",hi,chat\n', encoding="utf-8"
    )
    assert as_json(invoke("import", str(src), "--json"))["imported"] == 2
    assert as_json(invoke("--model", "calc", "query", "What is 2+2?", "--json"))["answer"] == "4"


def test_import_bad_rows_write_nothing(invoke: Invoke, tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(
        '{"question": "fine", "answer": "ok"}\n{not json\n{"question": "no answer"}\n'
        '{"question": "  ", "answer": "blank"}\n[1, 2]\n{"question": "q", "answer": "a", '
        '"env": "qa"}\n',
        encoding="utf-8",
    )
    result = invoke("import", str(src))
    assert_user_error(result, "5 invalid row(s)")
    for line in ("bad.jsonl:2", "bad.jsonl:3", "bad.jsonl:4", "bad.jsonl:5", "bad.jsonl:6"):
        assert line in result.stderr
    assert_user_error(invoke("stats", "--json"), "no cache in")  # not even created


def test_missing_or_unreadable_inputs(invoke: Invoke, tmp_path: Path) -> None:
    r = invoke("import", str(tmp_path / "nope.jsonl"))
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert_user_error(invoke("import", str(empty)), "holds no rows")
    assert_user_error(invoke("import", str(empty), "--format", "xml"), "--format")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("this is = = not toml", encoding="utf-8")
    r = CliRunner().invoke(app, ["--config", str(bad_toml), "stats"])
    assert_user_error(r, "cannot read config file")
    assert_user_error(invoke("--env", "qa", "query", "hi"), "unknown env")
    assert_user_error(invoke("--env", "production", "stats"), "allowed: dev, test, staging, prod")
    assert invoke("query", "hi", "--threshold", "5").exit_code == 2
    assert invoke("frobnicate").exit_code == 2


def test_config_file_sets_cache_options(tmp_path: Path) -> None:
    cfg = tmp_path / "mc.toml"
    cfg.write_text(
        f'[modelcache]\npath = "{tmp_path / "fromtoml"}"\nembedder = "fake"\n', encoding="utf-8"
    )
    runner = CliRunner()
    assert runner.invoke(app, ["--config", str(cfg), "insert", "q1", "a1"]).exit_code == 0
    assert (tmp_path / "fromtoml").is_dir()


def test_clear_asks_unless_yes(invoke: Invoke) -> None:
    invoke("--tenant", "a", "insert", "alpha question", "1")
    invoke("--tenant", "b", "insert", "beta question", "2")
    assert_user_error(invoke("clear", input="n\n"), "aborted")
    assert_user_error(invoke("clear"), "aborted")  # no input at all: nothing deleted
    assert as_json(invoke("stats", "--json"))["entries"] == 2
    assert as_json(invoke("--tenant", "a", "clear", "--yes", "--json"))["deleted"] == 1
    confirmed = invoke("clear", input="y\n")
    assert confirmed.exit_code == 0 and "deleted 1" in confirmed.stdout
    assert as_json(invoke("stats", "--json"))["entries"] == 0


def test_stats_table(invoke: Invoke) -> None:
    invoke("--model", "m1", "insert", "table question", "x")
    r = invoke("stats")
    assert r.exit_code == 0 and "m1" in r.stdout and "entries" in r.stdout


def test_serve_refuses_public_bind_without_keys(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELCACHE_API_KEYS", raising=False)
    assert_user_error(invoke("serve", "--host", "0.0.0.0"), "refusing to bind")


def test_bench_runs_the_packaged_benchmark(
    invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bench` calls modelcache.lab.latency with the extra arguments, from any folder: it never
    looks for benchmarks/latency.py in a source checkout."""
    from modelcache.lab import latency

    calls: list[tuple[list[str], str]] = []

    def fake_main(argv: list[str], *, prog: str) -> int:
        calls.append((argv, prog))
        return 3 if "--fail" in argv else 0

    monkeypatch.setattr(latency, "main", fake_main)
    monkeypatch.chdir(tmp_path)
    r = invoke("bench", "--sizes", "1000", "--queries", "10")
    assert r.exit_code == 0, r.output
    assert calls == [(["--sizes", "1000", "--queries", "10"], "modelcache bench")]
    assert invoke("bench", "--fail").exit_code == 3


def test_bench_reports_a_missing_data_folder_in_one_line(invoke: Invoke, tmp_path: Path) -> None:
    missing = tmp_path / "no-data"
    assert_user_error(invoke("bench", "--data", str(missing), "--sizes", "10"), "qqp_train.jsonl")


def test_importing_the_cli_loads_no_adapter_lab_or_server() -> None:
    """The core package never imports its own LangChain adapter: the demo imports it when it
    runs; the lab (eval, calibrate, finetune) and the HTTP stack load with their commands too."""
    later = (
        "modelcache_langchain", "langchain_core", "modelcache_llamaindex", "modelcache.lab",
        "fastapi", "uvicorn", "torch", "transformers", "sentence_transformers", "chromadb",
        "jieba",
    )  # fmt: skip
    code = f"import sys, modelcache.cli\nprint(','.join(m for m in {later!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"`import modelcache.cli` loaded {done.stdout.strip()}"


def test_demo_runs_on_fake_llm(invoke: Invoke) -> None:
    data = as_json(invoke("demo", "--llm", "fake", "--delay", "0", "--json"))
    summary = data["summary"]
    assert summary["requests"] == len(data["requests"]) == 15
    assert summary["hits"] >= 2 and summary["misses"] >= 5
    first = data["requests"][0]
    assert first["result"] == "miss" and first["as_expected"]
    assert data["requests"][1]["result"] == "exact" and data["requests"][1]["similarity"] == 1.0
    text = invoke("demo", "--llm", "fake", "--delay", "0")
    assert text.exit_code == 0 and "Summary" in text.stdout and "time saved" in text.stdout


def test_demo_real_provider_without_package(invoke: Invoke) -> None:
    pytest.importorskip("langchain_core")
    try:
        import langchain_openai  # noqa: F401
    except ImportError:
        assert_user_error(invoke("demo", "--llm", "openai"), "langchain-openai is not installed")
    else:  # pragma: no cover - depends on the environment
        pytest.skip("langchain-openai is installed")
    assert_user_error(invoke("demo", "--llm", "gpt"), "--llm must be")


@pytest.mark.model
def test_demo_script_holds_on_the_real_model(
    minilm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every paraphrase in the demo hits and every trap misses with the shipped MiniLM."""
    from modelcache import Cache, CacheConfig
    from modelcache.cli import _common

    def with_minilm(config: CacheConfig) -> Cache:
        return Cache(config, embedder=minilm)

    monkeypatch.setattr(_common, "Cache", with_minilm)
    result = CliRunner().invoke(
        app, ["--path", str(tmp_path), "demo", "--llm", "fake", "--delay", "0", "--json"]
    )
    data = as_json(result)
    wrong = [r for r in data["requests"] if not r["as_expected"]]
    assert wrong == [], wrong
    assert data["summary"]["false_hits"] == 0 and data["summary"]["semantic_hits"] >= 4


def test_export_log_writes_the_query_log_as_jsonl(
    invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELCACHE_QUERY_LOG", "true")
    assert invoke("insert", "how do I reset my password", "click forgot").exit_code == 0
    assert as_json(invoke("query", "how do I reset my password", "--json"))["hit"]
    assert as_json(invoke("query", "something else entirely", "--json"))["hit"] is False
    out = tmp_path / "log.jsonl"
    assert invoke("export", "--log", "--output", str(out)).exit_code == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["op"], r["hit"]) for r in rows] == [
        ("insert", False),
        ("lookup", True),
        ("lookup", False),
    ]
    assert rows[1]["kind"] == "exact" and rows[1]["matched_query"] == "how do I reset my password"


def test_reading_commands_refuse_a_missing_cache(invoke: Invoke, tmp_path: Path) -> None:
    typo = tmp_path / "dta"
    for args in (("query", "hi"), ("stats",), ("export",), ("clear", "--yes"), ("repair",)):
        assert_user_error(invoke(*args, path=typo), "no cache in")
    assert not typo.exists()
    assert invoke("insert", "q", "a", path=typo).exit_code == 0  # writing commands create it
    assert as_json(invoke("stats", "--json", path=typo))["entries"] == 1


def test_unknown_env_fails_before_opening_the_cache(invoke: Invoke, tmp_path: Path) -> None:
    for args in (("query", "hi"), ("stats",), ("insert", "q", "a"), ("export",)):
        result = invoke("--env", "production", *args)
        assert_user_error(result, "unknown env 'production' (--env)")
    assert not (tmp_path / "data").exists()


def test_environment_variables_override_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "mc.toml"
    cfg.write_text(f'path = "{tmp_path / "data"}"\nembedder = "no-such-model"\n', "utf-8")
    monkeypatch.setenv("MODELCACHE_EMBEDDER", "fake")
    result = CliRunner().invoke(app, ["--config", str(cfg), "insert", "q", "a"])
    assert result.exit_code == 0, result.output


def test_config_errors_name_their_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "mc.toml"
    cfg.write_text('embedder = "fake"\ntop_kk = 3\n', "utf-8")
    result = CliRunner().invoke(app, ["--config", str(cfg), "stats"])
    assert_user_error(result, "mc.toml:2 (top_kk): unknown setting 'top_kk'; did you mean 'top_k'?")
    monkeypatch.setenv("MODELCACHE_TOP_K", "abc")
    result = CliRunner().invoke(app, ["--path", str(tmp_path), "stats"])
    assert_user_error(result, "environment variable MODELCACHE_TOP_K = 'abc'")
