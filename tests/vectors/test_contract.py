"""The VectorStore contract, written once and run on every store (Chroma, Milvus by partition
key, Milvus by collection): what the engine relies on, and what a new store must pass."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcache.vectors import VectorStore

DIM = 8


def unit(*values: float) -> np.ndarray:
    """A unit vector of dimension DIM from its first coordinates."""
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def basis(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    return v


def stack(*vectors: np.ndarray) -> np.ndarray:
    return np.stack(vectors).astype(np.float32)


def test_query_returns_nearest_first_with_cosine_similarity(store: VectorStore) -> None:
    store.create("p1")
    store.upsert("p1", ["x", "near", "ortho", "opposite"],
                 stack(unit(1), unit(1, 0.2), unit(0, 1), unit(-1)))  # fmt: skip
    found = store.query("p1", unit(1), k=4)
    assert [i for i, _ in found] == ["x", "near", "ortho", "opposite"]
    sims = dict(found)
    assert sims["x"] == pytest.approx(1.0, abs=1e-4) and sims["x"] <= 1.0
    assert sims["near"] == pytest.approx(float(unit(1) @ unit(1, 0.2)), abs=1e-4)
    assert sims["ortho"] == pytest.approx(0.0, abs=1e-4)
    assert sims["opposite"] == pytest.approx(-1.0, abs=1e-4) and sims["opposite"] >= -1.0


def test_k_limits_and_exceeds(store: VectorStore) -> None:
    store.upsert("p1", [f"v{i}" for i in range(6)], stack(*(unit(1, i) for i in range(6))))
    assert [i for i, _ in store.query("p1", unit(1), k=2)] == ["v0", "v1"]
    assert len(store.query("p1", unit(1), k=50)) == 6


def test_missing_and_empty_partitions_answer_nothing(store: VectorStore) -> None:
    assert store.query("never-made", unit(1), k=3) == []
    assert store.ids("never-made") == []
    store.create("empty")
    store.create("empty")  # idempotent
    assert store.query("empty", unit(1), k=3) == []
    assert store.ids("empty") == []
    store.delete("never-made", ["a"])  # ignored
    store.drop("never-made")  # ignored
    assert store.query_vectors("never-made", unit(1), k=3) == []


def test_upsert_replaces_and_ids_count(store: VectorStore) -> None:
    store.upsert("p1", ["a", "b"], stack(unit(1), unit(0, 1)))
    store.upsert("p1", ["a"], stack(unit(0, 0, 1)))  # same id: replaced, not added
    assert sorted(store.ids("p1")) == ["a", "b"]
    best, sim = store.query("p1", unit(0, 0, 1), k=1)[0]
    assert best == "a" and sim == pytest.approx(1.0, abs=1e-4)
    store.upsert("p1", [], np.zeros((0, DIM), dtype=np.float32))  # nothing to do
    assert len(store.ids("p1")) == 2


def test_delete_removes_only_the_given_ids(store: VectorStore) -> None:
    store.upsert("p1", ["a", "b", "c"], stack(unit(1), unit(1, 1), unit(0, 1)))
    store.upsert("p2", ["a"], stack(unit(1)))
    store.delete("p1", ["a", "unknown"])
    assert sorted(store.ids("p1")) == ["b", "c"]
    assert store.ids("p2") == ["a"], "the same id in another partition stays"
    assert "a" not in [i for i, _ in store.query("p1", unit(1), k=5)]
    store.delete("p1", [])


def test_drop_partition_keeps_the_others_and_allows_reuse(store: VectorStore) -> None:
    store.upsert("p1", ["a", "b"], stack(unit(1), unit(0, 1)))
    store.upsert("p2", ["c"], stack(unit(1)))
    assert sorted(store.collections()) == ["p1", "p2"]
    store.drop("p1")
    assert store.ids("p1") == [] and store.query("p1", unit(1), k=3) == []
    assert store.collections() == ["p2"]
    assert [i for i, _ in store.query("p2", unit(1), k=3)] == ["c"]
    store.create("p1")
    store.upsert("p1", ["z"], stack(unit(1)))
    assert store.ids("p1") == ["z"]


def test_query_vectors_returns_the_stored_vectors(store: VectorStore) -> None:
    stored = stack(unit(1), unit(1, 0.2), unit(0, 1))
    store.upsert("p1", ["a", "b", "c"], stored)
    store.upsert("p2", ["other"], stack(unit(1)))
    found = store.query_vectors("p1", unit(1), k=2)
    assert [i for i, _, _ in found] == ["a", "b"], "best first, one partition only"
    by_id = dict(zip(["a", "b", "c"], stored, strict=True))
    for entry_id, sim, vector in found:
        assert np.allclose(vector, by_id[entry_id], atol=1e-5)
        assert sim == pytest.approx(float(np.dot(unit(1), by_id[entry_id])), abs=1e-4)
    assert [(i, pytest.approx(s, abs=1e-6)) for i, s, _ in found] == store.query("p1", unit(1), k=2)


def test_dimension_mismatch_raises_and_keeps_the_data(store: VectorStore) -> None:
    store.upsert("p1", ["a"], stack(unit(1)))
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own type
        store.upsert("p1", ["b"], np.ones((1, DIM + 3), dtype=np.float32))
    with pytest.raises(Exception):  # noqa: B017 - the engine turns it into a logged miss
        store.query("p1", np.ones(DIM + 3, dtype=np.float32), k=1)
    assert store.ids("p1") == ["a"]
    assert store.query("p1", unit(1), k=1)[0][0] == "a"


UNICODE_IDS = [
    "é-accent",
    "中文键",
    "emoji-🙂",
    'quote"s',
    "back\\slash",
    "sp ace",
    "a/b",
    "x" * 200,
]


def test_unicode_ids_round_trip(store: VectorStore) -> None:
    vectors = stack(*(unit(1, i / 10) for i in range(len(UNICODE_IDS))))
    store.upsert("p1", UNICODE_IDS, vectors)
    assert sorted(store.ids("p1")) == sorted(UNICODE_IDS)
    assert {i for i, _ in store.query("p1", unit(1), k=20)} == set(UNICODE_IDS)
    assert {i for i, _, _ in store.query_vectors("p1", unit(1), k=20)} == set(UNICODE_IDS)
    store.delete("p1", UNICODE_IDS[:4])
    assert sorted(store.ids("p1")) == sorted(UNICODE_IDS[4:])


def test_ids_pages_through_large_partitions(store: VectorStore) -> None:
    n = 2_500  # more than one page of every backend's scan
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    ids = [f"e{i}" for i in range(n)]
    store.upsert("big", ids, vectors)
    assert sorted(store.ids("big")) == sorted(ids)
    store.delete("big", ids[:1_500])
    assert len(store.ids("big")) == 1_000


def test_data_survives_reopening(store_factory: Callable[[], VectorStore]) -> None:
    first = store_factory()
    first.upsert("p1", ["a"], stack(unit(1)))
    first.close()
    second = store_factory()
    assert second.ids("p1") == ["a"]
    assert second.query("p1", unit(1), k=1)[0][0] == "a"


def test_a_drop_by_another_client_is_survived(
    store_factory: Callable[[], VectorStore],
) -> None:
    """Another process clears a partition under a live store: at most one failed query (a
    logged miss in the engine), then an empty partition that accepts writes again."""
    mine, other = store_factory(), store_factory()
    mine.upsert("p1", ["x"], stack(unit(1)))
    assert mine.query("p1", unit(1), k=1)[0][0] == "x"
    other.drop("p1")
    with contextlib.suppress(Exception):
        mine.query("p1", unit(1), k=1)
    assert mine.query("p1", unit(1), k=1) == []
    assert mine.ids("p1") == []
    mine.upsert("p1", ["y"], stack(unit(1)))
    assert mine.ids("p1") == ["y"] and other.ids("p1") == ["y"]


def test_isolation_is_a_prefilter_on_top_k(store: VectorStore) -> None:
    """A crowded partition with closer vectors never pushes the home vector out of top-k."""
    store.upsert("home", ["home"], stack(unit(1, 0.5)))
    store.upsert(
        "crowd", [f"c{i}" for i in range(50)], stack(*(unit(1, i / 1000) for i in range(50)))
    )
    assert store.query("home", unit(1), k=1)[0][0] == "home"
    assert all(i.startswith("c") for i, _ in store.query("crowd", unit(1), k=10))


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), st.sampled_from("abc"), st.integers(0, 7), st.integers(0, 15)),
        st.tuples(st.just("delete"), st.sampled_from("abc"), st.integers(0, 7), st.just(0)),
        st.tuples(st.just("drop"), st.sampled_from("abc"), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=_OPS)
def test_isolation_property(store: VectorStore, ops: list[tuple[str, str, int, int]]) -> None:
    """Under any sequence of writes, each partition answers exactly its own ids (the same id
    in several partitions included), and a query with k >= size returns all of them."""
    for partition in store.collections():  # hypothesis reuses the store across examples
        store.drop(partition)
    model: dict[str, set[str]] = {p: set() for p in "abc"}
    for op, partition, entry, direction in ops:
        name = f"part-{partition}"
        if op == "upsert":
            store.upsert(name, [f"id{entry}"], stack(basis(direction) + 0.1 * basis(entry)))
            model[partition].add(f"id{entry}")
        elif op == "delete":
            store.delete(name, [f"id{entry}"])
            model[partition].discard(f"id{entry}")
        else:
            store.drop(name)
            model[partition].clear()
    for partition, expected in model.items():
        name = f"part-{partition}"
        assert set(store.ids(name)) == expected
        for probe in range(3):
            found = [i for i, _ in store.query(name, basis(probe), k=20)]
            assert sorted(found) == sorted(expected)
    # a partition with vectors is listed; one emptied by deletes may be (Chroma keeps it)
    listed = set(store.collections())
    assert (
        {f"part-{p}" for p, ids in model.items() if ids} <= listed <= {f"part-{p}" for p in model}
    )
