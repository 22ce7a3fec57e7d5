"""Hung and dead databases (issue 13, items 1 and proof a): a TCP proxy cuts or blackholes
the link to MariaDB / PostgreSQL. Lookups must be misses within their deadline, writes must
fail fast with BackendError, readiness must say so, and the cache must recover on its own."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from reliability_support import FaultProxy

from modelcache import BackendError, Cache, CacheConfig, FakeEmbedder, Request

DEADLINE = 0.5
SQL_TIMEOUT = 1.5
CONNECT_TIMEOUT = 2.0
# a write may wait for a pooled connection's ping, then a fresh connection, then the call
WRITE_BOUND = SQL_TIMEOUT * 2 + CONNECT_TIMEOUT + 2.0


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    try:
        result: object = fn()
    except BackendError as exc:
        result = exc
    return result, time.monotonic() - started


def eventually(check: Callable[[], bool], within: float = 15.0) -> float:
    """Seconds until ``check()`` holds; fails the test past ``within``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            if check():
                return time.monotonic() - started
        except BackendError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the cache did not recover within {within}s")


def q(text: str) -> Request:
    return Request.from_text(text, model="m")


@pytest.mark.mariadb
@pytest.mark.postgres
def test_hung_and_dead_database_are_bounded_and_recovered(
    proxied: tuple[str, FaultProxy], tmp_path: Path
) -> None:
    url, proxy = proxied
    config = CacheConfig(
        path=str(tmp_path),
        sql_url=url,
        lookup_timeout=DEADLINE,
        sql_timeout=SQL_TIMEOUT,
        sql_connect_timeout=CONNECT_TIMEOUT,
    )
    with Cache(config, embedder=FakeEmbedder()) as cache:
        cache.insert(q("how do I reset my password"), "reset it")
        # the first calls open connections, which a loaded machine may stretch past 0.5 s
        eventually(lambda: cache.lookup(q("how do I reset my password")) is not None)
        assert cache.ready()["ready"]

        for fault in (proxy.blackhole, proxy.cut):
            fault()
            for text in ("how do I reset my password", "how can I reset my password please"):
                hit, took = timed(lambda text=text: cache.lookup(q(text)))
                assert hit is None and took < DEADLINE + 0.5, (fault.__name__, took)
            error, took = timed(lambda: cache.insert(q("a new question"), "x"))
            assert isinstance(error, BackendError), fault.__name__
            assert took < WRITE_BOUND, (fault.__name__, took)
            error, took = timed(lambda: cache.remove(["0" * 32]))
            assert isinstance(error, BackendError) and took < WRITE_BOUND, (fault.__name__, took)
            report, took = timed(lambda: cache.ready(timeout=0.5))
            assert isinstance(report, dict) and not report["ready"], report
            assert took < 1.0

            proxy.restore()  # the database is back: no restart, no manual step
            after = q(f"after {fault.__name__}")
            eventually(lambda: cache.lookup(q("how do I reset my password")) is not None)
            eventually(lambda after=after: bool(cache.insert(after, "y")))
            assert cache.lookup(after) is not None
            eventually(lambda: cache.ready()["ready"])
        assert cache.stats()["timeouts"] >= 2, "blackholed lookups are counted as timeouts"
        # the failed inserts wrote their vectors before failing: orphans, never lost rows
        assert not cache.check().rows_without_vector
        cache.repair()
        assert cache.check().ok


@pytest.mark.mariadb
@pytest.mark.postgres
def test_server_readiness_follows_the_database(
    proxied: tuple[str, FaultProxy], tmp_path: Path
) -> None:
    """/readyz answers 503 (quickly) while the database hangs and 200 once it is back;
    /healthz stays a liveness check."""
    from fastapi.testclient import TestClient

    from modelcache.server import create_app

    url, proxy = proxied
    config = CacheConfig(
        path=str(tmp_path), sql_url=url, sql_timeout=SQL_TIMEOUT, sql_connect_timeout=2
    )
    with Cache(config, embedder=FakeEmbedder()) as cache, TestClient(create_app(cache)) as http:
        body = {"query": "how do I reset my password", "model": "m"}
        assert http.post("/v1/entries", json={**body, "answer": "reset it"}).status_code == 201
        assert http.get("/readyz").status_code == 200
        proxy.blackhole()
        started = time.monotonic()
        response = http.get("/readyz")
        assert response.status_code == 503 and time.monotonic() - started < 2.5
        assert response.json()["sql"] != "ok"
        assert http.get("/healthz").status_code == 200
        started = time.monotonic()
        looked = http.post("/v1/lookup", json=body)
        assert looked.status_code == 200 and looked.json()["hit"] is False
        assert time.monotonic() - started < 1.5, "a lookup is a quick miss"
        started = time.monotonic()
        stored = http.post("/v1/entries", json={**body, "query": "new", "answer": "x"})
        assert stored.status_code == 503 and time.monotonic() - started < WRITE_BOUND
        proxy.restore()
        eventually(lambda: http.get("/readyz").status_code == 200)
        eventually(lambda: http.post("/v1/lookup", json=body).json()["hit"] is True)
