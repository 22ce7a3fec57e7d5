"""Several processes starting at once on an empty database (issue 13, item 4): before the
fix some crashed with "1050 Table 'modelcache_meta' already exists" (MariaDB) or a duplicate
type error (PostgreSQL). Schema creation and the stored settings must be idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa

from modelcache.storage import MetaRow

PROCESSES = 5

# One child opens every database in turn, so the import cost is paid once per process.
CHILD = textwrap.dedent(
    """
    import sys
    from modelcache import Cache, CacheConfig, FakeEmbedder
    from modelcache.vectors.base import NoVectors  # the race is in SQL: skip Chroma's start-up

    for url in sys.argv[1:]:
        print("ready", flush=True)
        sys.stdin.readline()  # every process starts opening at the same moment
        try:
            cache = Cache(
                CacheConfig(path=None, sql_url=url),
                embedder=FakeEmbedder(),
                vector_store=NoVectors(),
            )
            cache.close()
            print("opened", flush=True)
        except Exception as exc:
            print("FAILED", repr(exc)[:300].replace("\\n", " "), flush=True)
    """
)


def stored_settings(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(sa.select(MetaRow.__table__.c.key)).scalars())  # type: ignore[attr-defined]
    finally:
        engine.dispose()


@pytest.mark.mariadb
@pytest.mark.postgres
def test_processes_starting_together_on_an_empty_database(
    mariadb_url: str, postgres_url: str
) -> None:
    urls = [mariadb_url, postgres_url]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *urls],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    results: dict[str, list[str]] = {url: [] for url in urls}
    try:
        for url in urls:
            for child in children:
                assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            for child in children:
                assert child.stdout is not None
                results[url].append(child.stdout.readline().strip())
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=30)
    for url, outcomes in results.items():
        assert outcomes == ["opened"] * PROCESSES, (url.split(":")[0], outcomes)
        assert stored_settings(url) == ["dimension", "embedder", "metric", "schema_version"]
