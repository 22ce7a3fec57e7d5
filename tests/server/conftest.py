"""Fixtures: a fresh cache on tmp_path (fake embedder) and the real app over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modelcache import Cache, CacheConfig, FakeEmbedder
from modelcache.server import ServerSettings, create_app

# Behaviour tests, not speed tests: a generous lookup deadline, so that a loaded CI machine (or
# the guard warming its word lists at cache start) never turns a slow lookup into a miss. The
# deadline itself is tested in tests/reliability.
_DEADLINE = 10.0


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    with Cache(
        CacheConfig(path=str(tmp_path / "data"), lookup_timeout=_DEADLINE), embedder=FakeEmbedder()
    ) as c:
        yield c


@pytest.fixture
def app(cache: Cache) -> FastAPI:
    return create_app(cache, ServerSettings(max_body_bytes=64 * 1024))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


KEYS = {"key-a": "tenantA", "key-b": "tenantB"}


@pytest.fixture
def keyed_client(cache: Cache) -> Iterator[TestClient]:
    with TestClient(create_app(cache, ServerSettings(api_keys=KEYS))) as c:
        yield c
