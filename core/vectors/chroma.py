"""Chroma as the vector store: one cosine collection per partition, vectors given explicitly."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ..errors import BackendError
from ..redact import describe_error, mask_url
from .mirror import VectorMirror

__all__ = ["ChromaVectorStore"]

log = logging.getLogger("modelcache")

_NONE = np.zeros(0, dtype=np.float32)  # the vector slot of a query that did not ask for them

_PREFIX = "mc-"
_LOADED_INDEXES = 64  # HNSW indexes an embedded Chroma keeps in memory
_GONE_RETRIES = 4  # writes into a collection that a concurrent clear keeps dropping
# An embedded Chroma can answer a query just after a write with "Error creating hnsw segment
# reader: Nothing found on disk" while its index files are being written (chroma-core/chroma#4212);
# the same query a moment later succeeds, so it is asked again after these pauses (seconds).
_UNFLUSHED_PAUSES = (0.02, 0.1, 0.3)
_COPY_PAGE = 1_000  # vectors per read when a partition is copied into memory


def _probe_folder(path: Path) -> None:
    """Fail now, not at the first lookup, when the folder's Chroma database is not one.

    The client opens lazily (importing chromadb costs about a second), so the file header is
    checked here. Only the header is read: a second SQLite connection beside a crashed
    writer's journal must not touch it.
    """
    db = path / "chroma.sqlite3"
    try:
        with open(db, "rb") as fh:
            header = fh.read(16)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BackendError(f"cannot open Chroma ({path}): {exc}") from exc
    if header and header != b"SQLite format 3\x00":
        raise BackendError(f"cannot open Chroma ({path}): chroma.sqlite3 is not a database")


# The in-memory copies of each embedded Chroma in this process, by folder (or ":memory:"), with
# how many stores use each: every store of one Chroma must see the others' writes.
_mirrors: dict[str, tuple[VectorMirror, int]] = {}
_mirrors_guard = threading.Lock()


def _join_mirror(key: str, budget: int, spawn: Any) -> VectorMirror:
    with _mirrors_guard:
        mirror, users = _mirrors.get(key, (None, 0))
        if mirror is None:
            mirror = VectorMirror(budget, spawn=spawn)
        mirror.budget = budget if users == 0 else max(mirror.budget, budget)
        mirror.reopen()
        _mirrors[key] = (mirror, users + 1)
        return mirror


def _leave_mirror(key: str) -> bool:
    """The last store of a folder empties its copy but keeps it registered: a write that a
    closed store still makes must reach the copy of a store opened on the folder later.
    Returns whether it was the last."""
    with _mirrors_guard:
        mirror, users = _mirrors.get(key, (None, 0))
        if mirror is None:
            return False
        if users <= 1:
            mirror.forget()
        _mirrors[key] = (mirror, max(0, users - 1))
        return users <= 1


def _stop_system(path: str) -> None:
    """Stop the Chroma that this process runs on a folder and forget it, so that a cache opened
    on the folder later reads it afresh: another process (``modelcache import``) may write
    there once the folder lock is released, and Chroma's state in memory would not see it."""
    if "chromadb" not in sys.modules:
        return  # never opened in this process (stats, export): nothing runs, nothing to import
    from chromadb.api.shared_system_client import SharedSystemClient

    with SharedSystemClient._refcount_lock:
        system = SharedSystemClient._identifier_to_system.pop(path, None)
        SharedSystemClient._identifier_to_refcount.pop(path, None)
    if system is not None:
        try:
            system.stop()
        except Exception as exc:  # the folder is closed either way
            log.debug("modelcache: stopping Chroma failed: %s", describe_error(exc))


def _gone(exc: Exception) -> bool:
    """Whether Chroma says a collection does not exist (a Chroma server answers one that it is
    deleting at that moment with "missing metadata segment": that is gone too)."""
    text = str(exc).lower()
    gone = any(s in text for s in ("does not exist", "not found", "missing metadata segment"))
    return gone or type(exc).__name__ == "NotFoundError"


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


def _http_client(url: str, settings: Any, timeout: float) -> Any:
    """A client of a Chroma server whose every call gives up after ``timeout`` seconds.

    chromadb's HTTP session waits forever (``timeout=None``): a hung server held every insert,
    and the lookup workers, for good. Its constructor already calls the server, so it runs on
    a thread given as long; the session's own timeout is set as soon as it exists.
    """
    import chromadb
    import httpx

    parsed = urlparse(url)
    made: list[Any] = []
    failed: list[BaseException] = []

    def connect() -> None:
        try:
            made.append(
                chromadb.HttpClient(
                    host=parsed.hostname or "127.0.0.1",
                    port=parsed.port or 8000,
                    ssl=parsed.scheme == "https",
                    settings=settings,
                )
            )
        except BaseException as exc:  # handed to the caller
            failed.append(exc)

    thread = threading.Thread(target=connect, name="modelcache-chroma-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if failed:
        raise failed[0]
    if not made:
        raise TimeoutError(f"no answer within {timeout}s")
    session = getattr(getattr(made[0], "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(timeout)
    return made[0]


def _writing(mirror: VectorMirror | None) -> Any:
    """The lock every write of an embedded Chroma holds, so that its copy sees them in order."""
    return mirror.writing if mirror is not None else contextlib.nullcontext()


class ChromaVectorStore:
    """Embedded (folder or memory) or remote (``chroma run`` server) Chroma.

    ``embedding_function=None`` everywhere, so Chroma never loads or downloads its own model.
    An embedded Chroma answers queries of partitions of up to ``PARTITION_MAX`` vectors from
    an in-memory copy of at most ``memory_vectors`` vectors in all (:mod:`.mirror`); 0 turns it
    off. ``copy_in_background=False`` copies a partition before its first query answers.
    """

    def __init__(
        self,
        path: str | None = None,
        url: str | None = None,
        *,
        max_open_collections: int = 128,
        memory_vectors: int = 0,
        copy_in_background: bool = True,
        timeout: float = 10.0,
    ) -> None:
        if path is not None and not url:
            _probe_folder(Path(path))
        self._path = path
        self._url = url
        self._timeout = timeout
        self._memory_vectors = max(0, memory_vectors)
        self._mirror_key: str | None = None
        self._mirror: VectorMirror | None = None
        if not url:  # one process owns an embedded Chroma: every write passes through here
            self._mirror_key = str(Path(path).resolve()) if path else ":memory:"
            spawn = None if copy_in_background else (lambda task: task())
            self._mirror = _join_mirror(self._mirror_key, self._memory_vectors, spawn)
        self._opened: Any = None
        self._closed = False
        self._open_lock = threading.Lock()
        # handles of recently used collections, least recently used first
        self._collections: OrderedDict[str, Any] = OrderedDict()
        self._max_open = max(1, max_open_collections)
        self._lock = threading.Lock()

    @property
    def remote(self) -> bool:
        """Whether this is a Chroma server: opening it waits on the network, unlike a folder."""
        return bool(self._url)

    @staticmethod
    def prepare() -> None:
        """Import chromadb (about a second of local work), so that opening a server then costs
        only its network calls, which a lookup deadline counts."""
        import chromadb  # noqa: F401

    @property
    def is_open(self) -> bool:
        """Whether the client is open (the first call that needs it opens it)."""
        return self._opened is not None

    def open(self) -> None:
        """Open the client now (idempotent): the engine does so outside a lookup's deadline."""
        self._client  # noqa: B018 - the property opens it

    @property
    def _client(self) -> Any:
        """The Chroma client, opened on first use: importing chromadb costs about a second,
        which commands that never touch vectors (stats, export) should not pay."""
        if self._opened is not None:
            return self._opened
        with self._open_lock:
            if self._closed:  # no Chroma opens behind a closed store (nobody would stop it)
                raise BackendError("the vector store is closed")
            if self._opened is None:
                self._opened = self._open(self._path, self._url, self._timeout)
            return self._opened

    @staticmethod
    def _open(path: str | None, url: str | None, timeout: float) -> Any:
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        try:
            if url:
                return _http_client(url, settings, timeout)
            if path:
                Path(path).mkdir(parents=True, exist_ok=True)
                return _persistent_client(path, settings)
            return chromadb.EphemeralClient(settings=settings)
        except Exception as exc:
            where = mask_url(url) if url else path or "memory"
            raise BackendError(f"cannot open Chroma ({where}): {exc}") from exc

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
            client = self._client  # a closed store raises here, not as a missing collection
            if create:
                coll = client.get_or_create_collection(
                    name,
                    configuration={"hnsw": {"space": "cosine"}},
                    embedding_function=None,
                )
            else:
                try:
                    coll = client.get_collection(name, embedding_function=None)
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
        if not _gone(exc):
            return False
        with self._lock:
            self._collections.pop(collection, None)
        return True

    def upsert(self, collection: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace vectors of a partition (recreating a collection deleted elsewhere)."""
        if not ids:
            return
        embeddings = np.asarray(vectors, dtype=np.float32)
        if embeddings.ndim == 1 and len(ids) == 1:
            embeddings = embeddings.reshape(1, -1)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(ids):
            raise BackendError(f"{len(ids)} ids but vectors of shape {embeddings.shape}")
        args: dict[str, Any] = {"ids": list(ids), "embeddings": embeddings}
        mirror = self._mirror  # once: close() may detach it meanwhile
        with _writing(mirror):
            for attempt in range(_GONE_RETRIES):
                try:
                    self._get(collection, create=True).upsert(**args)
                    break
                except Exception as exc:
                    # a clear in another process dropped the collection after we (re)opened it:
                    # recreate and write again; a tight clear loop can win more than once
                    if not self._forget_if_gone(collection, exc) or attempt == _GONE_RETRIES - 1:
                        raise
            if mirror is not None:
                mirror.upserted(collection, args["ids"], embeddings)

    def query(self, collection: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Nearest ids with cosine similarity (1 - Chroma's cosine distance)."""
        return [(i, sim) for i, sim, _ in self._query(collection, vector, k, with_vectors=False)]

    def query_vectors(
        self, collection: str, vector: np.ndarray, k: int
    ) -> list[tuple[str, float, np.ndarray]]:
        """Nearest ids with cosine similarity and their stored vectors."""
        return self._query(collection, vector, k, with_vectors=True)

    def _query(
        self, collection: str, vector: np.ndarray, k: int, with_vectors: bool
    ) -> list[tuple[str, float, np.ndarray]]:
        mirror = self._mirror
        if mirror is not None and self._memory_vectors:
            found = mirror.query(
                collection, vector, k, lambda limit: self._read_all(collection, limit)
            )
            if found is not None:
                return found if with_vectors else [(i, sim, _NONE) for i, sim, _ in found]
        coll = self._get(collection, create=False)
        if coll is None:
            return []
        args: dict[str, Any] = {
            "query_embeddings": np.asarray(vector, dtype=np.float32).reshape(1, -1),
            "n_results": k,
            "include": ["distances", "embeddings"] if with_vectors else ["distances"],
        }
        for pause in (*_UNFLUSHED_PAUSES, None):
            try:
                res = coll.query(**args)
                break
            except Exception as exc:
                if self._forget_if_gone(collection, exc):
                    raise BackendError(f"the collection of partition {collection} is gone") from exc
                if pause is None or "nothing found on disk" not in str(exc).lower():
                    raise
                time.sleep(pause)
        ids = res["ids"][0] if res["ids"] else []
        dists = res["distances"][0] if res.get("distances") else []
        embeddings = res.get("embeddings")
        vecs = embeddings[0] if with_vectors and embeddings is not None else [_NONE] * len(ids)
        # float32 rounding can put identical vectors a hair past 1: clamp to the cosine range
        return [
            (i, min(1.0, max(-1.0, 1.0 - float(d))), np.asarray(v, dtype=np.float32))
            for i, d, v in zip(ids, dists, vecs, strict=True)
        ]

    def _read_all(self, collection: str, limit: int) -> tuple[list[str], np.ndarray] | None:
        """Every id and vector of a partition, or None when it holds more than ``limit``: the
        ids first, then their vectors by pages (a delete meanwhile cannot shift a page)."""
        empty: tuple[list[str], np.ndarray] = ([], np.zeros((0, 0), dtype=np.float32))
        try:  # by name, not a cached handle: another store of the folder may have dropped it
            coll = self._client.get_collection(self._name(collection), embedding_function=None)
        except Exception as exc:
            if _gone(exc):
                return empty
            raise  # anything else: the copy is tried again later
        found: list[str] = []
        vectors: list[np.ndarray] = []
        try:
            if coll.count() > limit:
                return None
            ids = list(coll.get(include=[])["ids"])
            if len(ids) > limit:
                return None
            for start in range(0, len(ids), _COPY_PAGE):
                page = coll.get(ids=ids[start : start + _COPY_PAGE], include=["embeddings"])
                found += page["ids"]
                vectors.append(np.asarray(page["embeddings"], dtype=np.float32))
        except Exception as exc:
            if _gone(exc):  # dropped meanwhile: the drop restarts the copy (VectorMirror.dropped)
                return empty
            raise
        return (found, np.concatenate(vectors)) if found else empty

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Remove vectors; unknown ids are ignored."""
        if not ids:
            return
        mirror = self._mirror
        with _writing(mirror):
            for _ in range(2):  # a handle of a collection that another store dropped
                coll = self._get(collection, create=False)  # and refilled: reopened once
                if coll is None:
                    break
                try:
                    coll.delete(ids=list(ids))
                    break
                except Exception as exc:
                    if not self._forget_if_gone(collection, exc):
                        raise
            if mirror is not None:
                mirror.deleted(collection, ids)

    def drop(self, collection: str) -> None:
        """Drop a partition's collection."""
        mirror = self._mirror
        with _writing(mirror), self._lock:
            self._collections.pop(collection, None)
            with contextlib.suppress(Exception):  # a missing collection is fine
                self._client.delete_collection(self._name(collection))
            if mirror is not None:  # after Chroma's delete: a copy read before it is discarded
                mirror.dropped(collection)

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
        """Forget cached collection handles (and the in-memory copy, if no other store of this
        Chroma uses it)."""
        with self._lock:
            self._collections.clear()
        key, self._mirror_key = self._mirror_key, None
        mirror = self._mirror if key is not None else None
        with _writing(mirror):  # a write under way updates the copy first
            with self._open_lock:  # and none comes after: no Chroma opens behind a closed store
                self._closed = True
                self._opened = None
            if key is not None and mirror is not None:
                self._memory_vectors = 0  # queries of a closed store never reach the copy
                if _leave_mirror(key) and self._path:  # whichever store of the folder opened it
                    _stop_system(self._path)

    @property
    def open_collections(self) -> int:
        """How many collection handles are held (bounded by ``max_open_collections``)."""
        return len(self._collections)
