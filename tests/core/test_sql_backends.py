"""The same core behaviour on SQLite, MariaDB, PostgreSQL and OceanBase seekdb (Chroma stays in
tmp_path).

MariaDB and PostgreSQL tests use a throwaway database each and skip when the service is absent
(fail instead under MODELCACHE_REQUIRE_SERVICES=1, as in CI). seekdb, OceanBase's engine in
MySQL mode, is a server the session starts from the pylibseekdb wheel (no service needed).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from modelcache import (
    Cache,
    ConfigError,
    FakeEmbedder,
    IncompatibleCacheError,
    Message,
    Request,
    Scope,
)

Q = "How do I reset my password?"
PARAPHRASE = "How do I reset my password please?"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("mariadb", marks=pytest.mark.mariadb),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("seekdb", marks=pytest.mark.seekdb),
    ]
)
def sql_url(request: pytest.FixtureRequest) -> str | None:
    """None (embedded SQLite) or the URL of a fresh MariaDB / PostgreSQL / seekdb database."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def db_cache(
    sql_url: str | None, make_cache: Callable[..., Cache], tmp_path: Path
) -> Callable[..., Cache]:
    """Factory of caches on the backend under test (closed before the database is dropped)."""

    def factory(**fields: Any) -> Cache:
        if sql_url is not None:
            fields.setdefault("sql_url", sql_url)
        return make_cache(tmp_path / "store", **fields)

    return factory


def rq(text: str = Q, **scope: Any) -> Request:
    """A single-turn request."""
    return Request.from_text(text, **scope)


def test_core_behaviour(db_cache: Callable[..., Cache]) -> None:
    cache = db_cache()
    ids = cache.insert_many(
        [
            (rq(), {"answer": "forgot password link"}),
            (rq(Q, tenant="other"), "other tenant"),
            (rq("What is the capital of France?", model="m2"), "Paris"),
            (Request("explain more", history=(Message("user", "What is tax law?"),)), "tax"),
        ]
    )
    hit = cache.lookup(rq())
    assert hit is not None and hit.exact and hit.answer == {"answer": "forgot password link"}
    hit = cache.lookup(rq(PARAPHRASE))
    assert hit is not None and hit.kind == "semantic" and hit.entry_id == ids[0]
    other = cache.lookup(rq(PARAPHRASE, tenant="other"))
    assert other is not None and other.answer == "other tenant"
    assert cache.lookup(rq(PARAPHRASE, tenant="third")) is None
    assert cache.lookup(rq(Q, model="m2")) is None
    assert cache.lookup(Request("explain more", history=(Message("user", "What is tax law?"),)))

    cache.insert(rq(), "replaced")
    assert cache.stats()["entries"] == 4
    assert cache.lookup(rq()).answer == "replaced"  # type: ignore[union-attr]

    assert cache.remove([ids[0], "missing"]) == 1
    assert cache.lookup(rq()) is None and cache.lookup(rq(PARAPHRASE)) is None
    assert cache.clear(tenant="other") == 1
    assert cache.lookup(rq(Q, tenant="other")) is None
    assert cache.lookup(rq("What is the capital of France?", model="m2")) is not None
    assert cache.check().ok
    assert cache.clear() == 2
    assert cache.stats()["entries"] == 0
    assert cache.check().ok


def test_reopen_finds_entries_and_checks_the_embedder(db_cache: Callable[..., Cache]) -> None:
    first = db_cache()
    first.insert_many([(rq(), "pw"), (rq("What is the capital of France?"), "Paris")])
    first.lookup(rq())
    first.close()
    second = db_cache(embedder=FakeEmbedder())
    stats = second.stats()
    assert stats["entries"] == 2
    assert sum(p.get("stored_hits", p.get("hits", 0)) for p in stats["partitions"]) == 1
    assert second.lookup(rq()) is not None
    hit = second.lookup(rq(PARAPHRASE))
    assert hit is not None and hit.answer == "pw"
    with pytest.raises(IncompatibleCacheError):
        db_cache(embedder=FakeEmbedder(64))


def test_clear_matches_fields_exactly(db_cache: Callable[..., Cache]) -> None:
    """MySQL/MariaDB compare case-, accent- and trailing-space-insensitively by default."""
    cache = db_cache()
    tenants = ["acme", "ACME", "acme ", "acmé"]
    cache.insert_many([(rq(Q, tenant=t), t) for t in tenants])
    cache.insert_many(
        [
            (rq(Q, tenant="acme", model="GPT-4o"), "upper model"),
            (rq(Q, tenant="x", params={"style": "X"}), "upper param"),
            (rq(Q, tenant="x", params={"style": "x"}), "lower param"),
        ]
    )
    assert cache.clear(tenant="acme", model="default") == 1
    for t in tenants[1:]:
        hit = cache.lookup(rq(Q, tenant=t))
        assert hit is not None and hit.answer == t, f"tenant {t!r} was cleared"
    assert cache.clear(model="gpt-4o") == 0
    assert cache.lookup(rq(Q, tenant="acme", model="GPT-4o")) is not None
    assert cache.clear(tenant="x", params={"style": "x"}) == 1
    assert cache.lookup(rq(Q, tenant="x", params={"style": "X"})) is not None
    assert cache.check().ok


def test_large_and_unicode_values(db_cache: Callable[..., Cache]) -> None:
    cache = db_cache()
    big = {"text": "λ😀" * 50_000, "list": list(range(1000))}  # > 64 KiB, 4-byte characters
    query = "如何重置我的密码? 😀 naïve café"
    cache.insert(rq(query, tenant="tenant-ü", model="模型"), big, metadata={"k": "v😀"})
    hit = cache.lookup(rq(query, tenant="tenant-ü", model="模型"))
    assert hit is not None and hit.answer == big and hit.metadata == {"k": "v😀"}
    assert hit.matched_query == query


def test_ttl_on_the_backend(db_cache: Callable[..., Cache], clock: Any) -> None:
    cache = db_cache()
    cache.insert(rq(), "short", ttl=5)
    assert cache.lookup(rq()) is not None
    clock.advance(6)
    assert cache.lookup(rq()) is None
    assert cache.lookup(rq(PARAPHRASE)) is None


def _stored(cache: Cache, request: Request) -> tuple[float | None, int, float]:
    """(expires_at, hit_count, last_hit_at) of a request's entry, as stored."""
    row = cache._sql.get_many([request.exact_key], request.partition.id)[request.exact_key]
    return row.expires_at, row.hit_count, row.last_hit_at


def test_a_hit_on_a_replaced_entry_leaves_the_new_one_alone(
    db_cache: Callable[..., Cache], clock: Any
) -> None:
    """A hit noted on an entry, flushed after the entry was stored again, neither renews the
    new entry with the old entry's TTL nor gives an entry stored without a TTL an expiry."""
    cache = db_cache(sliding_ttl=True)
    short, endless = rq(), rq("What is the capital of France?")
    cache.insert(short, "old", ttl=3600)
    cache.insert(endless, "old", ttl=50)
    clock.advance(1)
    assert cache.lookup(short) is not None and cache.lookup(endless) is not None  # noted
    clock.advance(1)
    cache.insert_many([(short, "short-lived")], ttl=5)
    cache.insert(endless, "kept for good")  # no TTL: no ttl_seconds either
    cache.flush()
    assert _stored(cache, short) == (clock() + 5, 0, clock())
    assert _stored(cache, endless) == (None, 0, clock())
    clock.advance(60)
    assert cache.lookup(short) is None, "served past the TTL it was stored with"
    hit = cache.lookup(endless)
    assert hit is not None and hit.answer == "kept for good"


def test_a_sliding_ttl_renews_from_each_row_s_own_ttl(
    db_cache: Callable[..., Cache], clock: Any
) -> None:
    """Hits renew a row by its own TTL, a row without one never expires, and hits flushed late
    (another process's, older) count but move neither the last hit nor the expiry back."""
    cache = db_cache(sliding_ttl=True)
    short, endless = rq(), rq("What is the capital of France?")
    cache.insert(short, "a", ttl=10)
    cache.insert(endless, "b")
    start = clock()
    clock.advance(8)
    assert cache.lookup(short) is not None and cache.lookup(endless) is not None
    cache.flush()
    assert _stored(cache, short) == (start + 18, 1, start + 8)
    assert _stored(cache, endless) == (None, 1, start + 8)
    late = {short.exact_key: (2, start + 3), endless.exact_key: (1, start + 3)}
    cache._sql.record_hits(late, renew_ttl=True)
    assert _stored(cache, short) == (start + 18, 3, start + 8)
    assert _stored(cache, endless) == (None, 2, start + 8)
    clock.advance(9)
    assert cache.lookup(short) is not None, "renewed at the hit, by its own 10 s"
    clock.advance(10)
    assert cache.lookup(short) is None


def _f32(values: Any) -> str:
    """Base64 of float32 values, as the store encodes vectors."""
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def test_a_corrupt_context_vector_fails_no_lookup_of_the_others(
    db_cache: Callable[..., Cache], caplog: pytest.LogCaptureFixture
) -> None:
    """A recalled row whose context vector is corrupt is left out of the semantic lookup, with
    a warning naming it (and no user text): its neighbours still hit, it is never served by
    meaning, and its exact key still answers."""
    cache = db_cache()
    history = (Message("user", "Tell me about my bank account."), Message("assistant", "Sure."))
    follow = Request("How do I reset my password now?", history=history)
    reworded = Request("How do I reset my password now please?", history=history)
    good = cache.insert(rq(), "answer A")
    bad = cache.insert(follow, "answer B")
    hit = cache.lookup(reworded)
    assert hit is not None and hit.entry_id == bad and not hit.exact
    dimension = cache.embedder.dimension
    unit = np.zeros(dimension)
    unit[0] = 1.0
    corrupt = {
        "not base64": "%%%corrupt%%%",
        "empty": "",
        "wrong length": _f32(np.ones(7) / np.sqrt(7)),
        "one value short": _f32(unit[:-1]),
        "not finite": _f32(np.full(dimension, np.nan)),
        "longer than a unit vector": _f32(2 * unit),
    }
    for label, value in corrupt.items():
        with cache._sql._engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE modelcache_entry SET context_vector = :v WHERE id = :i"),
                {"v": value, "i": bad},
            )
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="modelcache"):
            hit = cache.lookup(rq(PARAPHRASE))
            assert hit is not None and hit.entry_id == good, label
            hit = cache.lookup(reworded)
            assert hit is None or hit.entry_id != bad, label
            hit = cache.lookup(follow)
            assert hit is not None and hit.exact and hit.answer == "answer B", label
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warnings and all(bad in m for m in warnings), label
        assert not any("password" in m or "bank" in m for m in warnings), label
    assert cache.stats()["errors"] == 0


def _run_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` in ``count`` threads; re-raise the first failure."""
    failures: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # re-raised in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    if failures:
        raise failures[0]


def test_concurrent_writers_of_distinct_keys(db_cache: Callable[..., Cache]) -> None:
    # six threads on a shared 2-core machine: a lookup may wait on the writers longer than the
    # default deadline, which would count a (correct) miss as an error here
    cache = db_cache(lookup_timeout=None)

    def work(worker: int) -> None:
        for i in range(15):
            cache.insert(rq(f"worker {worker} question {i}"), i)
            cache.lookup(rq(f"worker {worker} question {i} please"))

    _run_threads(6, work)
    assert cache.stats()["entries"] == 6 * 15
    assert cache.stats()["errors"] == 0
    assert cache.check().ok


def test_concurrent_inserts_of_the_same_key(db_cache: Callable[..., Cache]) -> None:
    """Concurrent misses on one prompt all insert its answer at once (a thundering herd)."""
    cache = db_cache()
    barrier = threading.Barrier(6)

    def work(worker: int) -> None:
        for i in range(10):
            barrier.wait(timeout=30)
            cache.insert(rq(f"shared question {i}"), {"w": worker, "i": i})

    _run_threads(6, work)
    assert cache.stats()["entries"] == 10
    for i in range(10):
        hit = cache.lookup(rq(f"shared question {i}"))
        assert hit is not None and hit.answer["i"] == i
    assert cache.check().ok


def test_maintenance_statements_on_the_backend(db_cache: Callable[..., Cache], clock: Any) -> None:
    """Eviction order, expiry, the query log, export and the partition cap: each a statement
    of the store, run here on every backend."""
    cache = db_cache(
        query_log=True, eviction="fifo", max_entries_per_partition=3, max_partitions_per_tenant=2
    )
    for i in range(4):
        cache.insert(rq(f"question number {i} about billing?"), f"answer {i}")
        clock.advance(1)
    exported = list(cache.export())
    assert sorted(e["answer"] for e in exported) == ["answer 2", "answer 3"], "FIFO: oldest gone"
    assert cache.stats()["evictions"] == 2
    cache.insert(rq("a short-lived question?"), "soon gone", ttl=5)
    clock.advance(6)
    assert cache.purge_expired() == 1
    assert cache.lookup(rq("question number 3 about billing?")) is not None
    cache.flush()
    log = list(cache.export_log())
    assert [r["op"] for r in log] == ["insert"] * 5 + ["lookup"]
    assert log[-1]["hit"] and log[-1]["answer_tokens"] == len('"answer 3"') // 4
    assert cache._sql.purge_log(clock() + 1) == 6
    assert list(cache.export_log()) == []
    cache.register(Scope(model="second"))
    with pytest.raises(ConfigError, match="max_partitions_per_tenant"):
        cache.register(Scope(model="third"))


def test_chunk_vector_statements_on_the_backend(db_cache: Callable[..., Cache]) -> None:
    """Stored chunk vectors: read by partition and digest, replaced on a second write, trimmed
    to the newest, and dropped with their partition."""
    cache = db_cache()
    store = cache._sql
    a = {f"{i:032x}": f"vector-a-{i}" for i in range(5)}
    store.put_chunk_vectors("p" * 32, a, now=1.0)
    store.put_chunk_vectors("q" * 32, {"0" * 32: "vector-q"}, now=2.0)
    assert store.chunk_vectors("p" * 32, [*a, "f" * 32]) == a
    assert store.chunk_vectors("q" * 32, list(a)) == {"0" * 32: "vector-q"}  # its own only
    store.put_chunk_vectors("p" * 32, {"0" * 32: "replaced"}, now=3.0)
    assert store.chunk_vectors("p" * 32, ["0" * 32]) == {"0" * 32: "replaced"}
    assert store.trim_chunk_vectors(2) == 4  # the four written at 1.0 go
    assert store.chunk_vectors("p" * 32, list(a)) == {"0" * 32: "replaced"}
    assert store.trim_chunk_vectors(5) == 0  # fewer than 5 are stored
    store.delete_partitions(["p" * 32])
    assert store.chunk_vectors("p" * 32, list(a)) == {}
    assert store.chunk_vectors("q" * 32, ["0" * 32]) == {"0" * 32: "vector-q"}
    store.put_chunk_vectors("r" * 32, {f"{i:032x}": "v" for i in range(6)}, now=4.0)
    assert store.trim_chunk_vectors(4) == 3  # one load's rows share a time: still cut to 4
    assert store.chunk_vectors("r" * 32, [f"{i:032x}" for i in range(6)]) == {
        f"{i:032x}": "v" for i in range(2, 6)
    }  # ties broken by digest, the highest kept
    assert store.chunk_vectors("q" * 32, ["0" * 32]) == {}  # older than all of them
    store.delete_all()
    assert store.chunk_vectors("r" * 32, [f"{5:032x}"]) == {}


def test_partition_cap_counts_a_tenant_by_its_exact_name(db_cache: Callable[..., Cache]) -> None:
    """MariaDB's default collation makes "ACME " equal "acme": another tenant's partitions must
    neither count against this one's cap nor show in its error."""
    cache = db_cache(max_partitions_per_tenant=2)
    for model in ("m1", "m2"):
        cache.insert(rq(tenant="ACME ", model=model), "theirs")
    for tenant in ("acme", "Acme", "ACMÉ"):
        cache.insert(rq(tenant=tenant, model="m1"), "ours")
        cache.insert(rq(tenant=tenant, model="m2"), "ours")
    with pytest.raises(ConfigError, match="already has 2 partitions"):
        cache.insert(rq(tenant="acme", model="m3"), "one too many")


def test_export_leaves_out_expired_entries(db_cache: Callable[..., Cache], clock: Any) -> None:
    cache = db_cache()
    cache.insert(rq("short lived"), "a", ttl=5)
    cache.insert(rq("long lived"), "b", ttl=500)
    cache.insert(rq("endless"), "c")
    clock.advance(10)
    store = cache._sql
    assert {r["query"] for r in store.export(now=clock())} == {"long lived", "endless"}


@pytest.mark.parametrize("port", ["abc", "99999", "0"])
def test_a_bad_port_in_sql_url_is_a_config_error_without_the_password(
    make_cache: Callable[..., Cache], tmp_path: Path, port: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_cache(tmp_path, sql_url=f"mysql+pymysql://user:s3cret@db.example:{port}/modelcache")
    assert "invalid sql_url" in str(info.value) and "s3cret" not in str(info.value)
