"""Interrupted and failed writes (issue 13, item 5): vectors are validated before anything is
written, a failed vector write leaves no row, and ``repair`` makes the stores agree again."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chromadb.api.client import SharedSystemClient
from typer.testing import CliRunner

from modelcache import BackendError, Cache, FakeEmbedder, Request
from modelcache.cli import app

Q = "How do I reset my password?"
PARAPHRASE = "How do I reset my password please?"


class BadVectors(FakeEmbedder):
    """Returns NaN or wrongly sized vectors once ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: str | None = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = super().embed(texts)
        if self.broken == "nan":
            vectors[:, 0] = np.nan
        elif self.broken == "dimension":
            vectors = vectors[:, :-1]
        return vectors


@pytest.mark.parametrize("fault", ["nan", "dimension"])
def test_invalid_vectors_are_refused_before_anything_is_written(
    make_cache: Callable[..., Cache], fault: str
) -> None:
    embedder = BadVectors()
    cache = make_cache(embedder=embedder)
    cache.insert(Request.from_text("an earlier question"), "kept")
    embedder.broken = fault
    with pytest.raises(BackendError, match=r"non-finite|shape"):
        cache.insert(Request.from_text(Q), "answer")
    embedder.broken = None
    assert cache.lookup(Request.from_text(Q)) is None, "no row was left behind"
    assert cache.stats()["entries"] == 1
    assert cache.check().ok


def test_a_failed_vector_write_leaves_no_row(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()

    def gone(*_: Any, **__: Any) -> None:
        raise RuntimeError("the Chroma folder is gone")

    cache._vectors.upsert = gone  # type: ignore[method-assign]
    with pytest.raises(BackendError):
        cache.insert(Request.from_text(Q), "answer")
    del cache._vectors.upsert
    assert cache.lookup(Request.from_text(Q)) is None, "not even an exact hit"
    assert cache.stats()["entries"] == 0
    assert cache.check().ok


def test_repair_reembeds_rows_without_vectors_and_drops_orphans(
    make_cache: Callable[..., Cache],
) -> None:
    cache = make_cache()
    kept = Request.from_text(Q)
    cache.insert(kept, "answer")
    orphan = Request.from_text("What is the capital of France?")
    cache.insert(orphan, "Paris")
    pid = kept.partition.id
    cache._vectors.delete(pid, [kept.exact_key])  # a row without its vector
    cache._sql.delete_ids([orphan.exact_key])  # a vector without its row
    report = cache.check()
    assert report.rows_without_vector == [kept.exact_key]
    assert report.vectors_without_row == [orphan.exact_key]

    seen: list[tuple[int, int]] = []
    repaired = cache.repair(progress=lambda done, total: seen.append((done, total)))
    assert (repaired.reembedded, repaired.orphans_dropped, repaired.failed) == (1, 1, [])
    assert seen and seen[-1][0] == seen[-1][1]
    assert cache.check().ok
    hit = cache.lookup(Request.from_text(PARAPHRASE), threshold=0.5)
    assert hit is not None and hit.kind == "semantic" and hit.answer == "answer"


def test_a_lost_chroma_folder_is_repaired_from_the_rows(
    make_cache: Callable[..., Cache], tmp_path: Path
) -> None:
    """Follow-ups are re-embedded with their conversation tag, so they are recalled again."""
    from modelcache import Message

    folder = tmp_path / "cache"
    cache = make_cache(folder)
    history = (Message("user", "What is tax law?"), Message("assistant", "Rules."))
    cache.insert(Request.from_text(Q), "answer")
    cache.insert(Request("explain more about it", history=history), "more")
    cache.close()
    shutil.rmtree(folder / "chroma")
    SharedSystemClient.clear_system_cache()  # as a new process would: no cached Chroma system

    reopened = make_cache(folder, embedder=FakeEmbedder(), similarity_threshold_followup=0.3)
    assert len(reopened.check().rows_without_vector) == 2
    assert reopened.lookup(Request.from_text(PARAPHRASE), threshold=0.5) is None
    assert reopened.repair().reembedded == 2
    assert reopened.check().ok
    assert reopened.lookup(Request.from_text(PARAPHRASE), threshold=0.5) is not None
    follow_up = reopened.lookup(Request("please explain it more", history=history))
    assert follow_up is not None and follow_up.answer == "more"


def test_cli_repair_reports_and_fixes(make_cache: Callable[..., Cache], tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    cache = make_cache(folder)
    request = Request.from_text(Q)
    cache.insert(request, "answer")
    cache._vectors.delete(request.partition.id, [request.exact_key])
    embedder = cache.config.embedder
    cache.close()

    runner = CliRunner()
    args = ["--path", str(folder), "repair", "--json"]
    env = {"MODELCACHE_EMBEDDER": embedder}
    with pytest.MonkeyPatch.context() as mp:  # the CLI builds its own embedder: use the fake
        mp.setattr("modelcache.engine.build_embedder", lambda *_, **__: FakeEmbedder())
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["rows_without_vector_before"] == 1
        assert report["reembedded"] == 1 and report["consistent"] is True
        again = json.loads(runner.invoke(app, args, env=env).stdout)
        assert again["reembedded"] == 0 and again["rows_without_vector_before"] == 0


def test_a_lookup_meeting_an_orphan_does_not_wait_for_a_running_write(
    make_cache: Callable[..., Cache], clock: Any
) -> None:
    """An insert writes its vector before its row, so concurrent lookups meet "orphans": they
    must neither wait for the insert's lock nor delete a vector whose row is coming."""
    import threading
    import time

    cache = make_cache(lookup_timeout=2.0)
    orphan = Request.from_text(Q)
    cache.insert(orphan, "answer")
    cache._sql.delete_ids([orphan.exact_key])
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with cache._write_lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    held.wait(5)
    try:
        started = time.monotonic()
        assert cache.lookup(Request.from_text(PARAPHRASE), threshold=0.5) is None
        assert time.monotonic() - started < 1.0
        assert cache.check().vectors_without_row == [orphan.exact_key], "left for later"
    finally:
        release.set()
        thread.join(10)
    clock.advance(61)
    cache.flush()  # the background pass cleans it once the write is done and time has passed
    assert cache.check().ok
    assert cache.stats()["errors"] == 0
