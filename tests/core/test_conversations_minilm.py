"""Conversations with the real shipped model: the context is compared by meaning, with the guard."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from modelcache import Cache, Message, Request, SentenceTransformerEmbedder

pytestmark = pytest.mark.model


def chat(*turns: str) -> tuple[Message, ...]:
    """Alternating user / assistant turns, starting with the user."""
    return tuple(Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns))


PLAN = chat(
    "I'm on the Basic plan and want to add two more seats for my team.",
    "You can add seats under Settings > Billing > Seats; each extra seat is billed monthly.",
)
# the same conversation said again: other user words, a reply the model generated afresh
PLAN_REWORDED = chat(
    "My team needs two additional seats and I'm on the Basic plan.",
    "Extra seats can be added in Settings, then Billing, then Seats; every seat is billed "
    "each month.",
)
PLAN_OTHER = chat(
    "I'm on the Premium plan and want to add two more seats for my team.",
    "You can add seats under Settings > Billing > Seats; each extra seat is billed monthly.",
)
FLIGHT = chat(
    "I need to change my flight from Paris to Rome.",
    "I can help with that. Changes are possible up to two hours before departure.",
)


@pytest.fixture
def real(make_cache: Callable[..., Cache], minilm: SentenceTransformerEmbedder) -> Cache:
    """A cache on tmp_path with the real model and the default configuration."""
    return make_cache(embedder=minilm)


def test_reworded_user_turns_and_replies_hit(real: Cache) -> None:
    real.insert(Request("how much will that cost me", history=PLAN), "8 dollars a seat")
    hit = real.lookup(Request("what will it cost", history=PLAN_REWORDED))
    assert hit is not None and hit.answer == "8 dollars a seat" and hit.kind == "semantic"


def test_one_detail_changed_in_an_earlier_user_turn_misses(real: Cache) -> None:
    real.insert(Request("how much will that cost me", history=PLAN), "8 dollars a seat")
    assert real.lookup(Request("how much will that cost me", history=PLAN_OTHER)) is None
    days = chat("I bought a kettle 10 days ago.", "Sorry to hear that it is not working.")
    late = chat("I bought a kettle 40 days ago.", "Sorry to hear that it is not working.")
    real.insert(Request("can I still return it", history=days), "yes, within 30 days")
    assert real.lookup(Request("can I still return it", history=late)) is None


def test_the_same_follow_up_after_another_topic_misses(real: Cache) -> None:
    real.insert(Request("how much will that cost me", history=PLAN), "8 dollars a seat")
    assert real.lookup(Request("how much will that cost me", history=FLIGHT)) is None


def test_a_standalone_question_after_unrelated_chat_hits(real: Cache) -> None:
    question = "How do I reset the password of my home router?"
    real.insert(Request(question), "hold the reset button for ten seconds")
    small_talk = chat("Tell me a joke.", "Why did the scarecrow win an award? He was outstanding.")
    asked = Request("How can I reset my home router's password?", history=small_talk)
    hit = real.lookup(asked)
    assert hit is not None and hit.answer == "hold the reset button for ten seconds"
    # stored after other unrelated turns, it answers the question after these ones too
    names = chat("What's a good name for a goldfish?", "How about Bubbles or Goldie?")
    real.insert(Request("What is the capital city of Australia?", history=names), "Canberra")
    hit = real.lookup(Request("Which city is the capital of Australia?", history=small_talk))
    assert hit is not None and hit.answer == "Canberra"


def test_a_follow_up_that_points_back_is_never_standalone(real: Cache) -> None:
    real.insert(Request("How long does a refund take?"), "5 business days")
    assert real.lookup(Request("How long does a refund take for it?", history=FLIGHT)) is None
    short = chat("Tell me a joke.", "Why did the scarecrow win an award? He was outstanding.")
    assert real.lookup(Request("And how long does a refund take?", history=short)) is None
