"""The in-memory copy of an embedded Chroma's small partitions (vectors/mirror.py): it answers
as Chroma does, sees every write (also those made while it is copied, also through another
store of the same folder), and hands a partition back to Chroma when it does not fit."""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache import BackendError, Cache, Request
from modelcache.vectors import ChromaVectorStore
from modelcache.vectors import mirror as mirror_module
from modelcache.vectors.mirror import VectorMirror

DIM = 16


def vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def memory_store(path: Path, budget: int = 50_000, **kwargs: Any) -> ChromaVectorStore:
    kwargs.setdefault("copy_in_background", False)
    return ChromaVectorStore(path=str(path), memory_vectors=budget, **kwargs)


def copied(store: ChromaVectorStore, partition: str) -> bool:
    assert store._mirror is not None
    return store._mirror.copied(partition)


def test_answers_as_chroma_does(tmp_path: Path) -> None:
    """Same nearest neighbour, same similarities, the very stored vectors; beyond the first,
    the exact product may only find closer neighbours than Chroma's approximate index."""
    plain = ChromaVectorStore(path=str(tmp_path / "c"))
    data = vectors(2_000)
    plain.upsert("p", [f"e{i}" for i in range(2_000)], data)
    memory = memory_store(tmp_path / "c")
    probes = data[:60] + 0.05 * vectors(60, seed=1)
    for probe in probes:
        expected = plain.query_vectors("p", probe, 10)
        got = memory.query_vectors("p", probe, 10)
        assert got[0][0] == expected[0][0]
        by_id = {i: (sim, vec) for i, sim, vec in expected}
        for i, sim, vec in got:
            if i in by_id:
                assert sim == pytest.approx(by_id[i][0], abs=1e-5)
                assert np.array_equal(vec, by_id[i][1])
        assert got[-1][1] >= expected[-1][1] - 1e-6
    assert copied(memory, "p")


def test_writes_made_while_copying_are_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy reads Chroma, then writes land before it is published: they must not be lost
    (an insert) nor resurrected (a delete)."""
    store = memory_store(tmp_path / "c")
    data = vectors(4)
    store.upsert("p", ["a", "b", "c"], data[:3])
    real_read = store._read_all

    def read_then_write(collection: str, limit: int) -> Any:
        snapshot = real_read(collection, limit)  # the stale picture the copy will build
        store.upsert("p", ["late"], data[3:4])
        store.delete("p", ["a"])
        store.upsert("p", ["b"], data[2:3])  # b now points where c does
        return snapshot

    monkeypatch.setattr(store, "_read_all", read_then_write)
    store.query("p", data[0], 1)
    assert copied(store, "p")
    found = {i: vec for i, _, vec in store.query_vectors("p", data[0], 10)}
    assert set(found) == {"b", "c", "late"}
    assert np.array_equal(found["b"], data[2]) and np.array_equal(found["late"], data[3])
    assert store.query("p", data[3], 1)[0][0] == "late"


def test_another_store_of_the_folder_writes_through_the_same_copy(tmp_path: Path) -> None:
    """Two caches of one process may share a folder; one with the copy turned off still keeps
    the other's copy exact."""
    memory = memory_store(tmp_path / "c")
    plain = ChromaVectorStore(path=str(tmp_path / "c"), memory_vectors=0)
    data = vectors(3)
    memory.upsert("p", ["a"], data[:1])
    assert memory.query("p", data[0], 1)[0][0] == "a" and copied(memory, "p")
    plain.upsert("p", ["b"], data[1:2])
    plain.delete("p", ["a"])
    assert [i for i, _ in memory.query("p", data[0], 5)] == ["b"]
    plain.drop("p")
    assert memory.query("p", data[1], 5) == []


def test_large_partitions_stay_with_chroma(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror_module, "PARTITION_MAX", 5)
    store = memory_store(tmp_path / "c")
    data = vectors(8)
    store.upsert("big", [f"e{i}" for i in range(6)], data[:6])
    assert store.query("big", data[0], 1)[0][0] == "e0"
    assert not copied(store, "big")
    store.upsert("grows", ["a", "b"], data[:2])
    assert store.query("grows", data[1], 1)[0][0] == "b" and copied(store, "grows")
    store.upsert("grows", [f"g{i}" for i in range(4)], data[4:8])  # now 6: past the cap
    assert not copied(store, "grows")
    assert store.query("grows", data[7], 1)[0][0] == "g3"  # Chroma answers, still right
    store.drop("grows")  # dropped: copied again at its next query
    store.upsert("grows", ["c"], data[2:3])
    assert store.query("grows", data[2], 1)[0][0] == "c" and copied(store, "grows")


def test_the_budget_bounds_the_vectors_held(tmp_path: Path) -> None:
    store = memory_store(tmp_path / "c", budget=5)
    data = vectors(8)
    store.upsert("one", ["a", "b", "c"], data[:3])
    store.upsert("two", ["d", "e", "f"], data[3:6])
    assert store.query("one", data[0], 1)[0][0] == "a" and copied(store, "one")
    assert store.query("two", data[4], 1)[0][0] == "e"  # 3 more do not fit: Chroma answers
    assert not copied(store, "two")
    assert store._mirror is not None and store._mirror.held == 3
    store.upsert("one", ["g", "h", "i"], data[5:8])  # 6 > 5: handed back to Chroma
    assert not copied(store, "one") and store._mirror.held == 0
    assert store.query("one", data[7], 1)[0][0] == "i"


def test_a_failed_copy_leaves_chroma_answering_and_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    mirror = VectorMirror(100, spawn=lambda task: task(), clock=lambda: now[0])
    calls: list[int] = []

    def failing(limit: int) -> Any:
        calls.append(limit)
        raise RuntimeError("disk I/O error")

    probe = vectors(1)[0]
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        assert mirror.query("p", probe, 3, failing) is None
    assert "Chroma answers it" in caplog.text and len(calls) == 1
    assert mirror.query("p", probe, 3, failing) is None and len(calls) == 1  # not yet
    now[0] += 31
    found = mirror.query("p", probe, 3, lambda limit: (["a"], vectors(1)))
    assert found is not None and found[0][0] == "a" and mirror.held == 1


def test_a_chroma_server_is_never_copied() -> None:
    """Several processes write a Chroma server: a copy in one of them could go stale."""
    store = ChromaVectorStore(url="http://127.0.0.1:9", memory_vectors=50_000)
    assert store._mirror is None


def test_copy_stays_exact_under_concurrent_writes(tmp_path: Path) -> None:
    """A writer upserts and deletes while lookups start the background copy: once both stop,
    the copy holds exactly Chroma's ids and vectors."""
    store = memory_store(tmp_path / "c", copy_in_background=True)
    data = vectors(300, seed=3)
    ids = [f"e{i}" for i in range(300)]
    store.upsert("p", ids[:100], data[:100])
    stop = threading.Event()

    def writer() -> None:
        rng = random.Random(5)
        while not stop.is_set():
            picks = rng.sample(range(300), 5)
            if rng.random() < 0.6:
                store.upsert("p", [ids[i] for i in picks], data[picks])
            else:
                store.delete("p", [ids[i] for i in picks])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            store.query("p", data[0], 3)
    finally:
        stop.set()
        thread.join()
    for _ in range(200):  # the copy runs on its own thread
        if copied(store, "p"):
            break
        time.sleep(0.01)
    assert copied(store, "p")
    in_chroma = set(store.ids("p"))
    in_memory = store.query_vectors("p", data[0], 1_000)
    assert {i for i, _, _ in in_memory} == in_chroma
    for key, _, vec in in_memory:  # Chroma may give back a float32 a last bit apart
        np.testing.assert_allclose(vec, data[int(key[1:])], atol=1e-6)


def test_a_cache_answers_from_memory_after_the_copy(
    make_cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: once a partition is copied, a semantic hit needs no Chroma query."""
    cache: Cache = make_cache()
    questions = [f"how do I reset the password of account number {i}" for i in range(20)]
    cache.insert_many([(Request(query=q), {"answer": i}) for i, q in enumerate(questions)])
    probe = Request(query="How do I reset the password of account number 7 ?")
    first = cache.lookup(probe)
    assert first is not None and first.answer == {"answer": 7}
    store = cache._vectors
    assert isinstance(store, ChromaVectorStore)
    partition = probe.partition.id
    for _ in range(200):
        if copied(store, partition):
            break
        time.sleep(0.01)
    assert copied(store, partition)

    def no_chroma(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Chroma was queried")

    monkeypatch.setattr(store, "_get", no_chroma)
    again = cache.lookup(Request(query="how do I reset the password of account number 7 ??"))
    assert again is not None and again.answer == {"answer": 7} and not again.exact


def test_vectors_in_memory_0_asks_chroma(make_cache: Any) -> None:
    cache: Cache = make_cache(vectors_in_memory=0)
    cache.insert(Request(query="what is the refund window"), "30 days")
    assert cache.lookup(Request(query="What is the refund window ?")) is not None
    store = cache._vectors
    assert isinstance(store, ChromaVectorStore) and store._mirror is not None
    assert store._mirror.held == 0 and not store._mirror.copied(Request(query="x").partition.id)


# ---- review findings: each of these left the copy different from Chroma --------------------
def test_a_copy_made_after_another_store_dropped_and_refilled_sees_the_new_data(
    tmp_path: Path,
) -> None:
    """The copy opens the collection by name: this store's cached handle is of the dropped one."""
    mine = memory_store(tmp_path / "c")
    other = memory_store(tmp_path / "c")
    data = vectors(3)
    mine.upsert("p", ["x"], data[:1])  # caches mine's handle
    other.drop("p")
    other.upsert("p", ["y", "z"], data[1:])
    assert sorted(i for i, _ in mine.query("p", data[1], 5)) == ["y", "z"]
    assert copied(mine, "p")


def test_a_transient_error_opening_the_collection_is_no_empty_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = memory_store(tmp_path / "c")
    data = vectors(2)
    store.upsert("p", ["x", "y"], data)
    client = store._client
    real = client.get_collection
    failures = [RuntimeError("database is locked")]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(client, "get_collection", flaky)
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        assert store.query("p", data[1], 1)[0][0] == "y"  # Chroma answers
    assert not copied(store, "p") and "retried in" in caplog.text


def test_a_copy_read_while_another_store_drops_the_partition_is_discarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drop reaches the copy after Chroma's delete; a copy read before it is not kept."""
    reader = memory_store(tmp_path / "c", copy_in_background=True)
    dropper = memory_store(tmp_path / "c")
    data = vectors(3)
    dropper.upsert("p", ["old1", "old2"], data[:2])
    started: list[threading.Thread] = []

    def spawn_and_finish(task: Any) -> None:  # the copy runs to its end inside the delete
        thread = threading.Thread(target=task)
        thread.start()
        thread.join()
        started.append(thread)

    assert reader._mirror is not None
    monkeypatch.setattr(reader._mirror, "_spawn", spawn_and_finish)
    client = dropper._client
    real_delete = client.delete_collection

    def delete_after_a_copy(name: str) -> None:
        reader.query("p", data[0], 1)  # the first query copies the partition now
        real_delete(name)

    monkeypatch.setattr(client, "delete_collection", delete_after_a_copy)
    dropper.drop("p")
    assert started, "the copy ran inside the delete"
    dropper.upsert("p", ["new"], data[2:])
    found = [i for i, _ in reader.query("p", data[0], 5)]
    assert found == ["new"]


def test_a_failing_replay_hands_the_partition_to_chroma() -> None:
    mirror = VectorMirror(100, spawn=lambda task: task())

    def read_with_a_bad_write(limit: int) -> Any:
        mirror.upserted("p", ["odd"], np.ones((1, DIM // 2), np.float32))  # another dimension
        return ["a"], vectors(1)

    assert mirror.query("p", vectors(1)[0], 3, read_with_a_bad_write) is None
    assert not mirror.copied("p") and mirror.held == 0
    mirror.upserted("p", ["b"], vectors(1))  # not journaled forever: the partition is Chroma's
    assert mirror._parts["p"] == "off"


def test_one_vector_given_flat_reaches_the_copy(tmp_path: Path) -> None:
    store = memory_store(tmp_path / "c")
    data = vectors(2)
    store.upsert("p", ["a"], data[:1])
    assert store.query("p", data[0], 1)[0][0] == "a" and copied(store, "p")
    store.upsert("p", ["b"], data[1])  # a 1-D vector for one id, as Chroma accepts it
    assert store.query("p", data[1], 1)[0][0] == "b" and copied(store, "p")
    with pytest.raises(Exception, match="2 ids"):
        store.upsert("p", ["c", "d"], data[0])
    assert sorted(store.ids("p")) == ["a", "b"]


def test_closing_a_store_waits_for_its_write_to_reach_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = memory_store(tmp_path / "c")
    writer = memory_store(tmp_path / "c")
    data = vectors(2)
    reader.upsert("p", ["x"], data[:1])
    assert reader.query("p", data[0], 1)[0][0] == "x" and copied(reader, "p")
    handle = writer._get("p", create=True)
    in_write, go_on = threading.Event(), threading.Event()
    real_upsert = handle.upsert

    def slow_upsert(**args: Any) -> None:
        in_write.set()
        go_on.wait(timeout=2)
        real_upsert(**args)

    monkeypatch.setattr(handle, "upsert", slow_upsert)
    writing = threading.Thread(target=writer.upsert, args=("p", ["y"], data[1:]))
    writing.start()
    assert in_write.wait(timeout=5)
    closing = threading.Thread(target=writer.close)
    closing.start()
    time.sleep(0.05)
    go_on.set()
    writing.join()
    closing.join()
    assert sorted(i for i, _ in reader.query("p", data[1], 5)) == ["x", "y"]


def test_a_cache_that_fails_to_open_leaves_the_copy_to_the_others(
    make_cache: Any, tmp_path: Path
) -> None:
    from modelcache import CacheConfig, FakeEmbedder, IncompatibleCacheError
    from modelcache.vectors import chroma as chroma_module

    cache: Cache = make_cache()
    cache.insert(Request(query="what is the refund window"), "30 days")
    key = str((tmp_path / "cache" / "chroma").resolve())
    assert chroma_module._mirrors[key][1] == 1
    with pytest.raises(IncompatibleCacheError):
        Cache(CacheConfig(path=str(tmp_path / "cache")), embedder=FakeEmbedder(7))
    assert chroma_module._mirrors[key][1] == 1
    cache.close()
    mirror, users = chroma_module._mirrors[key]
    assert users == 0 and mirror.held == 0  # emptied, kept for writes still under way


# ---- the snapshot: writes touch their own rows, never the rest of the partition -------------
def test_deletes_and_replacements_do_not_copy_the_partition() -> None:
    """A delete marks rows dead and an overwrite appends: the matrix buffer is shared until
    dead rows pass a quarter, then compacted."""
    snapshot = mirror_module._Snapshot.build([f"e{i}" for i in range(400)], vectors(400))
    thinned = snapshot.deleted(["e3", "e7"])
    assert np.shares_memory(thinned.matrix, snapshot.matrix)
    assert thinned.live == 398 and thinned.size == 400
    replaced = thinned.upserted(["e9"], vectors(1, seed=9))
    assert replaced.live == 398 and replaced.size == 401
    found = {i for i, _, _ in replaced.query(vectors(1, seed=9)[0], 1_000)}
    assert len(found) == 398 and not {"e3", "e7"} & found
    assert replaced.query(vectors(1, seed=9)[0], 1)[0][0] == "e9"
    compacted = replaced.deleted([f"e{i}" for i in range(100, 210)])  # 113 dead of 401
    assert compacted.size == compacted.live == 288 and compacted.alive is None


_MIRROR_OPS = st.lists(
    st.tuples(
        st.sampled_from(["upsert", "delete", "drop"]),
        st.lists(st.integers(0, 119), min_size=1, max_size=40),
        st.integers(0, 10_000),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, database=None)
@given(ops=_MIRROR_OPS)
def test_the_copy_answers_like_a_dictionary_under_any_writes(
    ops: list[tuple[str, list[int], int]],
) -> None:
    """Any mix of inserts, overwrites, deletes and drops (compactions included): a query with a
    large k returns exactly the live ids with their last vectors, best first."""
    mirror = VectorMirror(100_000, spawn=lambda task: task())
    model: dict[str, np.ndarray] = {}
    mirror.query("p", vectors(1)[0], 1, lambda limit: ([], np.zeros((0, 0), np.float32)))
    for kind, keys, seed in ops:
        ids = [f"k{n}" for n in keys]
        if kind == "upsert":
            batch = vectors(len(ids), seed=seed)
            mirror.upserted("p", ids, batch)
            model.update(zip(ids, batch, strict=True))
        elif kind == "delete":
            mirror.deleted("p", ids)
            for key in ids:
                model.pop(key, None)
        else:
            mirror.dropped("p")
            model.clear()
            mirror.query("p", vectors(1)[0], 1, lambda limit: ([], np.zeros((0, 0), np.float32)))
    probe = vectors(1, seed=12345)[0]
    found = mirror.query("p", probe, 1_000, lambda limit: None)
    assert found is not None
    assert {i for i, _, _ in found} == set(model)
    for key, sim, vec in found:
        np.testing.assert_array_equal(vec, model[key])
        assert sim == pytest.approx(float(vec @ probe), abs=1e-5)
    sims = [sim for _, sim, _ in found]
    assert sims == sorted(sims, reverse=True)


def test_an_overwrite_at_the_budget_keeps_the_partition_in_memory(tmp_path: Path) -> None:
    """Dead rows do not count against the budget: they are compacted away first."""
    store = memory_store(tmp_path / "c", budget=5)
    data = vectors(6)
    store.upsert("p", [f"e{i}" for i in range(5)], data[:5])
    assert store.query("p", data[0], 1)[0][0] == "e0" and copied(store, "p")
    store.upsert("p", ["e2"], data[5:6])  # the same id again
    assert copied(store, "p")
    assert store.query("p", data[5], 1)[0][0] == "e2"


def test_a_delete_through_a_stale_handle_reaches_the_new_collection(tmp_path: Path) -> None:
    """Another store dropped and refilled the partition: the delete reopens it by name."""
    mine = memory_store(tmp_path / "c")
    other = memory_store(tmp_path / "c")
    data = vectors(2)
    mine.upsert("p", ["x"], data[:1])  # caches mine's handle
    other.drop("p")
    other.upsert("p", ["x", "y"], data)
    assert sorted(i for i, _ in other.query("p", data[0], 5)) == ["x", "y"]
    mine.delete("p", ["x"])
    assert other.ids("p") == ["y"]
    assert [i for i, _ in other.query("p", data[0], 5)] == ["y"]


def test_a_closed_store_writes_nothing_and_a_store_opened_after_it_sees_every_write(
    tmp_path: Path,
) -> None:
    """The folder's last close stops its Chroma: a later write of the closed store is refused
    (it would open a Chroma nobody stops) instead of reaching a store opened afterwards
    through stale state; the cache waits for a batch being written before it closes."""
    old = memory_store(tmp_path / "c")
    data = vectors(2)
    old.upsert("p", ["a", "b"], data)
    old.close()
    new = memory_store(tmp_path / "c")
    assert sorted(i for i, _ in new.query("p", data[0], 5)) == ["a", "b"] and copied(new, "p")
    with pytest.raises(BackendError, match="closed"):
        old.delete("p", ["a"])
    new.delete("p", ["a"])
    assert [i for i, _ in new.query("p", data[0], 5)] == sorted(new.ids("p")) == ["b"]


def test_a_lookup_racing_the_last_close_makes_no_copy(tmp_path: Path) -> None:
    """A query that read its settings before the folder's last store closed must not copy the
    partition into a registry entry nobody keeps exact (another process may own it next)."""
    store = memory_store(tmp_path / "c")
    data = vectors(2)
    store.upsert("p", ["a", "b"], data)
    mirror = store._mirror
    assert mirror is not None
    store.close()  # the last store: the copy is emptied, the folder lock would be released
    reads: list[int] = []
    found = mirror.query("p", data[0], 5, lambda limit: reads.append(limit) or None)
    assert found is None and reads == [] and mirror.held == 0
    reopened = memory_store(tmp_path / "c")  # a store opened later copies again
    assert [i for i, _ in reopened.query("p", data[0], 1)] == ["a"] and copied(reopened, "p")
