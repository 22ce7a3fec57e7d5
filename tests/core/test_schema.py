"""The stored settings and schema upgrade (modelcache.storage.schema), on a bare SQL store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from core_support import CountingEmbedder

from modelcache import Cache, FakeEmbedder, IncompatibleCacheError, Message, Request
from modelcache.storage import SQLStore
from modelcache.storage.schema import SCHEMA_VERSION, check_settings
from modelcache.vectors.base import NoVectors


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLStore]:
    """An empty SQLite store."""
    sql = SQLStore(f"sqlite:///{tmp_path / 'modelcache.db'}")
    yield sql
    sql.close()


def test_a_new_store_records_its_settings(store: SQLStore) -> None:
    check_settings(store, NoVectors(), FakeEmbedder(64))
    assert store.get_meta() == {
        "schema_version": SCHEMA_VERSION,
        "embedder": "fake-hash-64",
        "dimension": "64",
        "metric": "cosine",
    }
    check_settings(store, NoVectors(), FakeEmbedder(64))  # opening again changes nothing


def test_a_store_of_a_newer_schema_is_refused_and_left_alone(store: SQLStore) -> None:
    check_settings(store, NoVectors(), FakeEmbedder())
    store.replace_meta("schema_version", "99")
    before = store.get_meta()
    with pytest.raises(IncompatibleCacheError, match="schema_version='99'"):
        check_settings(store, NoVectors(), FakeEmbedder())
    assert store.get_meta() == before


def test_an_old_store_of_another_embedder_is_refused_not_upgraded(
    make_cache: Callable[..., Cache], tmp_path: Path
) -> None:
    """The upgrade re-embeds with the opening embedder: only the one that wrote the store may."""
    old = make_cache()
    history = (Message("user", "What is tax law?"), Message("assistant", "The rules on taxes."))
    old.insert(Request("explain more about it", history=history), "more")
    old._sql.replace_meta("schema_version", "2")
    old.close()
    store = SQLStore(f"sqlite:///{tmp_path / 'cache' / 'modelcache.db'}")
    other = CountingEmbedder(dimension=128)
    try:
        with pytest.raises(IncompatibleCacheError, match="embedder"):
            check_settings(store, NoVectors(), other)
        assert other.calls == 0
        assert store.get_meta()["schema_version"] == "2"
    finally:
        store.close()
