"""Vector-store fixtures: every contract test runs on Chroma (without and with its in-memory
copy) and on Milvus (milvus-lite).

milvus-lite runs in-process (a gRPC server in a thread per database file), so the session
shares one database file and each test gets its own collection name, dropped afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from vector_support import drop_milvus_collections

from modelcache.vectors import ChromaVectorStore, MilvusVectorStore, VectorStore

STORES = ["chroma", "chroma-memory", "milvus", "milvus-collections"]


@pytest.fixture(scope="session")
def milvus_lite_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One milvus-lite database file for the whole session (its server starts once)."""
    pytest.importorskip("pymilvus", reason="pip install 'modelcache[milvus]'")
    return str(tmp_path_factory.mktemp("milvus") / "vectors.db")


def open_store(kind: str, tmp_path: Path, milvus_file: str, name: str) -> VectorStore:
    """A store of one kind; ``name`` keeps Milvus tests apart within the shared file."""
    if kind == "chroma":
        return ChromaVectorStore(path=str(tmp_path / "chroma"))
    if kind == "chroma-memory":  # queries answered by the in-memory copy (vectors/mirror.py)
        return ChromaVectorStore(
            path=str(tmp_path / "chroma"), memory_vectors=50_000, copy_in_background=False
        )
    return MilvusVectorStore(
        milvus_file, collection=name, partition_key=kind == "milvus", timeout=30.0
    )


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Each vector store implementation in turn."""
    return str(request.param)


@pytest.fixture
def store_factory(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], VectorStore]]:
    """Opens stores of the current kind on the same data (reopen tests); cleaned at teardown."""
    chroma = store_kind.startswith("chroma")
    milvus_file = "" if chroma else request.getfixturevalue("milvus_lite_file")
    name = f"t_{secrets.token_hex(4)}"
    opened: list[VectorStore] = []

    def factory() -> VectorStore:
        store = open_store(store_kind, tmp_path, milvus_file, name)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()
    if milvus_file:
        drop_milvus_collections(milvus_file, name)


@pytest.fixture
def store(store_factory: Callable[[], VectorStore]) -> VectorStore:
    """A fresh, empty vector store of the current kind."""
    return store_factory()
