"""The semantic path with the real shipped model (all-MiniLM-L6-v2): where meaning matters."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from modelcache import Cache, Message, Request, SentenceTransformerEmbedder
from modelcache.embedding import l2_normalize

pytestmark = pytest.mark.model

Q = "How do I reset my password?"


def cos(embedder: SentenceTransformerEmbedder, a: str, b: str) -> float:
    """Cosine similarity of two texts under the embedder."""
    v = embedder.embed([a, b])
    return float(v[0] @ v[1])


@pytest.fixture
def real(make_cache: Callable[..., Cache], minilm: SentenceTransformerEmbedder) -> Cache:
    """A cache on tmp_path with the real model and the default thresholds."""
    return make_cache(embedder=minilm)


def test_the_model_is_the_shipped_minilm(minilm: SentenceTransformerEmbedder) -> None:
    assert minilm.name == "st:all-MiniLM-L6-v2"
    assert minilm.dimension == 384
    v = minilm.embed([Q, "another text"])
    assert v.dtype == np.float32 and v.shape == (2, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "paraphrase",
    ["How can I reset my password?", "I forgot my password, how do I change it?"],
)
def test_paraphrases_hit_and_report_their_similarity(
    real: Cache, minilm: SentenceTransformerEmbedder, paraphrase: str
) -> None:
    real.insert(Request.from_text(Q), "Use 'Forgot password' on the sign-in page.")
    hit = real.lookup(Request.from_text(paraphrase))
    assert hit is not None, f"paraphrase missed (cosine {cos(minilm, Q, paraphrase):.3f})"
    assert hit.kind == "semantic" and not hit.exact
    assert hit.answer == "Use 'Forgot password' on the sign-in page."
    assert hit.matched_query == Q
    assert hit.similarity == pytest.approx(cos(minilm, paraphrase, Q), abs=1e-3)
    assert real.thresholds.short <= hit.similarity < 1.0


@pytest.mark.parametrize(
    "unrelated",
    ["What is the best pizza topping?", "How do I reset my router?", "Who won the world cup?"],
)
def test_unrelated_questions_miss(real: Cache, unrelated: str) -> None:
    real.insert(Request.from_text(Q), "password answer")
    assert real.lookup(Request.from_text(unrelated)) is None


def test_best_of_several_entries_is_returned(real: Cache) -> None:
    real.insert_many(
        [
            (Request.from_text(Q), "password"),
            (Request.from_text("What is the capital of France?"), "Paris"),
            (Request.from_text("How do I reset my router?"), "router"),
        ]
    )
    hit = real.lookup(Request.from_text("Which city is the capital of France?"))
    assert hit is not None and hit.answer == "Paris"
    hit = real.lookup(Request.from_text("How can I reset my password?"))
    assert hit is not None and hit.answer == "password"


# ---- short and long thresholds -----------------------------------------------------------------
GREEN_TEA = "What are the health benefits of drinking green tea every day?"
GREEN_TEA_2 = "Is drinking green tea daily good for your health?"  # cosine about 0.88


def test_short_and_long_thresholds(
    make_cache: Callable[..., Cache], minilm: SentenceTransformerEmbedder
) -> None:
    sim = cos(minilm, GREEN_TEA, GREEN_TEA_2)
    assert 0.86 <= sim < 0.90, f"pair drifted: {sim:.3f}"
    tokens = minilm.count_tokens(GREEN_TEA_2)
    assert 5 < tokens < 48
    # counted as short (default long_query_tokens=48): the short threshold 0.85 applies -> hit
    short = make_cache(embedder=minilm)
    short.insert(Request.from_text(GREEN_TEA), "yes")
    assert short.lookup(Request.from_text(GREEN_TEA_2)) is not None
    short.close()
    # the same query counted as long: the long threshold 0.90 applies -> miss
    long = make_cache(embedder=minilm, long_query_tokens=5)
    assert long.lookup(Request.from_text(GREEN_TEA_2)) is None
    assert long.lookup(Request.from_text(GREEN_TEA_2), threshold=0.85) is not None


# ---- multi-turn context ------------------------------------------------------------------------
TAX_REPLY = Message("assistant", "The rules on taxes.")
TAX = (Message("user", "What is tax law?"), TAX_REPLY)
FOOTBALL = (Message("user", "Who won the football world cup?"), Message("assistant", "Spain."))
# a paraphrased first turn that the cache answered: the same reply, other words
TAX_PARAPHRASED = (Message("user", "Can you explain what tax law is?"), TAX_REPLY)


def test_same_follow_up_after_a_different_history_misses(real: Cache) -> None:
    real.insert(Request("explain more", history=TAX), "more on tax law")
    assert real.lookup(Request("explain more", history=FOOTBALL)) is None
    assert real.lookup(Request("explain more")) is None, "standalone vs contextual"


def test_same_follow_up_after_a_paraphrased_history_hits(
    real: Cache, minilm: SentenceTransformerEmbedder
) -> None:
    real.insert(Request("explain more", history=TAX), "more on tax law")
    context_sim = cos(minilm, TAX[0].content, TAX_PARAPHRASED[0].content)
    assert context_sim >= real.thresholds.context
    hit = real.lookup(Request("explain more", history=TAX_PARAPHRASED))
    assert hit is not None and hit.kind == "semantic" and hit.answer == "more on tax law"


def test_a_reply_generated_afresh_is_the_same_conversation(real: Cache) -> None:
    """The model said the same in other words: a hit; it asked back instead: a miss."""
    real.insert(Request("explain more", history=TAX), "more on tax law")
    regenerated = (TAX[0], Message("assistant", "Tax law governs how taxes are assessed."))
    hit = real.lookup(Request("explain more", history=regenerated))
    assert hit is not None and hit.answer == "more on tax law"
    asked_back = (TAX[0], Message("assistant", "Which country's tax law do you mean?"))
    assert real.lookup(Request("explain more", history=asked_back)) is None


def test_paraphrased_follow_up_uses_the_follow_up_threshold(
    real: Cache, minilm: SentenceTransformerEmbedder
) -> None:
    history = (Message("user", "What was the impact of the Black Death?"), TAX_REPLY)
    real.insert(Request("how many people died", history=history), "25-30 million")
    sim = cos(minilm, "how many people died", "death toll")
    assert real.thresholds.followup <= sim < real.thresholds.short, f"pair drifted: {sim:.3f}"
    hit = real.lookup(Request("death toll", history=history))
    assert hit is not None and hit.answer == "25-30 million"
    assert real.lookup(Request.from_text("death toll")) is None, "standalone: short threshold"


def test_another_follow_up_in_the_same_conversation_misses(real: Cache) -> None:
    history = (Message("user", "Tell me about the Roman Empire."), TAX_REPLY)
    real.insert(Request("when did it begin", history=history), "27 BC")
    assert real.lookup(Request("who founded it", history=history)) is None
    assert real.lookup(Request("where did it begin", history=history)) is None
    hit = real.lookup(Request("when did it start", history=history))
    assert hit is not None and hit.answer == "27 BC"


def test_standalone_entry_does_not_answer_a_follow_up(real: Cache) -> None:
    real.insert(Request.from_text("explain more"), "standalone")
    assert real.lookup(Request("explain more", history=TAX)) is None
    hit = real.lookup(Request.from_text("explain more"))
    assert hit is not None and hit.exact


def test_each_history_gets_its_own_answer(real: Cache) -> None:
    real.insert_many(
        [
            (Request("explain more", history=TAX), "tax"),
            (Request("explain more", history=FOOTBALL), "football"),
        ]
    )
    hit = real.lookup(Request("explain more", history=TAX_PARAPHRASED))
    assert hit is not None and hit.answer == "tax"
    other = (Message("user", "Which team won the football world cup?"), FOOTBALL[1])
    hit = real.lookup(Request("explain more", history=other))
    assert hit is not None and hit.answer == "football"


# ---- long texts: sliding windows, not truncation -----------------------------------------------
PASTA = "Boil the pasta in salted water for nine minutes, then drain it and add the sauce. "
STARS = "Neutron stars form when massive stars collapse at the end of their lives. "
LONG_TEXT = PASTA * 12 + STARS * 20  # the astronomy half lies beyond the 256-token window


def test_long_text_is_embedded_as_averaged_windows(minilm: SentenceTransformerEmbedder) -> None:
    tokens = minilm.count_tokens(LONG_TEXT)
    assert tokens > 256
    windows = minilm._windows(LONG_TEXT)
    assert len(windows) >= 2
    vector = minilm.embed([LONG_TEXT])[0]
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)

    # the documented rule: the length-weighted mean of the normalised window embeddings
    parts = l2_normalize(minilm._encode(windows))
    weights = np.array([max(1, len(w)) for w in windows], dtype=np.float32)[:, None]
    expected = l2_normalize((parts * weights).sum(axis=0))[0]
    assert np.allclose(vector, expected, atol=1e-5)

    # and not what truncation gives: the model alone sees only the first window
    truncated = l2_normalize(minilm._encode([LONG_TEXT]))[0]
    assert float(vector @ truncated) < 0.99
    star = minilm.embed(["How do neutron stars form?"])[0]
    assert float(vector @ star) > float(truncated @ star) + 0.05, "the tail is represented"


def test_short_text_is_one_window(minilm: SentenceTransformerEmbedder) -> None:
    assert minilm._windows(Q) == [Q]
    direct = l2_normalize(minilm._encode([Q]))[0]
    assert np.allclose(minilm.embed([Q])[0], direct, atol=1e-6)


def test_batch_mixing_long_and_short_texts(minilm: SentenceTransformerEmbedder) -> None:
    batch = minilm.embed([Q, LONG_TEXT, "What is the capital of France?"])
    assert batch.shape == (3, 384)
    assert np.allclose(batch[0], minilm.embed([Q])[0], atol=1e-5)
    assert np.allclose(batch[1], minilm.embed([LONG_TEXT])[0], atol=1e-5)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def test_long_entries_round_trip_through_the_cache(real: Cache) -> None:
    real.insert(Request.from_text(LONG_TEXT), "long answer")
    hit = real.lookup(Request.from_text(LONG_TEXT))
    assert hit is not None and hit.exact
    hit = real.lookup(
        Request.from_text(LONG_TEXT.replace("drain it", "drain the water", 1)), threshold=0.9
    )
    assert hit is not None and hit.similarity > 0.95
