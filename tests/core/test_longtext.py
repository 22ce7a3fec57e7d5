"""Long texts (RAG prompts) are accepted part by part, not on their averaged vector."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from core_support import record_texts

from modelcache import Cache, FakeEmbedder, Request, SentenceTransformerEmbedder, longtext
from modelcache.embedding.base import _sentence_spans, count_words
from modelcache.guard import Guard
from modelcache.longtext import LongTextCheck, by_edit_overlap, differing_regions, edit_overlap

CHUNKS = [
    f"Policy clause {word}: orders shipped to region {word} follow the standard terms for "
    f"returns, refunds and delivery, and the help centre lists the details for {word}."
    for word in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
]
CONTEXT = " ".join(CHUNKS)


def rag(question: str, context: str = CONTEXT) -> str:
    """A RAG-shaped prompt: instructions, retrieved context, then the question."""
    return f"Answer from the context only. Context: {context} Question: {question} Answer:"


def check(
    embedder: FakeEmbedder, threshold: float = 0.5, guard: bool = True, long_tokens: int = 48
) -> LongTextCheck:
    """A check over the fake embedder (similarity follows shared words)."""
    return LongTextCheck(
        embedder.embed,
        embedder.count_tokens,
        long_tokens=long_tokens,
        threshold=threshold,
        conflict=Guard().conflict if guard else None,
    )


def test_regions_are_whole_sentences_and_ignore_case_and_reordering() -> None:
    regions, shared = differing_regions(
        rag("What is the refund window?"), rag("Who pays for return shipping?")
    )
    assert [(r.old, r.new) for r in regions] == [
        ("What is the refund window?", "Who pays for return shipping?")
    ]
    assert shared > 100
    # retrieved chunks in another order and another letter case are not differences
    reordered = " ".join(CHUNKS[4:] + CHUNKS[:4])
    q = "What is the refund window?"
    assert differing_regions(rag(q), rag(q.upper(), reordered))[0] == []


def test_an_edited_copy_of_a_repeated_sentence_is_a_difference() -> None:
    step = "Boil the pasta in salted water, then drain it. "
    regions, _ = differing_regions(step * 5, step * 4 + step.replace("drain it", "drain the water"))
    assert [(r.old, r.new) for r in regions] == [
        (step.strip(), "Boil the pasta in salted water, then drain the water.")
    ]


def test_different_question_over_the_same_context_is_rejected(
    fake_embedder: FakeEmbedder,
) -> None:
    whole = fake_embedder.embed([rag("What is the refund window?"), rag("Who is the CEO?")])
    assert float(whole[0] @ whole[1]) > 0.9  # what the averaged vector sees
    reason = check(fake_embedder).reason(rag("Who is the CEO?"), rag("What is the refund window?"))
    assert reason is not None and "differing part" in reason


def test_reworded_question_over_the_same_context_is_accepted(fake_embedder: FakeEmbedder) -> None:
    old, new = rag("What is the refund window?"), rag("What is the refund window, please?")
    assert check(fake_embedder).reason(new, old) is None


def test_the_guard_runs_over_the_differing_part(fake_embedder: FakeEmbedder) -> None:
    old, new = rag("Is the refund window 30 days?"), rag("Is the refund window 14 days?")
    assert check(fake_embedder, guard=False).reason(new, old) is None
    reason = check(fake_embedder).reason(new, old)
    assert reason is not None and "number" in reason


def test_text_on_one_side_only_and_another_context_are_rejected(
    fake_embedder: FakeEmbedder,
) -> None:
    q = "What is the refund window?"
    added = rag(q, CONTEXT + " Orders from the outlet store are final sale.")
    assert check(fake_embedder).reason(added, rag(q)) == "text on one side only"
    other = " ".join(f"Unrelated clause number {i} about cabin bags and seats." for i in range(30))
    reason = check(fake_embedder, threshold=-1.0).reason(rag(q, other), rag(q))
    assert reason is not None and "words differ" in reason


def test_texts_with_nothing_in_common_are_left_to_the_whole_vector_and_guard(
    fake_embedder: FakeEmbedder,
) -> None:
    c = check(fake_embedder)
    assert c.reason("One long text. " * 3, "Another wording entirely") is None
    old = "Please explain how I should read a large JSON file in Python with little memory."
    new = "Tell me the way to load a big JSON file in Rust when memory is short."
    assert check(fake_embedder, guard=False).reason(new, old) is None
    reason = c.reason(new, old)
    assert reason is not None and reason.startswith("guard:")
    assert not c.applies("short question?", "another short question?")
    assert c.applies(rag("short?"), "short question?")


def test_candidates_come_best_edit_overlap_first_and_another_context_is_not_scored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = " ".join(f"Unrelated clause number {i} about cabin bags and seats." for i in range(30))
    new = rag("How many days is the refund window?")
    olds = [
        rag("What is the refund window?", other),
        rag("Who pays for return shipping?"),
        rag("What is the refund window?"),
        rag("What is the refund window?"),  # a tie keeps the given order
        rag("How many days is the refund window?", other),
        "How many days is the refund window?",
    ]
    expected = sorted(range(len(olds)), key=lambda i: -edit_overlap(olds[i], new))
    scored: list[str] = []
    real = longtext._middle_jaccard

    def counting(old: str, new: str, start: int, low: int) -> float:
        scored.append(old)
        return real(old, new, start, low)

    monkeypatch.setattr(longtext, "_middle_jaccard", counting)
    order = by_edit_overlap(new, olds)
    assert next(order) is olds[expected[0]] is olds[2]
    # the first came out before the prompts over another context were scored
    assert all(CONTEXT in old for old in scored)
    assert list(order) == [olds[i] for i in expected[1:]]


def test_words_are_counted_only_up_to_a_limit() -> None:
    assert count_words("one two three four", 2) == 2
    assert count_words("one two", 5) == count_words("one two") == 2
    assert count_words("東京 is big", 10) == 4


def test_a_check_diffs_each_pair_once(
    fake_embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    real = longtext.differing_regions

    def counting(old: str, new: str) -> tuple[list[longtext.Region], int]:
        calls.append((old, new))
        return real(old, new)

    monkeypatch.setattr(longtext, "differing_regions", counting)
    c = check(fake_embedder)
    old, new = rag("What is the refund window?"), rag("What is the refund window, please?")
    assert c.pending(new, old) == [
        "What is the refund window?",
        "What is the refund window, please?",
    ]
    assert c.reason(new, old) is None
    assert calls == [(old, new)]  # ``pending`` and ``reason`` read the pair once


@pytest.fixture
def engine(make_cache: Callable[..., Cache]) -> Cache:
    """A fake-embedder cache with the default configuration."""
    return make_cache()


def test_engine_serves_only_the_same_question_over_a_long_context(engine: Cache) -> None:
    engine.insert(Request.from_text(rag("What is the refund window?")), "30 days")
    assert engine.lookup(Request.from_text(rag("Who is the CEO of the company?"))) is None
    assert engine.lookup(Request.from_text(rag("Who pays for return shipping?"))) is None
    hit = engine.lookup(Request.from_text(rag("What is the refund window, please?")))
    assert hit is not None and hit.kind == "semantic" and hit.answer == "30 days"


def test_engine_exact_tier_and_short_queries_are_unchanged(engine: Cache) -> None:
    prompt = rag("What is the refund window?")
    engine.insert(Request.from_text(prompt), "30 days")
    hit = engine.lookup(Request.from_text(prompt.replace(" ", "  ")))
    assert hit is not None and hit.kind == "exact"
    hit = engine.lookup(Request.from_text(prompt.upper()))  # other case: semantic, same answer
    assert hit is not None and hit.answer == "30 days"
    engine.insert(Request.from_text("How do I reset my password?"), "reset link")
    hit = engine.lookup(Request.from_text("how do I reset my password please"))
    assert hit is not None and hit.answer == "reset link"


def test_an_inserted_prompt_s_question_is_embedded_once_at_insert(
    engine: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.insert(Request.from_text(rag("What is the refund window?")), "30 days")
    embedded = record_texts(monkeypatch, engine._acceptor._longtext, "_embed")
    hit = engine.lookup(Request.from_text(rag("What is the refund window, please?")))
    assert hit is not None and hit.answer == "30 days"
    # the stored side of the differing question was embedded when the prompt was stored
    assert embedded == ["What is the refund window, please?"]


def test_a_bulk_load_embeds_only_its_prompts(
    engine: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded: list[int] = []
    real = engine.embedder.embed

    def counting(texts: list[str]) -> np.ndarray:
        embedded.append(len(texts))
        return real(texts)

    monkeypatch.setattr(engine.embedder, "embed", counting)
    prompts = [rag(f"What is the refund window of shop {i}?") for i in range(65)]
    engine.insert_many([(Request.from_text(p), "30 days") for p in prompts], batch_size=65)
    assert embedded == [65]
    embedded.clear()
    engine.insert_many([(Request.from_text(p), "30 days") for p in prompts[:2]])
    # two prompts and their last three sentences: "Question:" and "Answer:" once, two questions
    assert embedded == [2 + 4]


def test_a_failing_part_embedding_is_a_logged_miss(engine: Cache) -> None:
    engine.insert(Request.from_text(rag("What is the refund window?")), "30 days")

    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("embedding backend down")

    hit = engine.lookup(Request.from_text(rag("What is the refund window, please?")))
    assert hit is not None  # the parts agree while the embedder works
    engine._acceptor._longtext._embed = broken
    assert engine.lookup(Request.from_text(rag("What is the refund window, thanks?"))) is None
    assert engine.stats()["errors"] == 1


# ---- chunked embedding of long texts: sentence-aligned, content-defined, memoised -------------
@pytest.mark.model
def test_long_prompts_share_their_context_chunks(minilm: SentenceTransformerEmbedder) -> None:
    context = " ".join(CHUNKS * 3)
    a, b = (
        minilm._windows(rag("What is the refund window?", context)),
        minilm._windows(rag("Who is the chief executive of the company?", context)),
    )
    assert len(a) > 2 and all(minilm.count_tokens(p) <= minilm.max_tokens for p in a)
    assert all(p.rstrip().endswith((".", "?", ":")) for p in a)  # whole sentences
    only_b = [p for p in b if p not in a]
    # only the chunks around the question differ: the context's chunks are shared
    assert any("chief executive" in p for p in only_b)
    assert sum(minilm.count_tokens(p) for p in only_b) < minilm.max_tokens // 2
    assert sum(minilm.count_tokens(p) for p in a if p not in b) < minilm.max_tokens // 2
    assert minilm._windows("How do I reset my password?") == ["How do I reset my password?"]


@pytest.mark.model
def test_a_question_is_a_chunk_of_its_own(minilm: SentenceTransformerEmbedder) -> None:
    context = " ".join(CHUNKS * 3)
    windows = minilm._windows(
        rag("Who pays for return shipping? And how long does it take?", context)
    )
    # each question alone, so the new chunk is the very text the long-text check compares
    assert "Who pays for return shipping?" in windows
    assert "And how long does it take?" in windows
    chinese = minilm._windows(context + " 退货运费由谁承担？ 回答：")
    assert "退货运费由谁承担？" in chinese


@pytest.mark.model
def test_chunk_vectors_are_memoised_and_equal_to_fresh_ones(
    minilm: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = " ".join(CHUNKS * 3)
    first, second = rag("What is the refund window?", context), rag("Who is the CEO?", context)
    minilm.clear_memo()
    encoded = record_texts(monkeypatch, minilm, "_encode")
    cold = minilm.embed([first])[0]
    assert len(encoded) == len(set(minilm._windows(first)))  # repeated chunks once
    encoded.clear()
    assert np.allclose(minilm.embed([first])[0], cold, atol=1e-6)
    assert encoded == []  # every chunk came from the memo
    minilm.embed([second])
    new = list(dict.fromkeys(p for p in minilm._windows(second) if p not in minilm._windows(first)))
    assert encoded == new  # only the chunks around the new question are encoded
    encoded.clear()
    minilm.clear_memo()
    assert np.allclose(minilm.embed([first])[0], cold, atol=1e-5) and encoded
    minilm.embed(["How do I reset my password?"] * 2)  # a text runs once per call ...
    minilm.embed(["How do I reset my password?"])  # ... and short texts are not memoised
    assert encoded.count("How do I reset my password?") == 2


def test_only_candidates_up_to_the_first_accepted_one_are_checked(
    engine: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    for question, answer in (
        ("What is the refund window?", "30 days"),
        ("Who pays for return shipping?", "the shop"),
        ("How long does delivery take?", "3 days"),
    ):
        engine.insert(Request.from_text(rag(question)), answer)
    check = engine._acceptor._longtext
    checked: list[str] = []
    real = check.reason

    def counting(new: str, old: str) -> str | None:
        checked.append(old)
        return real(new, old)

    monkeypatch.setattr(check, "reason", counting)
    hit = engine.lookup(Request.from_text(rag("What is the refund window, please?")))
    assert hit is not None and hit.answer == "30 days"
    assert checked == [rag("What is the refund window?")]  # not every recalled candidate


@pytest.mark.model
def test_a_long_text_is_tokenized_once_per_lookup(
    minilm: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = rag("What is the refund window?", " ".join(CHUNKS * 3))
    minilm.clear_memo()
    tokenized: list[str] = []
    real = minilm._tokens

    def counting(text: str) -> list[int]:
        tokenized.append(text)
        return real(text)

    def counting_starts(text: str) -> tuple[list[int], list[int]] | None:
        tokenized.append(text)
        return real_starts(text)

    real_starts = minilm._token_starts
    monkeypatch.setattr(minilm, "_tokens", counting)
    monkeypatch.setattr(minilm, "_token_starts", counting_starts)
    monkeypatch.setattr(minilm, "_token_lists", lambda texts: pytest.fail("sentences tokenized"))
    count = minilm.count_tokens(prompt)
    assert count > minilm.max_tokens and len(minilm._windows(prompt)) > 2
    minilm.embed([prompt])
    assert minilm.count_tokens(prompt) == count and tokenized == [prompt]
    minilm.clear_memo()
    assert minilm.count_tokens(prompt) == count and tokenized == [prompt, prompt]


@pytest.mark.model
def test_sentence_tokens_read_off_the_text_give_the_same_chunks(
    minilm: SentenceTransformerEmbedder,
) -> None:
    texts = [
        rag("What is the refund window?", " ".join(CHUNKS * 3)),
        "Ünïcödé café — naïve 東京は大きい。本当に？ Yes!  Emoji 😀 here; then more.\n\n" * 120,
        "word " * 2000,  # one sentence longer than the window
    ]
    for text in texts:
        minilm.clear_memo()
        cold = minilm._text_info(text)  # the text tokenized once, sentences read off it
        assert cold[0] == len(minilm._tokens(text))
        spans = _sentence_spans(text)
        alone = [len(minilm._tokens(text[a:b])) for a, b in spans]
        # the same chunks as tokenizing each sentence on its own ...
        assert cold[1] == minilm._chunks(text, spans, alone)
        minilm._text_memo.clear()
        # ... and as the sentences' memoised token counts give
        assert minilm._text_info(text) == cold


@pytest.mark.model
def test_only_the_new_sentences_of_a_prompt_over_a_seen_context_are_tokenized(
    minilm: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = " ".join(CHUNKS * 3)
    minilm.clear_memo()
    minilm.embed([rag("What is the refund window?", context)])
    tokenized: list[str] = []
    real = minilm._token_lists

    def counting(texts: list[str]) -> list[list[int]]:
        tokenized.extend(texts)
        return real(texts)

    monkeypatch.setattr(minilm, "_token_starts", lambda text: pytest.fail("whole text tokenized"))
    monkeypatch.setattr(minilm, "_token_lists", counting)
    prompt = rag("Who pays for return shipping?", context)
    count, windows = minilm._text_info(prompt)
    assert tokenized == ["Who pays for return shipping?"]
    assert count == len(minilm._tokens(prompt))
    spans = _sentence_spans(prompt)
    assert windows == minilm._chunks(
        prompt, spans, [len(minilm._tokens(prompt[a:b])) for a, b in spans]
    )


@pytest.mark.model
def test_a_long_lookup_with_its_context_seen_runs_the_model_once(
    make_cache: Callable[..., Cache],
    minilm: SentenceTransformerEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = make_cache(embedder=minilm)
    context = " ".join(CHUNKS * 3)
    for question, answer in (
        ("How long do I have to send an item back?", "30 days"),
        ("Which payment methods do you accept?", "cards"),
        ("Who pays for return shipping?", "the shop"),
    ):
        engine.insert(Request.from_text(rag(question, context)), answer)
    minilm.clear_memo()
    engine._acceptor._longtext._memo.clear()
    minilm.embed([rag("How long do I have to send an item back?", context)])  # context seen
    runs: list[list[str]] = []
    real = minilm._encode

    def counting(texts: list[str]) -> np.ndarray:
        runs.append(texts)
        return real(texts)

    monkeypatch.setattr(minilm, "_encode", counting)
    hit = engine.lookup(
        Request.from_text(rag("How many days do I have to send an item back?", context))
    )
    assert hit is not None and hit.answer == "30 days"
    # one call of one text: the new question is both the new chunk and the check's part, and
    # the stored side's question is a chunk of the seen prompt (memoised, and in the store)
    assert runs == [["How many days do I have to send an item back?"]]
    miss = engine.lookup(Request.from_text(rag("Who is the chief executive?", context)))
    assert miss is None  # another question over the same context still misses
