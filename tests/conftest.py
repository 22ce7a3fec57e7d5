"""Shared fixtures for every test suite: embedders, a clock, caches and database URLs.

The offline switches are set before anything imports transformers or sentence-transformers,
so no test ever reaches the Hugging Face Hub.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from process_support import free_port, stop

from modelcache import Cache, CacheConfig, Embedder, FakeEmbedder, SentenceTransformerEmbedder
from modelcache.embedding import OnnxSentenceEmbedder

_START = 1_700_000_000.0


class FakeClock:
    """A mutable clock for ``Cache(..., clock=clock)``: time moves only when a test says so."""

    def __init__(self, start: float = _START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move time forward and return the new time."""
        self.now += seconds
        return self.now


def services_required() -> bool:
    """CI sets MODELCACHE_REQUIRE_SERVICES=1: an unreachable database fails instead of skips."""
    return os.environ.get("MODELCACHE_REQUIRE_SERVICES", "") == "1"


def _unavailable(what: str, exc: BaseException) -> NoReturn:
    reason = f"{what} is not reachable ({type(exc).__name__}: {exc})"
    if services_required():
        pytest.fail(f"{reason}; MODELCACHE_REQUIRE_SERVICES=1 demands it", pytrace=False)
    pytest.skip(f"{reason}; start the service to run this test")


def _db_name() -> str:
    return f"mc_test_{secrets.token_hex(6)}"


# ---- embedders --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def minilm() -> OnnxSentenceEmbedder:
    """The real shipped all-MiniLM-L6-v2 model on the default runtime (ONNX Runtime, 1 thread),
    loaded once per session; the first session on a machine exports it (torch, ~20 s)."""
    embedder = OnnxSentenceEmbedder()
    assert embedder.backend == "onnx", "the ONNX export of the shipped model failed"
    return embedder


@pytest.fixture(scope="session")
def minilm_torch() -> SentenceTransformerEmbedder:
    """The same model under torch (the fallback and fine-tuning runtime), loaded once."""
    return SentenceTransformerEmbedder()


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    """Deterministic hashing embedder: similarity follows shared words, no model needed."""
    return FakeEmbedder()


# ---- clock and caches -------------------------------------------------------------------------
@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at a fixed epoch; call ``clock.advance(s)`` to move time."""
    return FakeClock()


@pytest.fixture
def make_cache(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: FakeClock
) -> Iterator[Callable[..., Cache]]:
    """Factory of caches on ``tmp_path`` (FakeEmbedder and the fake clock unless given).

    ``make_cache(path=None, embedder=None, clock=None, **config_fields)``; every cache it
    made is closed at teardown.
    """
    made: list[Cache] = []

    def factory(
        path: str | Path | None = None,
        *,
        embedder: Embedder | None = None,
        clock_: Callable[[], float] | None = None,
        **fields: Any,
    ) -> Cache:
        folder = Path(path) if path is not None else tmp_path / "cache"
        # The lookup deadline bounds time in the stores; on a loaded 2-core CI machine a first
        # lookup can take longer, and the suite tests behaviour, not speed: the deadline itself
        # is tested in tests/reliability with its own values.
        fields.setdefault("lookup_timeout", 10.0)
        config = CacheConfig(path=str(folder), **fields)
        cache = Cache(
            config,
            embedder=embedder if embedder is not None else fake_embedder,
            clock=clock_ if clock_ is not None else clock,
        )
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        cache.close()


@pytest.fixture
def cache(make_cache: Callable[..., Cache]) -> Cache:
    """A fresh cache on ``tmp_path`` with the FakeEmbedder and the fake clock."""
    return make_cache()


# ---- database services ------------------------------------------------------------------------
MARIADB_HOST, MARIADB_PORT = "127.0.0.1", 3306
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A throwaway MariaDB/MySQL database per test, dropped afterwards."""
    try:
        import pymysql
    except ImportError as exc:  # pragma: no cover - dev extra missing
        _unavailable("pymysql", exc)
    name = _db_name()
    try:
        conn = pymysql.connect(
            host=MARIADB_HOST, port=MARIADB_PORT, user="root", password="", connect_timeout=3
        )
    except pymysql.err.Error as exc:
        _unavailable(f"MariaDB at {MARIADB_HOST}:{MARIADB_PORT}", exc)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        conn.commit()
        yield f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.commit()
        conn.close()


@pytest.fixture(scope="session")
def seekdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An OceanBase seekdb server (MySQL mode) from the pylibseekdb wheel on a free loopback
    port, for the whole session; the port. Stopped (by its PID) at the end."""
    try:
        import pylibseekdb
        import pymysql
    except ImportError as exc:
        _unavailable("pylibseekdb (OceanBase seekdb, pip install pylibseekdb)", exc)
    binary = Path(pylibseekdb.__file__).resolve().parent / "seekdb"
    port = free_port()
    base = tmp_path_factory.mktemp("seekdb")
    cmd = [str(binary), "--nodaemon", "--port", str(port), "--base-dir", str(base)]
    for parameter in ("datafile_size=1G", "log_disk_size=2G", "memory_limit=3G"):
        cmd += ["--parameter", parameter]
    proc = subprocess.Popen(cmd, cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=2).close()
                break
            except pymysql.err.Error as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    _unavailable(f"seekdb on port {port}", exc)
                time.sleep(0.5)
        yield port
    finally:
        stop(proc, timeout=30)


@pytest.fixture
def seekdb_url(seekdb_server: int) -> Iterator[str]:
    """A throwaway database on the session's seekdb server (OceanBase's engine, MySQL mode)."""
    import pymysql

    name = _db_name()
    conn = pymysql.connect(host="127.0.0.1", port=seekdb_server, user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield f"mysql+pymysql://root@127.0.0.1:{seekdb_server}/{name}?charset=utf8mb4"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def _postgres_admin() -> tuple[Any, str]:
    """An autocommit connection to the ``test`` database and the user that worked."""
    import psycopg

    last: Exception | None = None
    for user in ("root", "postgres"):
        try:
            conn = psycopg.connect(
                host=POSTGRES_HOST,
                port=POSTGRES_PORT,
                user=user,
                dbname="test",
                autocommit=True,
                connect_timeout=3,
            )
            return conn, user
        except psycopg.Error as exc:
            last = exc
    assert last is not None
    raise last


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database per test, dropped afterwards."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - dev extra missing
        _unavailable("psycopg", exc)
    name = _db_name()
    try:
        conn, user = _postgres_admin()
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL at {POSTGRES_HOST}:{POSTGRES_PORT}", exc)
    try:
        conn.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg://{user}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
