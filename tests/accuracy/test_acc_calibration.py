"""Calibration picks the loosest thresholds that reach the target precision; CLI and TOML."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from modelcache import CacheConfig, FakeEmbedder
from modelcache.cli import app
from modelcache.guard import Guard
from modelcache.lab.calibration import (
    calibrate,
    context_pairs_from_conversations,
    followup_pairs_from_conversations,
    pick_threshold,
    save_toml,
)
from modelcache.lab.evaluation import Conversation
from modelcache.lab.finetune import Pair

TOPICS = [
    "password reset", "docker volume", "python list sort", "git rebase", "tax return",
    "football rules", "bread recipe", "car insurance", "linux kernel", "coffee beans",
]  # fmt: skip


def synthetic_pairs(n: int = 120, seed: int = 0) -> list[Pair]:
    """Positives share most words; negatives share a topic word or nothing."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        a = f"how do I handle {topic} issues today"
        if i % 2:
            pairs.append(Pair(a, f"how should I handle {topic} issues", True))
        else:
            other = rng.choice([t for t in TOPICS if t != topic])
            pairs.append(Pair(a, f"what about {other} and {topic.split()[0]}", False))
    return pairs


def test_pick_threshold_finds_the_loosest_precise_cut() -> None:
    scores = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6])
    labels = np.array([True, True, True, False, True, False])
    op = pick_threshold(scores, labels, 0.99)
    assert op.reached and op.threshold == pytest.approx(0.805) and op.recall == 0.75
    op = pick_threshold(scores, labels, 0.8)  # 4 of 5 above 0.7 are right
    assert op.reached and op.threshold <= 0.7 and op.recall == 1.0
    guarded = pick_threshold(scores, labels, 0.99, allowed=np.array([1, 1, 1, 0, 1, 1], bool))
    assert guarded.recall == 1.0  # the guard removed the only false positive above 0.7


def test_calibrate_reaches_target_on_synthetic_pairs() -> None:
    pairs = synthetic_pairs()
    cal = calibrate(pairs, FakeEmbedder(), 0.95, long_query_tokens=48)
    assert cal.short is not None and cal.short.reached
    assert cal.overall_precision >= 0.95 and cal.overall_recall > 0.5
    values = cal.config_values()
    assert set(values) == {"similarity_threshold", "similarity_threshold_long"}
    CacheConfig(**values)  # valid config values


def test_calibrate_with_verifier_and_contexts() -> None:
    pairs = synthetic_pairs(60)

    class Oracle:
        def score(self, items: list[tuple[str, str]]) -> list[float]:
            return [0.9 if "handle" in a and "handle" in b else 0.1 for a, b in items]

    contexts = [("tax law question", "question about tax law", True),
                ("tax law question", "football match tonight", False)]  # fmt: skip
    cal = calibrate(pairs, FakeEmbedder(), 0.99, verifier=Oracle(), context_pairs=contexts)
    assert cal.verifier is not None and cal.verifier.reached
    assert cal.overall_recall == 1.0
    assert cal.context is not None and "context_threshold" in cal.config_values()


def test_follow_up_threshold_from_conversations() -> None:
    convs = [
        Conversation("tax law?", "what is tax law", "A0", "who collects it",
                     "who is the collector of it", "A1"),
        Conversation("rome?", "tell me about rome", "B0", "when was it founded",
                     "when did it get founded", "B1"),
        Conversation("paris?", "tell me about paris", "C0", "where is it located",
                     "where is it", "C1"),
    ]  # fmt: skip
    pairs = followup_pairs_from_conversations(convs)
    assert sum(same for *_, same in pairs) == 3 and len(pairs) == 3 + 6
    assert ("who collects it", "when did it get founded", False) in pairs
    cal = calibrate(synthetic_pairs(20), FakeEmbedder(), 0.9, guard=Guard(), followup_pairs=pairs)
    assert cal.followup is not None and cal.followup.reached
    assert cal.config_values()["similarity_threshold_followup"] == round(cal.followup.threshold, 3)
    CacheConfig(**cal.config_values())  # valid config values


def test_context_pairs_are_whole_conversations_as_the_engine_embeds_them() -> None:
    """The engine compares every earlier turn by meaning; so does calibration."""
    convs = [
        Conversation("tax law?", "what is tax law", "Rules.", "who collects it", "collector", "A"),
        Conversation("rome?", "tell me about rome", "Rules.", "founded when", "founding", "B"),
        Conversation("paris?", "about paris", "A city.", "where is it", "location", "C"),
    ]  # fmt: skip
    pairs = context_pairs_from_conversations(convs)
    assert ("tax law?\nRules.", "what is tax law\nRules.", True) in pairs
    assert ("tax law?\nRules.", "about paris\nA city.", False) in pairs
    assert sum(not same for *_, same in pairs) == 6
    cal = calibrate(
        synthetic_pairs(20), FakeEmbedder(), 0.9,
        context_pairs=context_pairs_from_conversations(convs[:1]),
    )  # fmt: skip
    assert cal.context is None and any("context threshold keeps" in n for n in cal.notes)


def test_save_toml_merges_into_a_config(tmp_path: Path) -> None:
    path = tmp_path / "modelcache.toml"
    path.write_text('[modelcache]\nembedder = "minilm"\ntop_k = 7\n', encoding="utf-8")
    save_toml(path, {"similarity_threshold": 0.83, "similarity_threshold_long": 0.9})
    cfg = CacheConfig.from_toml(path)
    assert cfg.similarity_threshold == 0.83 and cfg.top_k == 7 and cfg.embedder == "minilm"


def test_save_toml_keeps_nested_tables_and_multiline_strings(tmp_path: Path) -> None:
    path = tmp_path / "modelcache.toml"
    original = (
        '[modelcache]\nembedder = "minilm"\n\n[server]\nport = 8000\n\n'
        '[server.keys.acme]\ntenant = "acme"\nnote = """two\nlines"""\n'
    )
    path.write_text(original, encoding="utf-8")
    save_toml(path, {"similarity_threshold": 0.83})
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert data["modelcache"] == {"embedder": "minilm", "similarity_threshold": 0.83}
    acme = {"tenant": "acme", "note": "two\nlines"}
    assert data["server"] == {"port": 8000, "keys": {"acme": acme}}


def test_cli_calibrate_and_eval(tmp_path: Path) -> None:
    pairs_file = tmp_path / "pairs.jsonl"
    rows = [{"a": p.a, "b": p.b, "same_answer": p.same_answer} for p in synthetic_pairs()]
    pairs_file.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    toml = tmp_path / "cfg.toml"
    convs = tmp_path / "convs.json"
    convs.write_text(json.dumps([
        {"u0": f"tell me about {t}", "u0_duplicate": f"explain {t}", "system_q0": "Sure.",
         "u1": f"who invented {t}", "u1_duplicate": f"inventor of {t}", "system_q1": t}
        for t in TOPICS
    ]), encoding="utf-8")  # fmt: skip
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["--embedder", "fake", "calibrate", str(pairs_file), "--target-precision", "0.95",
         "--no-guard", "--contexts", str(convs), "--save", str(toml)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "similarity_threshold" in res.output and "recall" in res.output
    assert "similarity_threshold_followup" in res.output and "context_threshold" in res.output
    cfg = CacheConfig.from_toml(toml)
    assert cfg.similarity_threshold_followup is not None and cfg.context_threshold is not None
    res = runner.invoke(
        app, ["--config", str(toml), "--embedder", "fake", "eval", str(pairs_file), "--no-guard"]
    )
    assert res.exit_code == 0, res.output
    assert "| precision |" in res.output.replace("precision | recall", "precision |")
    assert f"cos>={cfg.similarity_threshold:.2f}" in res.output


def test_cli_calibrate_saves_a_missed_target_only_with_force(tmp_path: Path) -> None:
    pairs_file = tmp_path / "pairs.jsonl"
    rows = [
        {"a": f"question {i}", "b": f"question {i}", "same_answer": i % 2 == 0} for i in range(40)
    ]  # identical texts labelled both ways: no threshold reaches 95 % precision
    pairs_file.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    toml = tmp_path / "cfg.toml"
    args = ["--embedder", "fake", "calibrate", str(pairs_file), "--no-guard", "--save", str(toml)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "not saved: similarity_threshold" in res.stderr
    assert "Traceback" not in res.output and not toml.exists()
    res = CliRunner().invoke(app, [*args, "--force"])
    assert res.exit_code == 0, res.output
    assert CacheConfig.from_toml(toml).similarity_threshold is not None


@pytest.mark.parametrize("command", ["eval", "calibrate", "finetune"])
def test_cli_accuracy_commands_report_bad_files_in_one_line(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "x"}\n', encoding="utf-8")
    args = ["--embedder", "fake", command, str(bad)]
    res = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path)] if command == "finetune" else args
    )
    assert res.exit_code == 1, res.output
    assert "Error:" in res.stderr and "Traceback" not in res.output
    assert not isinstance(res.exception, ValueError)


def test_cli_eval_progress_has_the_cli_look_and_one_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs_file = tmp_path / "pairs.jsonl"
    rows = [{"a": p.a, "b": p.b, "same_answer": p.same_answer} for p in synthetic_pairs()]
    pairs_file.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    args = ["--embedder", "fake", "eval", str(pairs_file), "--no-guard"]
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "lookups ━" in res.stderr and f"{len(rows)}/{len(rows)}" in res.stderr  # rich, as import
    assert "it/s" not in res.stderr  # not tqdm's
    monkeypatch.setenv("TQDM_DISABLE", "1")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "lookups" not in res.stderr
