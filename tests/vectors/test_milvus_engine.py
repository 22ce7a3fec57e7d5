"""The engine on Milvus (milvus-lite): selected by config, isolated, consistent with SQL, and
failing open when the Milvus server goes away."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from process_support import free_port, stop, wait_ready
from vector_support import HangingProxy, drop_milvus_collections

from modelcache import BackendError, Cache, CacheConfig, ConfigError, FakeEmbedder, Request
from modelcache.redact import mask_url
from modelcache.vectors import MilvusVectorStore
from modelcache.vectors.milvus import milvus_uri

Q = "How do I reset my password?"
PARAPHRASE = "How do I reset my password please?"


def rq(text: str = Q, **scope: Any) -> Request:
    return Request.from_text(text, **scope)


@pytest.fixture(params=[None, True], ids=["default", "partition-key"])
def milvus_cache(
    tmp_path: Path,
    milvus_lite_file: str,
    fake_embedder: FakeEmbedder,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., Cache]]:
    """Factory of caches whose vectors live in the session's milvus-lite file, with the
    default mapping (a collection per partition on milvus-lite) and with a partition key."""
    made: list[Cache] = []
    name = f"e_{secrets.token_hex(4)}"
    mapping = request.param

    def factory(clock_: Callable[[], float] | None = None, **fields: Any) -> Cache:
        fields = {
            "milvus_collection": name,
            "vector_url": milvus_lite_file,
            "milvus_partition_key": mapping,
            "lookup_timeout": None,  # milvus-lite's first searches can exceed the default deadline
            **fields,
        }
        config = CacheConfig(path=str(tmp_path / "cache"), **fields)
        cache = Cache(config, embedder=fake_embedder, clock=clock_ or time.time)
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        cache.close()
    drop_milvus_collections(milvus_lite_file, name)


# ---- selection by configuration ---------------------------------------------------------------
def test_vector_url_selects_milvus_and_not_chroma(
    milvus_cache: Callable[..., Cache], tmp_path: Path
) -> None:
    cache = milvus_cache()
    assert isinstance(cache._vectors, MilvusVectorStore)
    if cache.config.milvus_partition_key is None:
        assert cache._vectors._partition_key is False, "milvus-lite: a collection per partition"
    cache.insert(rq(), "answer")
    hit = cache.lookup(rq(PARAPHRASE))
    assert hit is not None and hit.kind == "semantic" and hit.answer == "answer"
    assert not (tmp_path / "cache" / "chroma").exists(), "no Chroma folder was made"


def test_config_reads_milvus_settings_from_the_environment() -> None:
    config = CacheConfig.from_env(
        {
            "MODELCACHE_VECTOR_URL": "milvus://u:secret@db.example:19531/cachedb",
            "MODELCACHE_MILVUS_HNSW_M": "32",
            "MODELCACHE_MILVUS_PARTITION_KEY": "false",
        }
    )
    assert config.milvus_hnsw_m == 32 and config.milvus_partition_key is False
    assert milvus_uri(config.vector_url or "") == ("http://db.example:19531", "u:secret", "cachedb")


@pytest.mark.parametrize(
    "url, expected",
    [
        ("milvus://host", ("http://host:19530", "", "")),
        ("milvus+https://host:443", ("https://host:443", "", "")),
        ("http://10.0.0.1:19530/db1", ("http://10.0.0.1:19530", "", "db1")),
        ("data/vectors.db", ("data/vectors.db", "", "")),
        ("file:///srv/mc/vectors.db", ("/srv/mc/vectors.db", "", "")),
    ],
)
def test_milvus_urls(url: str, expected: tuple[str, str, str]) -> None:
    assert milvus_uri(url) == expected


def test_bad_urls_and_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unsupported vector_url"):
        milvus_uri("redis://host:6379")
    with pytest.raises(ConfigError, match="not both"):
        CacheConfig.create(vector_url="milvus://h", chroma_url="http://h:8000")
    with pytest.raises(ConfigError):
        CacheConfig.create(milvus_collection="bad-name")
    with pytest.raises(ConfigError) as err:
        milvus_uri("postgres://u:hunter2@h/db")
    assert "hunter2" not in str(err.value)
    assert mask_url("milvus://root:hunter2@h:19530") == "milvus://root:***@h:19530"


# ---- the engine's contract on Milvus --------------------------------------------------------
def test_isolation_remove_clear_and_check(milvus_cache: Callable[..., Cache]) -> None:
    cache = milvus_cache()
    home_id = cache.insert(rq(tenant="acme"), "home")
    cache.insert_many([(rq(tenant="globex"), "globex"), (rq(tenant="crowd", model="m"), "c")])
    for scope in ({"tenant": "initech"}, {"tenant": "acme", "env": "dev"}, {"model": "m"}):
        assert cache.lookup(rq(PARAPHRASE, **scope)) is None
    assert cache.lookup(rq(PARAPHRASE, tenant="acme")).answer == "home"  # type: ignore[union-attr]
    assert cache.lookup(rq(PARAPHRASE, tenant="globex")).answer == "globex"  # type: ignore[union-attr]
    assert cache.clear(tenant="globex") == 1
    assert cache.lookup(rq(PARAPHRASE, tenant="globex")) is None
    assert cache.remove([home_id]) == 1
    assert cache.lookup(rq(PARAPHRASE, tenant="acme")) is None
    assert cache.check().ok
    assert cache.clear() == 1
    assert cache.check().ok and cache._vectors.collections() == []


def test_isolation_is_a_prefilter_on_milvus(milvus_cache: Callable[..., Cache]) -> None:
    cache = milvus_cache(top_k=1, similarity_threshold=0.3)
    cache.insert(rq("How can one reset a forgotten password?"), "home")
    cache.insert_many(
        [(rq(f"How do I reset my password please? v{i}", tenant="crowd"), i) for i in range(40)]
    )
    hit = cache.lookup(rq(PARAPHRASE))
    assert hit is not None and hit.answer == "home"


def test_follow_ups_recall_only_their_own_conversation(milvus_cache: Callable[..., Cache]) -> None:
    """A follow-up is recalled by its query and context together (one vector per entry)."""
    cache = milvus_cache(top_k=1)

    def follow_up(reply: str) -> Request:
        return Request.from_messages(
            [
                {"role": "user", "content": "Tell me about taxes"},
                {"role": "assistant", "content": reply},
                {"role": "user", "content": "explain more"},
            ]
        )

    cache.insert(follow_up("Taxes fund public services."), "tax detail")
    cache.insert_many([(follow_up(f"Other reply {i}"), f"other {i}") for i in range(10)])
    hit = cache.lookup(follow_up("Taxes fund public services."))
    assert hit is not None and hit.answer == "tax detail"
    assert cache.lookup(follow_up("A reply never stored.")) is None


def test_check_reports_both_kinds_of_drift(
    milvus_cache: Callable[..., Cache], tmp_path: Path, clock: Any
) -> None:
    cache = milvus_cache(clock_=clock)
    kept = cache.insert(rq(), "kept")
    lost_vector = cache.insert(rq("What is write-ahead logging?"), "wal")
    lost_row = cache.insert(rq("What is a B-tree index?"), "btree")
    pid = rq().partition.id
    cache._vectors.delete(pid, [lost_vector])  # behind the engine's back
    with sqlite3.connect(tmp_path / "cache" / "modelcache.db") as conn:
        conn.execute("DELETE FROM modelcache_entry WHERE id = ?", (lost_row,))
    report = cache.check()
    assert (report.rows_without_vector, report.vectors_without_row) == ([lost_vector], [lost_row])
    assert kept not in report.rows_without_vector + report.vectors_without_row
    # a lookup that recalls the orphan ignores it; a minute later it is deleted
    hit = cache.lookup(rq("What is a B-tree index?"), threshold=-1.0)
    assert hit is None or hit.entry_id != lost_row
    clock.advance(61)
    cache.flush()
    assert lost_row not in cache._vectors.ids(pid)


def test_repair_makes_milvus_and_sql_agree(
    milvus_cache: Callable[..., Cache], tmp_path: Path
) -> None:
    """`Cache.repair` re-embeds rows whose vector is gone and drops vectors whose row is."""
    cache = milvus_cache()
    cache.insert(rq(), "kept")
    lost_vector = cache.insert(rq("What is write-ahead logging?"), "wal")
    lost_row = cache.insert(rq("What is a B-tree index?"), "btree")
    pid = rq().partition.id
    cache._vectors.delete(pid, [lost_vector])  # behind the engine's back
    with sqlite3.connect(tmp_path / "cache" / "modelcache.db") as conn:
        conn.execute("DELETE FROM modelcache_entry WHERE id = ?", (lost_row,))
    assert not cache.check().ok
    report = cache.repair()
    assert (report.reembedded, report.orphans_dropped, report.failed) == (1, 1, [])
    assert cache.check().ok
    hit = cache.lookup(rq("What is write-ahead logging please?"))
    assert hit is not None and hit.entry_id == lost_vector, "the re-embedded entry is recalled"


# ---- Milvus down: a separate milvus-lite server process that the test stops --------------------
def _start_server(data: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        assert proc.poll() is None, "milvus-lite server exited"
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("milvus-lite server did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=10)


def test_milvus_down_is_a_logged_miss_and_recovers(
    tmp_path: Path, fake_embedder: FakeEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("milvus_lite")
    port, data = free_port(), tmp_path / "milvus-server.db"
    server = _start_server(data, port)
    config = CacheConfig(
        path=str(tmp_path / "cache"),
        vector_url=f"milvus://127.0.0.1:{port}",
        milvus_timeout=2.0,
        lookup_timeout=None,  # the Milvus timeout alone bounds the lookup here
    )
    cache = Cache(config, embedder=fake_embedder)
    assert cache._vectors._partition_key is True, "a server: one collection, a partition key"
    try:
        cache.insert(rq(), "answer")
        assert cache.lookup(rq(PARAPHRASE)) is not None
        _stop(server)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="modelcache"):
            assert cache.lookup(rq(PARAPHRASE)) is None
        assert time.monotonic() - started < 15, "the timeout bounds a lookup"
        assert any("treated as a miss" in r.getMessage() for r in caplog.records)
        assert cache.stats()["errors"] == 1
        hit = cache.lookup(rq())
        assert hit is not None and hit.exact, "exact hits come from SQL alone"
        with pytest.raises(BackendError):
            cache.insert(rq("A new question while Milvus is down"), "x")
        server = _start_server(data, port)  # the same data back on the same port
        deadline = time.monotonic() + 20
        while cache.lookup(rq(PARAPHRASE)) is None:
            assert time.monotonic() < deadline, "the cache did not reconnect"
            time.sleep(0.5)
    finally:
        cache.close()
        if server.poll() is None:
            _stop(server)


def test_a_hung_milvus_costs_at_most_the_timeout(
    tmp_path: Path, fake_embedder: FakeEmbedder
) -> None:
    """A server that accepts but never answers: each lookup is a miss after milvus_timeout."""
    pytest.importorskip("milvus_lite")
    port = free_port()
    server = _start_server(tmp_path / "milvus-server.db", port)
    proxy = HangingProxy(port)
    config = CacheConfig(
        path=str(tmp_path / "cache"),
        vector_url=f"milvus://127.0.0.1:{proxy.port}",
        milvus_timeout=1.0,
        lookup_timeout=None,  # the Milvus timeout alone bounds the lookup here
    )
    cache = Cache(config, embedder=fake_embedder)
    try:
        cache.insert(rq(), "answer")
        assert cache.lookup(rq(PARAPHRASE)) is not None
        proxy.hang.set()
        for _ in range(2):
            started = time.monotonic()
            assert cache.lookup(rq(PARAPHRASE)) is None
            assert time.monotonic() - started < 5, "bounded by the timeout, not hung"
        assert cache.stats()["errors"] == 2
        with pytest.raises(BackendError):
            cache.insert(rq("A new question while Milvus hangs"), "x")
        proxy.hang.clear()
        assert cache.lookup(rq(PARAPHRASE)) is not None, "answers again once the server does"
    finally:
        cache.close()
        proxy.close()
        _stop(server)


# ---- `modelcache serve` on Milvus -------------------------------------------------------------
def test_serve_uses_milvus_from_the_environment(tmp_path: Path) -> None:
    import httpx

    port = free_port()
    vectors = tmp_path / "vectors.db"
    env = {k: v for k, v in os.environ.items() if k != "MODELCACHE_API_KEYS"}
    env["MODELCACHE_VECTOR_URL"] = str(vectors)
    env["MODELCACHE_LOOKUP_TIMEOUT"] = "10"  # milvus-lite's first search can exceed the default
    cmd = [sys.executable, "-m", "modelcache", "--path", str(tmp_path / "cache"), "--embedder"]
    cmd += ["fake", "serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/healthz", proc)
        scope = {"model": "m1"}
        turn = {"query": [{"role": "user", "content": Q}], "answer": "A"}
        insert = {"type": "insert", "scope": scope, "chat_info": [turn]}
        assert httpx.post(f"{url}/modelcache", json=insert, timeout=10).status_code == 200
        query = {"type": "query", "scope": scope,
                 "query": [{"role": "user", "content": PARAPHRASE}]}  # fmt: skip
        r = httpx.post(f"{url}/modelcache", json=query, timeout=10).json()
        assert r["cacheHit"] is True and r["answer"] == "A"
        assert vectors.exists() and not (tmp_path / "cache" / "chroma").exists()
    finally:
        stop(proc)
