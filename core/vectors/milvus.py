"""Milvus as the vector store: a Milvus server (standalone or cluster) or embedded milvus-lite.

Two mappings of cache partitions (benchmarks/results/milvus.md has the measurements):

* partition key (default on a Milvus server): one collection whose ``partition`` field is a
  Milvus partition key; a search filters on it inside the index (a pre-filter, never a
  post-filter on top-k). Creating a partition costs nothing, and a server holds thousands of
  tenants this way, while collections are heavy (creation, load, a cluster-wide limit).
* a collection per partition (default on milvus-lite): milvus-lite creates a collection in
  ~0.5 s, but evaluates a filtered search over one shared collection in Python, 8x (1k
  vectors) to 500x (10k vectors) slower than searching a small collection of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import numpy as np

from ..errors import BackendError, ConfigError
from ..redact import mask_url

__all__ = ["MilvusVectorStore", "milvus_uri"]

log = logging.getLogger(__name__)

_PK = "pk"  # primary key: a digest of (partition, id), so filters never quote user text
_ID = "entry"  # the entry id as given
_PARTITION = "partition"
_NONE = np.zeros(0, dtype=np.float32)  # the vector slot of a query that did not ask for them
_VECTOR = "vector"
_NAME_OK = re.compile(r"[A-Za-z0-9_]+")
_MAX_ID = 1024
_BATCH = 1000  # rows per write and per page of a scan
_MISSING = ("does not exist", "not found", "can't find collection")
_RELEASED = ("released", "not loaded", "load() before")  # e.g. after a server restart
_T = TypeVar("_T")


def milvus_uri(url: str) -> tuple[str, str, str]:
    """(client URI, token, database) of ``milvus://[user:password@]host:port[/db]``,
    ``milvus+https://…``, ``http(s)://…`` or a milvus-lite file path (``*.db``)."""
    parsed = urlparse(url)
    if parsed.scheme in ("milvus", "milvus+http", "milvus+https", "http", "https"):
        scheme = "https" if parsed.scheme.endswith("https") else "http"
        if not parsed.hostname:
            raise ConfigError(f"no host in the Milvus URL {mask_url(url)}")
        token = ""
        if parsed.username is not None:
            token = unquote(parsed.username)
            if parsed.password is not None:
                token += ":" + unquote(parsed.password)
        host = parsed.hostname if ":" not in parsed.hostname else f"[{parsed.hostname}]"
        return f"{scheme}://{host}:{parsed.port or 19530}", token, parsed.path.strip("/")
    if parsed.scheme in ("", "file") and url.endswith(".db"):
        return (parsed.path if parsed.scheme == "file" else url), "", ""
    raise ConfigError(
        f"unsupported vector_url {mask_url(url)}: use milvus://host:19530 or a milvus-lite "
        "file path ending in .db"
    )


def _literal(text: str) -> str:
    """A Milvus string literal (double quotes, backslash escapes) for a filter expression."""
    return json.dumps(text, ensure_ascii=False)


def _missing(exc: Exception) -> bool:
    return any(m in str(exc).lower() for m in _MISSING)


def _released(exc: Exception) -> bool:
    return any(m in str(exc).lower() for m in _RELEASED)


class MilvusVectorStore:
    """Vectors in Milvus (cosine, HNSW); rows stay in SQL. Every call has a timeout.

    ``url`` is ``milvus://host:19530`` (a server) or a local ``*.db`` path (milvus-lite,
    embedded: the same client API, no server to start). ``partition_key`` None picks the
    mapping for the kind of Milvus (see the module docstring).
    """

    def __init__(
        self,
        url: str,
        *,
        collection: str = "modelcache",
        partition_key: bool | None = None,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 200,
        search_ef: int = 64,
        timeout: float = 10.0,
    ) -> None:
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:  # the optional extra is missing
            raise ConfigError(
                "the Milvus vector store needs pymilvus: pip install 'modelcache[milvus]'"
            ) from exc
        if not _NAME_OK.fullmatch(collection) or collection[0].isdigit():
            raise ConfigError(f"Milvus collection name must be letters, digits, _: {collection!r}")
        uri, token, db_name = milvus_uri(url)
        self._url = mask_url(url)
        self._prefix = collection
        local = not uri.startswith(("http://", "https://"))
        self._partition_key = partition_key if partition_key is not None else not local
        self._index = {"M": hnsw_m, "efConstruction": hnsw_ef_construction}
        self._ef = search_ef
        self._timeout = timeout
        try:
            self._client: Any = MilvusClient(uri=uri, token=token, db_name=db_name, timeout=timeout)
        except Exception as exc:
            raise BackendError(f"cannot open Milvus ({self._url}): {exc}") from exc
        self._ready: set[str] = set()  # Milvus collections known to exist
        self._lock = threading.Lock()

    # ---- names -----------------------------------------------------------------------------
    def _collection(self, partition: str) -> str:
        """The Milvus collection holding a partition's vectors."""
        if self._partition_key:
            return self._prefix
        if _NAME_OK.fullmatch(partition):
            return f"{self._prefix}_p_{partition}"
        return f"{self._prefix}_x_{partition.encode().hex()}"  # any other name, reversibly

    def _partition_of(self, name: str) -> str | None:
        for marker, decode in (("_p_", str), ("_x_", lambda s: bytes.fromhex(s).decode())):
            head = self._prefix + marker
            if name.startswith(head):
                try:
                    return decode(name[len(head) :])
                except ValueError:
                    return None
        return None

    @staticmethod
    def _pk(partition: str, entry_id: str) -> str:
        """Fixed-size, hex-only key: query_iterator pages with ``pk > "<last>"`` unescaped."""
        return hashlib.blake2b(f"{partition}\0{entry_id}".encode(), digest_size=16).hexdigest()

    def _where(self, partition: str) -> str:
        return f"{_PARTITION} == {_literal(partition)}" if self._partition_key else ""

    # ---- collections ------------------------------------------------------------------------
    def _create(self, name: str, dimension: int) -> None:
        """Create (idempotently) a cosine HNSW collection of the given dimension."""
        from pymilvus import DataType, MilvusClient

        with self._lock:
            if name in self._ready:
                return
            if not self._client.has_collection(name, timeout=self._timeout):
                schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field(_PK, DataType.VARCHAR, max_length=32, is_primary=True)
                schema.add_field(_ID, DataType.VARCHAR, max_length=_MAX_ID)
                schema.add_field(_VECTOR, DataType.FLOAT_VECTOR, dim=dimension)
                if self._partition_key:
                    schema.add_field(
                        _PARTITION, DataType.VARCHAR, max_length=_MAX_ID, is_partition_key=True
                    )
                index = self._client.prepare_index_params()
                index.add_index(
                    field_name=_VECTOR, index_type="HNSW", metric_type="COSINE", params=self._index
                )
                try:
                    self._client.create_collection(
                        name, schema=schema, index_params=index, timeout=self._timeout
                    )
                except Exception:
                    # another process may have created it in between: fine if it exists now
                    if not self._client.has_collection(name, timeout=self._timeout):
                        raise
            self._ready.add(name)

    def _exists(self, name: str) -> bool:
        """Whether a collection exists (asked once, then remembered until it is dropped)."""
        if name in self._ready:
            return True
        if not self._client.has_collection(name, timeout=self._timeout):
            return False
        self._ready.add(name)
        return True

    def _read(self, name: str, call: Callable[[], _T]) -> _T:
        """Run a read; a collection that is not loaded (a restarted server) is loaded once."""
        try:
            return call()
        except Exception as exc:
            if not _released(exc):
                raise
        log.info("modelcache: loading the Milvus collection %s", name)
        self._client.load_collection(name, timeout=self._timeout)
        return call()

    def create(self, collection: str) -> None:
        """Nothing to do up front: Milvus needs the dimension, so the first upsert creates."""

    # ---- writes ---------------------------------------------------------------------------
    def upsert(self, collection: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace vectors (recreating a collection dropped by another client)."""
        if not ids:
            return
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise BackendError(f"{len(ids)} ids need as many vectors, got shape {matrix.shape}")
        name = self._collection(collection)
        rows = []
        for i, entry_id in enumerate(ids):
            if len(entry_id.encode()) > _MAX_ID:
                raise BackendError(f"entry id longer than {_MAX_ID} bytes")
            row = {
                _PK: self._pk(collection, entry_id),
                _ID: entry_id,
                _VECTOR: matrix[i].tolist(),
            }
            if self._partition_key:
                row[_PARTITION] = collection
            rows.append(row)
        self._create(name, matrix.shape[1])
        try:
            self._write(name, rows)
        except Exception as exc:
            if not _missing(exc):
                raise BackendError(f"Milvus upsert failed: {exc}") from exc
            self._ready.discard(name)  # dropped elsewhere: recreate once and retry
            self._create(name, matrix.shape[1])
            self._write(name, rows)

    def _write(self, name: str, rows: list[dict[str, Any]]) -> None:
        for start in range(0, len(rows), _BATCH):
            self._client.upsert(name, rows[start : start + _BATCH], timeout=self._timeout)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Remove vectors; unknown ids are ignored."""
        if not ids:
            return
        name = self._collection(collection)
        keys = [self._pk(collection, i) for i in ids]
        try:
            for start in range(0, len(keys), _BATCH):
                self._client.delete(name, ids=keys[start : start + _BATCH], timeout=self._timeout)
        except Exception as exc:
            if not _missing(exc):
                raise

    def drop(self, collection: str) -> None:
        """Drop a partition: its rows of the shared collection, or its own collection."""
        name = self._collection(collection)
        try:
            if self._partition_key:
                self._client.delete(name, filter=self._where(collection), timeout=self._timeout)
            else:
                with self._lock:
                    self._ready.discard(name)
                    self._client.drop_collection(name, timeout=self._timeout)
        except Exception as exc:
            if not _missing(exc):
                raise

    # ---- reads ----------------------------------------------------------------------------
    def query(self, collection: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Nearest ids with cosine similarity (Milvus's COSINE score is the similarity)."""
        return [(i, sim) for i, sim, _ in self._search(collection, vector, k, with_vectors=False)]

    def query_vectors(
        self, collection: str, vector: np.ndarray, k: int
    ) -> list[tuple[str, float, np.ndarray]]:
        """Nearest ids with cosine similarity and their stored vectors."""
        return self._search(collection, vector, k, with_vectors=True)

    def _search(
        self, collection: str, vector: np.ndarray, k: int, with_vectors: bool
    ) -> list[tuple[str, float, np.ndarray]]:
        name = self._collection(collection)
        if not self._exists(name):
            return []
        try:
            res = self._read(
                name,
                lambda: self._client.search(
                    name,
                    data=[np.asarray(vector, dtype=np.float32).ravel().tolist()],
                    filter=self._where(collection),
                    limit=k,
                    output_fields=[_ID, _VECTOR] if with_vectors else [_ID],
                    search_params={"metric_type": "COSINE", "params": {"ef": max(self._ef, k)}},
                    timeout=self._timeout,
                ),
            )
        except Exception as exc:
            if _missing(exc):
                self._ready.discard(name)
                raise BackendError(f"the Milvus collection of {collection} is gone") from exc
            raise BackendError(f"Milvus search failed: {exc}") from exc
        hits = res[0] if res else []
        return [
            (
                h["entity"][_ID],
                min(1.0, max(-1.0, float(h["distance"]))),
                np.asarray(h["entity"][_VECTOR], dtype=np.float32) if with_vectors else _NONE,
            )
            for h in hits
        ]

    def _scan(self, name: str, where: str, field: str) -> Iterator[str]:
        """Every value of a field among the rows matching a filter, page by page."""
        pages = self._client.query_iterator(
            name,
            batch_size=_BATCH,
            filter=where or f'{_PK} != ""',
            output_fields=[field],
            timeout=self._timeout,
        )
        try:
            while True:
                page = pages.next()
                if not page:
                    return
                for row in page:
                    yield row[field]
        finally:
            pages.close()

    def ids(self, collection: str) -> list[str]:
        """Every id of a partition."""
        name = self._collection(collection)
        if not self._exists(name):
            return []
        try:
            return self._read(name, lambda: list(self._scan(name, self._where(collection), _ID)))
        except Exception as exc:
            if _missing(exc):
                return []
            raise

    def collections(self) -> list[str]:
        """Partitions that have vectors (with a partition key) or a collection (without)."""
        names = self._client.list_collections(timeout=self._timeout)
        if not self._partition_key:
            return [p for p in (self._partition_of(n) for n in names) if p is not None]
        if self._prefix not in names:
            return []
        return sorted(
            self._read(self._prefix, lambda: set(self._scan(self._prefix, "", _PARTITION)))
        )

    def close(self) -> None:
        """Close the client connection."""
        self._ready.clear()
        try:
            self._client.close()
        except Exception as exc:  # closing must never raise
            log.debug("closing the Milvus client: %r", exc)
