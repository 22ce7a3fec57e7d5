"""benchmarks/density_rules.py: a rule's counts, and its comparison with a plain threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def rules(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(BENCH))
    import density_rules

    return density_rules


def _served(rules: Any, cluster: int, similarity: float, runner_up: float = 0.0) -> Any:
    return rules.Served(
        cluster=cluster,
        rank=0,
        similarity=similarity,
        runner_up=runner_up,
        passing=1,
        mean_top=similarity,
        lexical=False,
        swapped=False,
        one_sided_number=False,
    )


def _probes(rules: Any) -> list[Any]:
    """Four recall probes (one served a wrong cluster) and four never-cached ones."""
    return [
        rules.Probe(1, True, [_served(rules, 1, 0.96)]),
        rules.Probe(2, True, [_served(rules, 2, 0.92)]),
        rules.Probe(3, True, [_served(rules, 9, 0.91), _served(rules, 3, 0.88)]),
        rules.Probe(4, True, []),
        rules.Probe(5, False, [_served(rules, 7, 0.93)]),
        rules.Probe(6, False, [_served(rules, 8, 0.87)]),
        rules.Probe(7, False, [_served(rules, 8, 0.86)]),
        rules.Probe(8, False, []),
    ]


def test_a_rejected_candidate_falls_through_to_the_next(rules: Any) -> None:
    probes = _probes(rules)
    assert rules.score(probes, lambda s: True) == (0.5, pytest.approx(2 / 3), 0.75)
    # rejecting the wrong 0.91 candidate serves the right 0.88 one behind it
    recall, precision, false_hits = rules.score(probes, lambda s: s.cluster != 9)
    assert (recall, precision, false_hits) == (0.75, 1.0, 0.75)


def test_a_threshold_rule_matches_the_threshold_at_its_recall(rules: Any) -> None:
    probes = _probes(rules)
    recall, _, false_hits = rules.score(probes, lambda s: s.similarity >= 0.9)
    assert (recall, false_hits) == (0.5, 0.25)
    assert rules.threshold_at_recall(probes, recall) == pytest.approx(false_hits)


def test_a_rule_that_only_drops_false_hits_beats_the_threshold(rules: Any) -> None:
    probes = _probes(rules)
    recall, _, false_hits = rules.score(probes, lambda s: s.cluster not in (7, 8))
    assert (recall, false_hits) == (0.5, 0.0)
    assert rules.threshold_at_recall(probes, recall) > false_hits
