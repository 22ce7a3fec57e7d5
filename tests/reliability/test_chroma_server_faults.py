"""A hung Chroma server: lookups stay within their deadline and writes fail within
``sql_timeout`` instead of waiting forever (chromadb's HTTP session has no timeout), also
when the server hangs before the cache first opens it; the cache recovers once it answers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from process_support import free_port, stop, wait_ready
from reliability_support import FaultProxy

from modelcache import BackendError, Cache, CacheConfig, FakeEmbedder, Request

DEADLINE = 0.5
TIMEOUT = 1.5


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A `chroma run` server of this module on a free loopback port."""
    folder = tmp_path_factory.mktemp("chroma-server")
    chroma = Path(sys.executable).with_name("chroma")
    port = free_port()
    log = folder / "chroma.log"  # a file, not a pipe: a full pipe would stall the server
    cmd = [str(chroma), "run", "--path", str(folder / "data"), "--host", "127.0.0.1"]
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/api/v2/heartbeat", proc, timeout=150, log=log)
        yield port
    finally:
        stop(proc, sig=signal.SIGINT)


@pytest.fixture
def proxy(chroma_server: int) -> Iterator[FaultProxy]:
    hole = FaultProxy("127.0.0.1", chroma_server)
    try:
        yield hole
    finally:
        hole.close()


def _cache(proxy: FaultProxy, tmp_path: Path) -> Cache:
    config = CacheConfig(
        path=None,
        sql_url=f"sqlite:///{tmp_path / 'rows.sqlite3'}",
        chroma_url=f"http://127.0.0.1:{proxy.port}",
        lookup_timeout=DEADLINE,
        sql_timeout=TIMEOUT,
    )
    return Cache(config, embedder=FakeEmbedder())


def _seconds(fn: object) -> tuple[object, float]:
    started = time.monotonic()
    try:
        result = fn()  # type: ignore[operator]
    except BackendError as exc:
        result = exc
    return result, time.monotonic() - started


def test_a_server_hung_before_the_first_lookup_costs_the_deadline(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    """Opening the client was forgiven by the deadline and waited on the server for good."""
    proxy.blackhole()
    cache = _cache(proxy, tmp_path)
    try:
        for _ in range(3):
            hit, seconds = _seconds(lambda: cache.lookup(Request("how do I reset my password")))
            assert hit is None and seconds < DEADLINE + 1.0
        proxy.restore()
        time.sleep(TIMEOUT + 0.5)  # the abandoned opening gives up
        cache.insert(Request("How do I reset my password?"), "reset link")
        hit = cache.lookup(Request("how do I reset my password"))
        assert hit is not None and hit.answer == "reset link"
    finally:
        cache.close()


def test_a_server_that_hangs_later_fails_writes_within_the_timeout(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    """An insert against a hung server held the write lock forever, and every later insert,
    remove and clear of the process behind it."""
    cache = _cache(proxy, tmp_path)
    try:
        cache.insert(Request("How do I reset my password?"), "reset link")
        proxy.blackhole()
        for text in ("What is the refund window?", "Where is my order?"):
            result, seconds = _seconds(lambda t=text: cache.insert(Request(t), "x"))
            assert isinstance(result, BackendError) and seconds < TIMEOUT * 2 + 2.0
        hit, seconds = _seconds(lambda: cache.lookup(Request("how do I reset my password")))
        assert hit is None and seconds < DEADLINE + 1.0
        proxy.restore()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # new connections answer at once
            hit = cache.lookup(Request("how do I reset my password"))
            if hit is not None:
                break
            time.sleep(0.2)
        assert hit is not None and hit.answer == "reset link"
    finally:
        cache.close()


def test_a_closed_cache_writes_nothing_more_to_the_server(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    """Only a folder's store refused writes after close: a bulk load against a Chroma server
    went on writing every later batch after close() returned."""
    cache = _cache(proxy, tmp_path)
    cache.insert(Request("How do I reset my password?"), "reset link")
    store = cache._vectors
    cache.close()
    with pytest.raises(BackendError, match="closed"):
        store.upsert("p", ["x"], np.ones((1, FakeEmbedder().dimension), np.float32))
