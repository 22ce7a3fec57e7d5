"""The verifier sweep's one-pass curve equals serving the first candidate scoring >= t."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelcache.lab.evaluation import EvalRow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def sweep(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(BENCH))
    import verifier_sweep

    return verifier_sweep


def test_curve_matches_first_passing_candidate(sweep: Any) -> None:
    rng = random.Random(3)
    rows = [EvalRow(f"a{i}", f"b{i}", False, a_cluster=i % 7, b_cluster=i % 9) for i in range(60)]
    calls = {
        f"b{i}": [
            (f"a{rng.randrange(60)}", round(rng.random(), 2)) for _ in range(rng.randrange(4))
        ]
        for i in range(60)
    }
    grid = np.round(np.arange(0.0, 1.0001, 0.05), 2)
    clusters = {r.a_cluster for r in rows}
    cluster_of = {r.a: r.a_cluster for r in rows}
    for point, t in zip(sweep._curve(rows, calls, grid), grid, strict=True):
        hits = correct = false_hits = 0
        for row in rows:
            chosen = next((c for c, s in calls[row.b] if s >= t), None)
            if chosen is not None:
                hits += 1
                correct += cluster_of[chosen] == row.b_cluster
                false_hits += row.b_cluster not in clusters
        assert (point["hits"], point["correct"]) == (hits, correct), t
        unanswerable = sum(r.b_cluster not in clusters for r in rows)
        assert point["false_hit"] == pytest.approx(false_hits / unanswerable)


def test_curve_counts_hits_served_without_the_verifier(sweep: Any) -> None:
    rows = [EvalRow("a0", "b0", True, a_cluster=0, b_cluster=0), EvalRow("a1", "b1", False, 1, 2)]
    point = sweep._curve(rows, {"b0": [("a0", 0.4)]}, np.array([0.5]), fixed=(2, 1, 1))[0]
    assert (point["hits"], point["correct"], point["false_hits"]) == (2, 1, 1)
    assert point["recall"] == 1.0 and point["false_hit"] == 1.0
