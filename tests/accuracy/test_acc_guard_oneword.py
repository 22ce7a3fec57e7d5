"""Guard on one-word-differs pairs: identifiers, number words, times, scope, prefix negation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelcache.guard import Guard, GuardWords, _number_words

ONEWORD = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "hard_pairs_oneword.jsonl"


@pytest.fixture(scope="module")
def guard() -> Guard:
    return Guard()


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("drive thirty-five miles", [35.0]),
        ("a hundred dollars", [100.0]),
        ("two hundred dollars", [200.0]),
        ("one hundred and twenty days", [120.0]),
        ("two thousand five hundred people", [2500.0]),
        ("split among a dozen people", [12.0]),
        ("plan a one-day trip", [1.0]),
        ("her fortieth birthday", [40.0]),
        ("the twenty-first century", [21.0]),
        ("the second president", [2.0]),
        ("wait a second", []),
        ("which one is better", []),
        ("three times three plus three", [3.0, 3.0, 3.0]),
    ],
)
def test_number_words(text: str, values: list[float]) -> None:
    assert _number_words(text.split(), GuardWords.load().numbers) == values


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        ("Is seat 14A a window seat?", "Is seat 14C a window seat?", "identifier"),
        ("What does error code E42 mean?", "What does error code F42 mean?", "identifier"),
        ("Show me invoice INV-2023-A", "Show me invoice INV-2023-B", "identifier"),
        ("Drive twenty miles over the limit", "Drive thirty-five miles over the limit", "number"),
        ("Is a hundred dollars a good tip?", "Is two hundred dollars a good tip?", "number"),
        ("Plan a one-day itinerary for Rome", "Plan a three-day itinerary for Rome", "number"),
        ("Split a bill among a dozen people", "Split a bill among three people", "number"),
        ("Events in London this weekend?", "Events in London next weekend?", "time"),
        ("Closing price of the stock yesterday?", "Closing price of the stock on Friday?", "time"),
        ("Delete all emails in this folder", "Delete all emails in every folder", "scope"),
        ("Turn off notifications for this app", "Turn off notifications for all apps", "scope"),
        ("Which medications are compatible with alcohol?",
         "Which medications are incompatible with alcohol?", "negation"),
        ("Why do cats like water?", "Why do cats dislike water?", "negation"),
        ("How fast is USB-C compared to USB-A?", "How fast is USB-C compared to Thunderbolt?",
         "entity"),
    ],
)  # fmt: skip
def test_one_word_traps_are_caught(guard: Guard, a: str, b: str, kind: str) -> None:
    reason = guard.conflict(a, b)
    assert reason is not None and reason.startswith(kind), reason
    assert guard.conflict(b, a) is not None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What's the WiFi password policy?", "What is the Wi-Fi password policy?"),
        ("Drive from LA to San Francisco", "Drive from Los Angeles to San Francisco"),
        ("What are the top 5 spots in Rome?", "What are the top five spots in Rome?"),
        ("Which is the best earphone under 500rs?", "Best earphones under 500 rs?"),
        ("What are some lesser known facts about Modi?", "Some unknown things about Modi?"),
        ("What are some good unknown computer hacks?", "Computer tricks that are not known?"),
        ("Why is it that every time I ask, my question needs improvement?",
         "All my questions need improvement, why?"),
        ("How do I get a 3D printer?", "How do I get a 3-D printer?"),
        ("Which is the best phone for a second job?", "Which phone is best for a side job?"),
        ("How many steps did I walk last week?", "How many steps did I walk in the past week?"),
    ],
)  # fmt: skip
def test_one_word_paraphrases_pass(guard: Guard, a: str, b: str) -> None:
    assert guard.conflict(a, b) is None
    assert guard.conflict(b, a) is None


def test_the_oneword_set_pairwise(guard: Guard) -> None:
    """Pairwise over the project's set: traps are flagged, no paraphrase is."""
    rows = [json.loads(line) for line in ONEWORD.read_text(encoding="utf-8").splitlines() if line]
    traps = [r for r in rows if not r["same_answer"]]
    paraphrases = [r for r in rows if r["same_answer"]]
    assert len(rows) >= 150 and len(paraphrases) >= 75
    blocked = [r["b"] for r in paraphrases if guard.conflict(r["a"], r["b"]) is not None]
    missed = [r["b"] for r in traps if guard.conflict(r["a"], r["b"]) is None]
    assert blocked == []
    assert len(missed) <= len(traps) // 10, missed  # the rest are below the cosine threshold
