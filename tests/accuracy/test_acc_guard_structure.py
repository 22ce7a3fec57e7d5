"""Guard on the structure of a question: parts of hyphenated compounds, parity words, and the
same words in another order around an asymmetric relation (than, to, before, a verb)."""

from __future__ import annotations

import pytest

from modelcache.guard import Guard


@pytest.fixture(scope="module")
def guard() -> Guard:
    return Guard()


def _assert_conflict(guard: Guard, a: str, b: str, kind: str) -> None:
    reason = guard.conflict(a, b)
    assert reason is not None and reason.startswith(kind), reason
    reason = guard.conflict(b, a)
    assert reason is not None and reason.startswith(kind), reason


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        ("What is the worst-case time complexity of quicksort?",
         "What is the best-case time complexity of quicksort?", "antonym"),
        ("How long should I boil a soft-boiled egg?", "How long should I boil a hard-boiled egg?",
         "substitution"),
        ("Is a high-level language easier to debug?", "Is a low-level language easier to debug?",
         "antonym"),
        ("Which bat suits a left-handed beginner?", "Which bat suits a right-handed beginner?",
         "antonym"),
        ("How do I write a long-term savings plan?", "How do I write a short-term savings plan?",
         "antonym"),
        ("Is a full-time internship paid in Germany?", "Is a part-time internship paid in Germany?",
         "substitution"),
    ],
)  # fmt: skip
def test_parts_of_hyphenated_compounds_conflict(guard: Guard, a: str, b: str, kind: str) -> None:
    """best-case / worst-case differ in a part of the compound as best / worst do."""
    _assert_conflict(guard, a, b, kind)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the best e-mail client for Linux?", "What is the best email client for Linux?"),
        ("How do I build a real-time dashboard?", "How do I build a realtime dashboard?"),
        ("Is there a step-by-step guide to baking rye bread?",
         "Is there a step by step guide to baking rye bread?"),
        ("Are well-known brands always better?", "Are well known brands always better?"),
    ],
)  # fmt: skip
def test_hyphenation_alone_is_no_conflict(guard: Guard, a: str, b: str) -> None:
    assert guard.conflict(a, b) is None
    assert guard.conflict(b, a) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Write a Python function to check if a number is even",
         "Write a Python function to check if a number is odd"),
        ("Select the even rows of a table in SQL", "Select the odd rows of a table in SQL"),
    ],
)  # fmt: skip
def test_even_is_a_content_word(guard: Guard, a: str, b: str) -> None:
    """The word "even" decides the answer in a question about parity; it is no filler word."""
    _assert_conflict(guard, a, b, "substitution")


def test_even_as_an_adverb_added_is_no_conflict(guard: Guard) -> None:
    a, b = "Is it even possible to learn Welsh in a year?", "Is it possible to learn Welsh?"
    assert guard.conflict(a, b) is None
    assert guard.conflict(b, a) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Is Python faster than Java?", "Is Java faster than Python?"),
        ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?"),
        ("Is a tomato heavier than an apple?", "Is an apple heavier than a tomato?"),
        ("Should I learn Spanish before French?", "Should I learn French before Spanish?"),
        ("How do I translate a letter from German to Dutch?",
         "How do I translate a letter from Dutch to German?"),
        ("What is 3 to the power of 7?", "What is 7 to the power of 3?"),
        ("Did the Romans conquer the Greeks?", "Did the Greeks conquer the Romans?"),
        ("How do I cast a float to an integer in Rust?",
         "How do I cast an integer to a float in Rust?"),
        ("Python比Java快吗?", "Java比Python快吗?"),
    ],
)  # fmt: skip
def test_the_same_words_in_another_order_conflict(guard: Guard, a: str, b: str) -> None:
    """Two words trade places around the same asymmetric relation: the question is reversed."""
    _assert_conflict(guard, a, b, "order")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Java vs Python for web development", "Python vs Java for web development"),
        ("What is the difference between a violin and a viola?",
         "What is the difference between a viola and a violin?"),
        ("Which is healthier, tea or coffee?", "Which is healthier, coffee or tea?"),
        ("Is it better to rent a flat or to buy one?",
         "Is it better to buy a flat or to rent one?"),
        ("In Rust, how do I cast a float to an integer?",
         "How do I cast a float to an integer in Rust?"),
        ("How can I get to Lyon from Paris?", "How can I get from Paris to Lyon?"),
        ("Python和Java哪个好?", "Java和Python哪个好?"),
    ],
)  # fmt: skip
def test_symmetric_relations_and_moved_phrases_pass(guard: Guard, a: str, b: str) -> None:
    """Symmetric relations ("X vs Y", "X or Y", "between X and Y") and phrases moved whole."""
    assert guard.conflict(a, b) is None
    assert guard.conflict(b, a) is None
