"""Chroma as the vector store: one cosine collection per partition, vectors given explicitly."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ..errors import BackendError
from ..redact import mask_url

__all__ = ["ChromaVectorStore"]

_PREFIX = "mc-"
_TAG = "tag"  # metadata key of a vector's tag (the conversation replies digest)
_LOADED_INDEXES = 64  # HNSW indexes an embedded Chroma keeps in memory
_GONE_RETRIES = 4  # writes into a collection that a concurrent clear keeps dropping


def _persistent_client(path: str, settings: Any) -> Any:
    """An embedded client whose Chroma keeps at most ``_LOADED_INDEXES`` HNSW indexes loaded.

    Chroma sizes that cache from the open-files limit (limit / 5: tens of thousands of
    indexes at about 2.5 MB each), so memory grew with every partition. Its API object is
    built, bounded, then started; a system already running for this folder in this process
    is reused as PersistentClient would.
    """
    import chromadb
    from chromadb.api import ServerAPI
    from chromadb.api.client import Client
    from chromadb.api.shared_system_client import SharedSystemClient
    from chromadb.config import System

    if path in SharedSystemClient._identifier_to_system:
        return chromadb.PersistentClient(path=path, settings=settings)
    settings.is_persistent = True
    settings.persist_directory = path
    system = System(settings)
    server = system.instance(ServerAPI)
    if isinstance(getattr(server, "hnsw_cache_size", None), int):
        server.hnsw_cache_size = min(server.hnsw_cache_size, _LOADED_INDEXES)
    system.start()
    return Client.from_system(system)


class ChromaVectorStore:
    """Embedded (folder or memory) or remote (``chroma run`` server) Chroma.

    ``embedding_function=None`` everywhere, so Chroma never loads or downloads its own model.
    """

    def __init__(
        self,
        path: str | None = None,
        url: str | None = None,
        *,
        max_open_collections: int = 128,
    ) -> None:
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        try:
            if url:
                parsed = urlparse(url)
                self._client: Any = chromadb.HttpClient(
                    host=parsed.hostname or "127.0.0.1",
                    port=parsed.port or 8000,
                    ssl=parsed.scheme == "https",
                    settings=settings,
                )
            elif path:
                Path(path).mkdir(parents=True, exist_ok=True)
                self._client = _persistent_client(path, settings)
            else:
                self._client = chromadb.EphemeralClient(settings=settings)
        except Exception as exc:
            where = mask_url(url) if url else path or "memory"
            raise BackendError(f"cannot open Chroma ({where}): {exc}") from exc
        # handles of recently used collections, least recently used first
        self._collections: OrderedDict[str, Any] = OrderedDict()
        self._max_open = max(1, max_open_collections)
        self._lock = threading.Lock()

    @staticmethod
    def _name(partition_id: str) -> str:
        return _PREFIX + partition_id

    def _get(self, partition_id: str, create: bool) -> Any | None:
        with self._lock:
            coll = self._collections.get(partition_id)
            if coll is not None:
                self._collections.move_to_end(partition_id)
                return coll
            name = self._name(partition_id)
            if create:
                coll = self._client.get_or_create_collection(
                    name,
                    configuration={"hnsw": {"space": "cosine"}},
                    embedding_function=None,
                )
            else:
                try:
                    coll = self._client.get_collection(name, embedding_function=None)
                except Exception:  # chromadb raises NotFoundError / ValueError by version
                    return None
            self._collections[partition_id] = coll
            while len(self._collections) > self._max_open:  # forget the least recently used
                self._collections.popitem(last=False)
            return coll

    def create(self, collection: str) -> None:
        """Create a partition's collection up front (idempotent)."""
        self._get(collection, create=True)

    def _forget_if_gone(self, collection: str, exc: Exception) -> bool:
        """Drop a cached handle whose collection another client deleted; True if so."""
        text = str(exc).lower()
        gone = "does not exist" in text or "not found" in text
        if not gone and type(exc).__name__ != "NotFoundError":
            return False
        with self._lock:
            self._collections.pop(collection, None)
        return True

    def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        tags: Sequence[str] | None = None,
    ) -> None:
        """Insert or replace vectors of a partition (recreating a collection deleted elsewhere).

        A tag is kept as Chroma metadata; untagged vectors carry none, so plain inserts cost
        no metadata writes.
        """
        if not ids:
            return
        args: dict[str, Any] = {
            "ids": list(ids),
            "embeddings": np.asarray(vectors, dtype=np.float32),
        }
        if tags is not None and any(tags):
            args["metadatas"] = [{_TAG: t} if t else None for t in tags]
        for attempt in range(_GONE_RETRIES):
            try:
                self._get(collection, create=True).upsert(**args)
                return
            except Exception as exc:
                # a clear in another process dropped the collection after we (re)opened it:
                # recreate and write again; a tight clear loop can win more than once
                if not self._forget_if_gone(collection, exc) or attempt == _GONE_RETRIES - 1:
                    raise

    def query(
        self, collection: str, vector: np.ndarray, k: int, tag: str | None = None
    ) -> list[tuple[str, float]]:
        """Nearest ids with cosine similarity (1 - Chroma's cosine distance)."""
        coll = self._get(collection, create=False)
        if coll is None:
            return []
        try:
            res = coll.query(
                query_embeddings=np.asarray(vector, dtype=np.float32).reshape(1, -1),
                n_results=k,
                where={_TAG: tag} if tag else None,
                include=["distances"],
            )
        except Exception as exc:
            if self._forget_if_gone(collection, exc):
                raise BackendError(f"the collection of partition {collection} is gone") from exc
            raise
        ids = res["ids"][0] if res["ids"] else []
        dists = res["distances"][0] if res.get("distances") else []
        # float32 rounding can put identical vectors a hair past 1: clamp to the cosine range
        return [(i, min(1.0, max(-1.0, 1.0 - float(d)))) for i, d in zip(ids, dists, strict=True)]

    def tag(self, collection: str, ids: Sequence[str], tags: Sequence[str]) -> None:
        """Set the tags of stored vectors (upgrading a store); unknown ids are ignored."""
        known = set(self.ids(collection))
        pairs = [(i, t) for i, t in zip(ids, tags, strict=True) if i in known and t]
        coll = self._get(collection, create=False)
        if coll is None or not pairs:
            return
        for start in range(0, len(pairs), 1000):
            chunk = pairs[start : start + 1000]
            coll.update(ids=[i for i, _ in chunk], metadatas=[{_TAG: t} for _, t in chunk])

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Remove vectors; unknown ids are ignored."""
        if not ids:
            return
        coll = self._get(collection, create=False)
        if coll is None:
            return
        try:
            coll.delete(ids=list(ids))
        except Exception as exc:
            if not self._forget_if_gone(collection, exc):
                raise

    def drop(self, collection: str) -> None:
        """Drop a partition's collection."""
        with self._lock:
            self._collections.pop(collection, None)
            try:
                self._client.delete_collection(self._name(collection))
            except Exception:  # a missing collection is fine
                return

    def ids(self, collection: str) -> list[str]:
        """Every id of a partition's collection."""
        coll = self._get(collection, create=False)
        if coll is None:
            return []
        try:
            return list(coll.get(include=[])["ids"])
        except Exception as exc:
            if self._forget_if_gone(collection, exc):
                return []
            raise

    def collections(self) -> list[str]:
        """Partition ids that have a collection."""
        names = [getattr(c, "name", c) for c in self._client.list_collections()]
        return [n[len(_PREFIX) :] for n in names if isinstance(n, str) and n.startswith(_PREFIX)]

    def close(self) -> None:
        """Forget cached collection handles."""
        with self._lock:
            self._collections.clear()

    @property
    def open_collections(self) -> int:
        """How many collection handles are held (bounded by ``max_open_collections``)."""
        return len(self._collections)
