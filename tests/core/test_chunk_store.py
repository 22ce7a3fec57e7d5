"""Chunk vectors of stored long texts are kept in the SQL store, per partition: a process that
did not embed a context (another worker, a restart) looks up a prompt over it running the model
on the new question only, instead of on the whole prompt."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from core_support import record_texts
from rag_context import CONTEXT, OTHER_QUESTION, QUESTION, REWORDED

from modelcache import Cache, Request
from modelcache.embedding import build_embedder
from modelcache.embedding.base import BaseEmbedder
from modelcache.storage.rows import chunk_digest, decode_vector, encode_vector

pytestmark = pytest.mark.model

TEMPLATE = "Answer from the context only.\n\nContext:\n{context}\n\nQuestion: {question}\nAnswer:"


def rag(question: str) -> str:
    """A RAG prompt over the shared context (about 450 MiniLM tokens: several chunks)."""
    return TEMPLATE.format(context=CONTEXT, question=question)


@pytest.fixture
def fresh_embedder() -> Callable[[], BaseEmbedder]:
    """A new MiniLM instance each call: its chunk memo is empty, as in a new process."""

    def factory() -> BaseEmbedder:
        embedder = build_embedder("minilm")
        assert isinstance(embedder, BaseEmbedder)
        return embedder

    return factory


@pytest.fixture
def stored(
    make_cache: Callable[..., Cache], fresh_embedder: Callable[[], BaseEmbedder], tmp_path: Path
) -> Iterator[Path]:
    """A cache folder holding one RAG prompt in tenant "a", written by a closed cache."""
    folder = tmp_path / "shared"
    writer = make_cache(folder, embedder=fresh_embedder())
    writer.insert(Request.from_text(rag(QUESTION), tenant="a"), "30 days")
    writer.close()
    yield folder


@pytest.fixture
def restarted(
    stored: Path,
    make_cache: Callable[..., Cache],
    fresh_embedder: Callable[[], BaseEmbedder],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Cache, BaseEmbedder, list[str]]:
    """A new process's cache over the stored folder, its embedder, and the texts it embeds."""
    embedder = fresh_embedder()
    cache = make_cache(stored, embedder=embedder)
    return cache, embedder, record_texts(monkeypatch, embedder, "_encode")


def test_a_restarted_cache_runs_the_model_on_the_new_question_only(
    restarted: tuple[Cache, BaseEmbedder, list[str]],
) -> None:
    cache, _, encoded = restarted
    hit = cache.lookup(Request.from_text(rag(REWORDED), tenant="a"))
    assert hit is not None and hit.answer == "30 days" and hit.kind == "semantic"
    # the context's chunks and the stored question came from the store: one short text ran
    assert encoded == [REWORDED]
    encoded.clear()
    assert cache.lookup(Request.from_text(rag(OTHER_QUESTION), tenant="a")) is None
    assert encoded == [OTHER_QUESTION]


def test_chunk_vectors_are_read_only_in_their_own_partition(
    restarted: tuple[Cache, BaseEmbedder, list[str]],
) -> None:
    cache, embedder, encoded = restarted
    assert cache.lookup(Request.from_text(rag(REWORDED), tenant="b")) is None
    # tenant b stored nothing: every chunk of the prompt was embedded here
    assert len(encoded) == len(embedder._windows(rag(REWORDED))) > 2


def _chunk_rows(cache: Cache) -> int:
    with cache._sql._engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM modelcache_chunk")).scalar_one())


def test_clear_drops_the_chunk_vectors(
    stored: Path, make_cache: Callable[..., Cache], fresh_embedder: Callable[[], BaseEmbedder]
) -> None:
    cache = make_cache(stored, embedder=fresh_embedder())
    cache.insert(Request.from_text(rag(QUESTION), tenant="b"), "30 days")
    per_partition = _chunk_rows(cache) // 2
    assert per_partition > 2  # the context's chunks and the question's parts
    cache.clear(tenant="a")
    assert _chunk_rows(cache) == per_partition
    cache.clear()
    assert _chunk_rows(cache) == 0


@pytest.mark.parametrize(
    "planted",
    ["not base64!", encode_vector(np.ones(384, dtype=np.float32))],  # finite, not unit length
    ids=["not base64", "wrong length"],
)
def test_a_corrupt_chunk_vector_is_embedded_again(
    restarted: tuple[Cache, BaseEmbedder, list[str]], planted: str
) -> None:
    cache, _, encoded = restarted
    with cache._sql._engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE modelcache_chunk SET vector = :v WHERE digest = :d"),
            {"v": planted, "d": chunk_digest(QUESTION)},
        )
    hit = cache.lookup(Request.from_text(rag(REWORDED), tenant="a"))
    assert hit is not None and hit.answer == "30 days"
    assert sorted(encoded) == sorted([REWORDED, QUESTION])  # the corrupt one, embedded again


def test_an_unreadable_chunk_store_is_a_logged_embedding(
    restarted: tuple[Cache, BaseEmbedder, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache, _, _ = restarted

    def unreadable(*_: object) -> dict[str, str]:
        raise sa.exc.OperationalError("SELECT", {}, Exception("database is gone"))

    monkeypatch.setattr(cache._sql, "chunk_vectors", unreadable)
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        hit = cache.lookup(Request.from_text(rag(REWORDED), tenant="a"))
    assert hit is not None and hit.answer == "30 days"
    assert "could not read stored chunk vectors" in caplog.text
    assert REWORDED not in caplog.text and "Larkspur" not in caplog.text  # no user text logged


def test_chunk_vectors_kept_0_keeps_none(
    make_cache: Callable[..., Cache],
    fresh_embedder: Callable[[], BaseEmbedder],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = make_cache(tmp_path / "none", embedder=fresh_embedder(), chunk_vectors_kept=0)
    cache.insert(Request.from_text(rag(QUESTION)), "30 days")
    assert _chunk_rows(cache) == 0
    cache.close()
    embedder = fresh_embedder()
    cache = make_cache(tmp_path / "none", embedder=embedder, chunk_vectors_kept=0)
    encoded = record_texts(monkeypatch, embedder, "_encode")
    hit = cache.lookup(Request.from_text(rag(REWORDED)))
    assert hit is not None and hit.answer == "30 days"
    assert len(encoded) > 2  # every chunk embedded again


def test_maintenance_keeps_the_newest_chunk_vectors(
    make_cache: Callable[..., Cache],
    fresh_embedder: Callable[[], BaseEmbedder],
    tmp_path: Path,
    clock: Any,
) -> None:
    cache = make_cache(tmp_path / "few", embedder=fresh_embedder(), chunk_vectors_kept=4)
    cache.insert(Request.from_text(rag(QUESTION)), "30 days")
    clock.advance(1)
    cache.insert(Request.from_text(rag(OTHER_QUESTION)), "Dana Whitfield")
    assert _chunk_rows(cache) > 4
    clock.advance(601)  # the trim is due
    cache.flush()  # runs the maintenance pass
    with cache._sql._engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT digest, stored_at FROM modelcache_chunk")).all()
    assert len(kept) == 4  # exactly the cap, though one insert stored more at one time
    assert {at for _, at in kept} == {max(at for _, at in kept)}  # all of the newest insert
    assert chunk_digest(QUESTION) not in {d for d, _ in kept}


def _planted_rows(cache: Cache, tenant: str, planted: np.ndarray) -> tuple[int, int]:
    """Chunk rows of a tenant's partition, and how many hold the planted vector."""
    partition = Request.from_text(rag(QUESTION), tenant=tenant).partition.id
    with cache._sql._engine.connect() as conn:
        rows = (
            conn.execute(
                sa.text("SELECT vector FROM modelcache_chunk WHERE partition_id = :p"),
                {"p": partition},
            )
            .scalars()
            .all()
        )
    return len(rows), sum(float(np.dot(decode_vector(v), planted)) > 0.9999 for v in rows)


def test_a_vector_read_from_one_partition_is_never_stored_in_another(
    stored: Path,
    make_cache: Callable[..., Cache],
    fresh_embedder: Callable[[], BaseEmbedder],
) -> None:
    embedder = fresh_embedder()
    cache = make_cache(stored, embedder=embedder)
    # every vector tenant a stored, replaced by a well-formed wrong one (another text's)
    planted = np.asarray(embedder.embed([OTHER_QUESTION])[0])
    with cache._sql._engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE modelcache_chunk SET vector = :v"), {"v": encode_vector(planted)}
        )
    variant = rag(QUESTION).replace(
        "Answer from the context only.", "Answer using the context alone."
    )
    cache.lookup(Request.from_text(variant, tenant="a"))  # reads tenant a's rows
    cache.insert(Request.from_text(rag(QUESTION), tenant="b"), "30 days")
    embedder.clear_memo()  # the chunk memo forgets (as its LRU does); the check's memo does not
    cache.insert(Request.from_text(rag(QUESTION), tenant="c"), "30 days")
    # b and c keep only vectors this process computed, never one it read from a's rows
    # (b holds only what was computed fresh: the chunks read from a's rows were reused, not
    # stored; c, after the memo forgot them, holds a whole prompt's)
    _, b_planted = _planted_rows(cache, "b", planted)
    c_rows, c_planted = _planted_rows(cache, "c", planted)
    assert b_planted == 0 and c_planted == 0
    assert c_rows > 2


@pytest.mark.parametrize(
    ("owner", "step", "message"),
    [
        ("_sql", "put_chunk_vectors", "could not store chunk vectors"),
        ("_acceptor", "stored_vectors", "could not collect chunk vectors"),
    ],
)
def test_a_failure_keeping_chunk_vectors_does_not_fail_the_insert(
    make_cache: Callable[..., Cache],
    fresh_embedder: Callable[[], BaseEmbedder],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    owner: str,
    step: str,
    message: str,
) -> None:
    cache = make_cache(tmp_path / "w", embedder=fresh_embedder())

    def failing(*_: object, **__: object) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(getattr(cache, owner), step, failing)
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        cache.insert(Request.from_text(rag(QUESTION)), "30 days")
    assert message in caplog.text
    hit = cache.lookup(Request.from_text(rag(QUESTION)))
    assert hit is not None and hit.exact


def test_a_stuck_read_of_stored_parts_counts_against_the_lookup_deadline(
    stored: Path,
    make_cache: Callable[..., Cache],
    fresh_embedder: Callable[[], BaseEmbedder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    embedder = fresh_embedder()
    cache = make_cache(stored, embedder=embedder, lookup_timeout=0.5)
    embedder.embed(["warm up"])  # the model and the vector store are loaded before timing
    assert cache.ready(timeout=30)["ready"]
    real = cache._sql.chunk_vectors

    def stuck_on_parts(partition_id: str, digests: list[str]) -> dict[str, str]:
        if chunk_digest(QUESTION) in digests and len(digests) <= 2:  # the stored question
            time.sleep(5)
        return real(partition_id, digests)

    monkeypatch.setattr(cache._sql, "chunk_vectors", stuck_on_parts)
    started = time.perf_counter()
    hit = cache.lookup(Request.from_text(rag(REWORDED), tenant="a"))
    assert hit is None and time.perf_counter() - started < 4  # a timed-out miss, not a wait


def test_a_bulk_load_keeps_every_chunk_vector_though_the_memo_is_smaller(
    make_cache: Callable[..., Cache], fresh_embedder: Callable[[], BaseEmbedder], tmp_path: Path
) -> None:
    embedder = fresh_embedder()
    embedder.memo_size = 4  # fewer than one prompt's chunks
    cache = make_cache(tmp_path / "bulk", embedder=embedder)
    prompts = [rag(q) for q in (QUESTION, REWORDED, OTHER_QUESTION)]
    cache.insert_many([(Request.from_text(p), "answer") for p in prompts])
    partition = Request.from_text(prompts[0]).partition.id
    chunks = {c for p in prompts for c in embedder._windows(Request.from_text(p).query_text)}
    assert len(chunks) > 4
    stored = cache._sql.chunk_vectors(partition, [chunk_digest(c) for c in chunks])
    assert len(stored) == len(chunks)
