"""Fixtures of the reliability tests: databases behind a fault-injecting proxy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from reliability_support import FaultProxy


@pytest.fixture(params=["mariadb", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A throwaway MariaDB or PostgreSQL database (skipped when the service is down)."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def proxied(db_url: str) -> Iterator[tuple[str, FaultProxy]]:
    """The database URL rewritten to go through a :class:`FaultProxy`, and the proxy."""
    url = sa.make_url(db_url)
    proxy = FaultProxy(url.host or "127.0.0.1", url.port or 0)
    try:
        yield url.set(host="127.0.0.1", port=proxy.port).render_as_string(False), proxy
    finally:
        proxy.close()
