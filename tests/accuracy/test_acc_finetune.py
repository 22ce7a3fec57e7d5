"""Fine-tuning smoke test: a handful of pairs, one step, from the shipped MiniLM (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelcache import Cache, CacheConfig, Request
from modelcache.cli import app
from modelcache.lab.finetune import Pair, load_pairs, mine_hard_negatives
from modelcache.verifier import load_verifier

PAIRS = [
    ("How do I reset my password?", "I forgot my password, how do I reset it?", True),
    ("How do I reset my password?", "How do I change my username?", False),
    ("What is the capital of France?", "Which city is France's capital?", True),
    ("What is the capital of France?", "What is the capital of Spain?", False),
    ("How to start a docker container", "Run a docker container", True),
    ("How to start a docker container", "How to stop a docker container", False),
    ("Best way to learn guitar", "How should a beginner learn guitar?", True),
    ("Best way to learn guitar", "Best way to learn piano", False),
]


def write_pairs(path: Path) -> Path:
    lines = [json.dumps({"a": a, "b": b, "same_answer": s}) for a, b, s in PAIRS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_pairs_and_tfidf_mining(tmp_path: Path) -> None:
    pairs = load_pairs(write_pairs(tmp_path / "p.jsonl"))
    assert len(pairs) == len(PAIRS) and pairs[0] == Pair(*PAIRS[0])
    mined = mine_hard_negatives(pairs)  # nearest text that is not a known duplicate
    assert mined["How do I reset my password?"] != "I forgot my password, how do I reset it?"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        load_pairs(bad)


@pytest.mark.model
def test_finetune_command_writes_usable_models(tmp_path: Path) -> None:
    out = tmp_path / "ft"
    res = CliRunner().invoke(
        app,
        ["finetune", str(write_pairs(tmp_path / "p.jsonl")), "--out", str(out), "--train-verifier",
         "--max-steps", "1", "--batch-size", "4", "--threads", "1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((out / "embedder" / "training.json").read_text(encoding="utf-8"))
    assert report["steps"] == 1 and report["kind"] == "embedder"
    scores = load_verifier(str(out / "verifier")).score([("a question", "another question")])
    assert 0.0 <= scores[0] <= 1.0
    cfg = CacheConfig(
        path=str(tmp_path / "cache"),
        embedder=str(out / "embedder"),
        verifier=str(out / "verifier"),
        verifier_threshold=0.0,
        similarity_threshold=0.5,
    )
    with Cache(cfg) as cache:
        cache.insert(Request.from_text("How do I reset my password?"), "use the link")
        hit = cache.lookup(Request.from_text("How can I reset my password?"))
        assert hit is not None and hit.answer == "use the link"


def test_pairs_from_query_log(tmp_path: Path) -> None:
    from modelcache.lab.finetune import pairs_from_query_log, write_pairs

    def hit(query: str, matched: str, kind: str = "semantic") -> dict[str, str]:
        return {"op": "lookup", "kind": kind, "query": query, "matched_query": matched}

    rows = [
        hit("reset pw?", "reset password"),
        hit("stop docker", "start docker"),
        hit("x", "x", kind="exact"),
        {"op": "insert", "query": "y"},
        hit("unsure", "unclear"),
    ]
    verdicts = {"reset pw?": True, "stop docker": False}
    pairs = pairs_from_query_log(rows, lambda q, m: verdicts.get(q))
    assert pairs == [Pair("reset password", "reset pw?", True),
                     Pair("start docker", "stop docker", False)]  # fmt: skip
    path = tmp_path / "mined.jsonl"
    assert write_pairs(pairs, path) == 2 and load_pairs(path) == pairs
