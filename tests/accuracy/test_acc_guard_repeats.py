"""Guard: a detail swapped for a value the question names elsewhere is still a substitution."""

from __future__ import annotations

import pytest

from modelcache.guard import Guard


@pytest.fixture(scope="module")
def guard() -> Guard:
    return Guard()


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        # served by the cache with the shipped MiniLM before (similarity 0.956, 0.899, 0.966)
        ("Convert 10 kg to pounds and round to 2 decimals",
         "Convert 2 kg to pounds and round to 2 decimals", "number 10 vs 2"),
        ("What is 5 times 3 plus 3?", "What is 3 times 3 plus 3?", "number 5 vs 3"),
        ("Book seat 14A on flight 14 to Paris", "Book seat 14A on flight 22 to Paris",
         "number 14 vs 22"),
        ("Can I read 12 books in 12 months?", "Could I read 20 books within 12 months?",
         "number 12 vs 20"),
        ("What happened on 2020-01-01?", "Tell me what happened on 2020-01-02", "number 1 vs 2"),
        ("What is three times three?", "What is seven times three?", "number 3 vs 7"),
        ("Copy the row with id A17 into B17 and C17", "Copy row A17 into A17 and C17",
         "identifier b17 vs a17"),
        ("Convert 5 km plus 3 miles into km", "What is 5 km plus 3 km in km?",
         "unit mile vs kilometer"),
        ("Rewrite this SQL code with pandas", "Rewrite this SQL code as faster SQL code",
         "language pandas vs sql"),
        ("Move Monday's meeting to Friday", "Move the Friday meeting to Friday afternoon",
         "time monday vs friday"),
        ("Trains from London to Paris, or from London to Rome: which is faster?",
         "Which is faster: the train from London to Paris or from Paris to Rome?",
         "entity london vs paris"),
        ("What does Anna think of Maria's plan?", "What does Anna think of Anna's own plan?",
         "entity maria vs anna"),
    ],
)  # fmt: skip
def test_a_value_swapped_for_one_named_elsewhere_conflicts(
    guard: Guard, a: str, b: str, kind: str
) -> None:
    assert guard.conflict(a, b) == kind
    assert guard.conflict(b, a) is not None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is 3 times 3?", "What's three times 3?"),
        ("Convert 10 kg to pounds", "How many pounds is 10 kg? I have 10 kg of flour"),
        ("Is flight 22 to Paris on time?", "Flight 22 to Paris: is flight 22 delayed?"),
        ("Copy row A17 into A18", "Copy the row A17 (that is, row A17) into row A18"),
        ("Flights from Paris to Berlin", "Cheap Paris to Berlin flights, leaving Paris at night"),
        ("What's the weather in Paris, France?", "Weather in Paris"),
        ("What's the best way to learn Python?", "Learning Python: how do I learn Python best?"),
    ],
)  # fmt: skip
def test_a_value_repeated_on_one_side_is_no_conflict(guard: Guard, a: str, b: str) -> None:
    assert guard.conflict(a, b) is None
    assert guard.conflict(b, a) is None


def test_against_a_whole_conversation_repeats_do_not_count(guard: Guard) -> None:
    """A turn compared with a whole conversation: a number the conversation repeats is no
    substitution for a new one the turn adds."""
    turn = "The file is 10 GB and the limit is 20 GB"
    conversation = "The file is 10 GB.\nIs 10 GB too big to send?"
    assert guard.conflict(turn, conversation, details_only=True) is None
    assert guard.conflict(turn, conversation) == "number 20 vs 10"


def test_a_name_said_fewer_times_counts_only_in_place_of_another(guard: Guard) -> None:
    """A rewording drops a repeated name ("Rs") and adds another ("Indian"): no swap."""
    a = "How will banning Rs 500 and Rs 1000 notes affect the economy?"
    b = "How will the Indian economy be affected by banning the Rs 500 and 1000 notes?"
    assert guard.conflict(a, b) is None
    assert guard.conflict(b, a) is None
