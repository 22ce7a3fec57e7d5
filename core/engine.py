"""The cache engine: lookup / insert / remove / clear / register / stats, and async twins.

Like Redis, it never calls an LLM: the caller looks up, and on a miss calls its model and
inserts the answer. Lookups fail open (a backend or embedding fault is a logged miss).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import CacheConfig
from .embedding import Embedder, build_embedder
from .errors import BackendError, ConfigError, IncompatibleCacheError, ModelCacheError
from .ranking import Acceptor, Candidate, encode_vector
from .request import Partition, Request, Scope, _canonical_json
from .storage import EntryRow, SQLStore
from .vectors import ChromaVectorStore, VectorStore

__all__ = ["Cache", "Hit", "IntegrityReport"]

log = logging.getLogger("modelcache")

_SCHEMA_VERSION = "1"
_FLUSH_EVERY = 64  # buffered hit updates before a write
_FLUSH_SECONDS = 2.0


@dataclass(frozen=True)
class Hit:
    """A cached answer returned by :meth:`Cache.lookup`."""

    answer: Any
    entry_id: str
    similarity: float
    kind: Literal["exact", "semantic"]
    matched_query: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        """True when the request repeated a stored one exactly."""
        return self.kind == "exact"


@dataclass(frozen=True)
class IntegrityReport:
    """Differences between the two stores; both lists empty means consistent."""

    rows_without_vector: list[str]
    vectors_without_row: list[str]

    @property
    def ok(self) -> bool:
        """True when SQL rows and vectors match one to one."""
        return not self.rows_without_vector and not self.vectors_without_row


class _Counters:
    """In-process lookup statistics (cheap: no writes on the lookup path)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, int] = dict.fromkeys(
            ("lookups", "hits", "exact_hits", "semantic_hits", "misses", "errors", "inserts"), 0
        )
        self.latencies: deque[float] = deque(maxlen=10_000)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for key, value in deltas.items():
                self.values[key] = self.values.get(key, 0) + value

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            values = dict(self.values)
            lat = np.fromiter(self.latencies, dtype=np.float64)
        values["hit_rate"] = values["hits"] / values["lookups"] if values["lookups"] else 0.0
        values["latency_ms_p50"] = float(np.percentile(lat, 50)) if lat.size else None
        values["latency_ms_p95"] = float(np.percentile(lat, 95)) if lat.size else None
        return values


class Cache:
    """A semantic cache over a vector store (Chroma) and a scalar store (SQL).

    >>> cache = Cache(CacheConfig(path="/tmp/mc"))          # doctest: +SKIP
    >>> cache.insert(Request.from_text("What is WAL?"), "Write-ahead logging ...")  # doctest: +SKIP
    >>> cache.lookup(Request.from_text("what's WAL?")).answer  # doctest: +SKIP
    """

    def __init__(
        self,
        config: CacheConfig | None = None,
        *,
        embedder: Embedder | None = None,
        verifier: Any | None = None,
        vector_store: VectorStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config if config is not None else CacheConfig()
        self._clock = clock
        cfg = self.config
        sql_url = cfg.sql_url or f"sqlite:///{Path(cfg.path or '.') / 'modelcache.db'}"
        self._sql = SQLStore(sql_url)
        if vector_store is None:
            chroma_path = (
                str(Path(cfg.path) / "chroma") if cfg.path and not cfg.chroma_url else None
            )
            vector_store = ChromaVectorStore(path=chroma_path, url=cfg.chroma_url)
        self._vectors = vector_store
        self._embedder = embedder or build_embedder(cfg.embedder, threads=cfg.torch_threads)
        self._check_settings()
        self._acceptor = Acceptor(cfg, self._embedder, verifier)
        self._counters = _Counters()
        self._hit_lock = threading.Lock()
        self._pending_hits: dict[str, tuple[int, float, float | None]] = {}
        self._last_flush = self._clock()
        self._known_partitions: set[str] = set()
        self._closed = False

    # ---- settings ------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The embedder in use."""
        return self._embedder

    def _check_settings(self) -> None:
        wanted = {
            "schema_version": _SCHEMA_VERSION,
            "embedder": self._embedder.name,
            "dimension": str(self._embedder.dimension),
            "metric": "cosine",
        }
        stored = self._sql.get_meta()
        for key, value in wanted.items():
            if key in stored and stored[key] != value:
                raise IncompatibleCacheError(
                    f"this cache was written with {key}={stored[key]!r} but is opened with "
                    f"{value!r}; open it with the same embedder or use a new path/database"
                )
        self._sql.set_meta(wanted)

    # ---- validation ------------------------------------------------------------------------
    def _validate(self, request: Request) -> None:
        if not isinstance(request, Request):
            raise ConfigError(f"expected a modelcache.Request, got {type(request).__name__}")
        if request.scope.env not in self.config.environments:
            raise ConfigError(
                f"unknown env {request.scope.env!r}; allowed: {', '.join(self.config.environments)}"
            )

    @staticmethod
    def _validate_threshold(threshold: float | None) -> None:
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")

    # ---- lookup ----------------------------------------------------------------------------
    def lookup(self, request: Request, *, threshold: float | None = None) -> Hit | None:
        """The cached answer for a request, or None; backend faults are logged misses."""
        self._validate(request)
        self._validate_threshold(threshold)
        started = time.perf_counter()
        try:
            hit = self._lookup(request, threshold)
        except Exception as exc:  # fail open: the caller's LLM call must go on
            log.warning("modelcache lookup failed, treated as a miss: %r", exc)
            self._counters.add(errors=1)
            hit = None
        elapsed_ms = (time.perf_counter() - started) * 1000
        self._counters.add(
            lookups=1,
            hits=int(hit is not None),
            misses=int(hit is None),
            exact_hits=int(hit is not None and hit.exact),
            semantic_hits=int(hit is not None and not hit.exact),
        )
        with self._counters.lock:
            self._counters.latencies.append(elapsed_ms)
        return hit

    def _lookup(self, request: Request, threshold: float | None) -> Hit | None:
        now = self._clock()
        partition = request.partition
        row = self._sql.get_live(request.exact_key, partition.id, now)
        if row is not None:
            answer = self._decode_answer(row)
            if answer is not _CORRUPT:
                self._note_hit(row, now)
                return self._hit(row, answer, 1.0, "exact")
        texts = [request.query_text]
        if request.context_text:
            texts.append(request.context_text)
        vectors = self._embedder.embed(texts)
        context_vector = vectors[1] if request.context_text else None
        recalled = self._vectors.query(partition.id, vectors[0], self.config.top_k)
        if not recalled:
            return None
        rows = self._sql.get_many([i for i, _ in recalled], partition.id)
        orphans = [i for i, _ in recalled if i not in rows]
        if orphans:
            self._drop_orphans(partition.id, orphans)
        candidates = [Candidate(rows[i], sim) for i, sim in recalled if i in rows]
        decoded: dict[str, Any] = {}

        def usable(entry: EntryRow) -> bool:
            if entry.expires_at is not None and entry.expires_at <= now:
                return False
            decoded[entry.id] = self._decode_answer(entry)
            return decoded[entry.id] is not _CORRUPT

        chosen = self._acceptor.choose(
            request,
            candidates,
            self._acceptor.threshold_for(request, threshold),
            context_vector,
            usable,
        )
        if chosen is None:
            return None
        self._note_hit(chosen.row, now)
        return self._hit(chosen.row, decoded[chosen.row.id], chosen.similarity, "semantic")

    @staticmethod
    def _hit(
        row: EntryRow, answer: Any, similarity: float, kind: Literal["exact", "semantic"]
    ) -> Hit:
        try:
            metadata = json.loads(row.metadata_json) if row.metadata_json else {}
        except ValueError:
            metadata = {}
        return Hit(
            answer=answer,
            entry_id=row.id,
            similarity=float(similarity),
            kind=kind,
            matched_query=row.query,
            metadata=metadata if isinstance(metadata, dict) else {},
        )

    @staticmethod
    def _decode_answer(row: EntryRow) -> Any:
        try:
            return json.loads(row.answer_json)
        except (TypeError, ValueError):
            log.warning("modelcache entry %s has a corrupt answer; ignored", row.id)
            return _CORRUPT

    def _drop_orphans(self, partition_id: str, ids: Sequence[str]) -> None:
        """Vectors whose row is gone (a crash between the two writes): ignore and delete."""
        log.info("modelcache removing %d orphan vectors from %s", len(ids), partition_id)
        try:
            self._vectors.delete(partition_id, ids)
        except Exception as exc:
            log.warning("modelcache could not remove orphan vectors: %r", exc)

    # ---- hit bookkeeping (buffered so that a lookup is not a write) -------------------------
    def _note_hit(self, row: EntryRow, now: float) -> None:
        expires = None
        if self.config.sliding_ttl and row.ttl is not None:
            expires = now + row.ttl
        with self._hit_lock:
            count, _, _ = self._pending_hits.get(row.id, (0, 0.0, None))
            self._pending_hits[row.id] = (count + 1, now, expires)
            due = (
                len(self._pending_hits) >= _FLUSH_EVERY or now - self._last_flush >= _FLUSH_SECONDS
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Write buffered hit counts and last-hit times to SQL."""
        with self._hit_lock:
            pending, self._pending_hits = self._pending_hits, {}
            self._last_flush = self._clock()
        try:
            self._sql.record_hits(pending)
        except Exception as exc:
            log.warning("modelcache could not record %d hits: %r", len(pending), exc)

    # ---- writes ---------------------------------------------------------------------------------
    def register(self, scope: Scope, system: str | None = None) -> str:
        """Create a partition up front (ModelCache's ``register``); returns its id."""
        request = Request(query="register", scope=scope, system=system)
        self._validate(request)
        self._ensure_partition(request.partition)
        return request.partition.id

    def _ensure_partition(self, partition: Partition) -> None:
        if partition.id in self._known_partitions:
            return
        try:
            self._sql.ensure_partition(partition, self._clock())
            self._vectors.create(partition.id)
        except ModelCacheError:
            raise
        except Exception as exc:
            raise BackendError(f"cannot create partition {partition.id}: {exc}") from exc
        self._known_partitions.add(partition.id)

    def insert(
        self,
        request: Request,
        answer: Any,
        *,
        ttl: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Store an answer (any JSON value); an exact repeat replaces. Returns the entry id."""
        return self.insert_many([(request, answer)], ttl=ttl, metadata=metadata)[0]

    def insert_many(
        self,
        items: Iterable[tuple[Request, Any]],
        *,
        ttl: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[str]:
        """Store many answers with batched embedding and writes (bulk loads)."""
        if ttl is not None and ttl <= 0:
            raise ConfigError("ttl must be positive seconds")
        items = list(items)
        now = self._clock()
        ttl = ttl if ttl is not None else self.config.ttl_seconds
        meta_json = _canonical_json(metadata or {}, "metadata")
        latest: dict[str, tuple[Request, str]] = {}
        for request, answer in items:
            self._validate(request)
            latest[request.exact_key] = (request, _canonical_json(answer, "the answer"))
        if not latest:
            return []
        unique = list(latest.values())
        try:
            for partition in {r.partition.id: r.partition for r, _ in unique}.values():
                self._ensure_partition(partition)
            queries = self._embedder.embed([r.query_text for r, _ in unique])
            contexts = [r.context_text for r, _ in unique if r.context_text]
            context_vecs = iter(self._embedder.embed(contexts)) if contexts else iter(())
            rows = [
                EntryRow(
                    id=r.exact_key,
                    partition_id=r.partition.id,
                    query=r.query_text,
                    history_json=_canonical_json(
                        [[m.role, m.content] for m in r.history], "history"
                    ),
                    context_text=r.context_text,
                    context_vector=encode_vector(next(context_vecs)) if r.context_text else None,
                    answer_json=answer_json,
                    metadata_json=meta_json,
                    answer_tokens=_estimate_tokens(answer_json),
                    created_at=now,
                    last_hit_at=now,
                    hit_count=0,
                    ttl=ttl,
                    expires_at=now + ttl if ttl is not None else None,
                )
                for r, answer_json in unique
            ]
            self._sql.upsert(rows)  # SQL first: a vector without its row is an ignored orphan
            by_partition: dict[str, list[int]] = {}
            for index, row in enumerate(rows):
                by_partition.setdefault(row.partition_id, []).append(index)
            for pid, indexes in by_partition.items():
                self._vectors.upsert(pid, [rows[i].id for i in indexes], queries[indexes])
        except ModelCacheError:
            raise
        except Exception as exc:
            raise BackendError(f"insert failed: {exc}") from exc
        self._counters.add(inserts=len(rows))
        ids_by_key = {row.id: row.id for row in rows}
        return [ids_by_key[r.exact_key] for r, _ in items]

    def remove(self, ids: Iterable[str]) -> int:
        """Delete entries by id from both stores; returns how many existed."""
        ids = [str(i) for i in ids]
        if not ids:
            return 0
        try:
            found = self._sql.delete_ids(ids)
            by_partition: dict[str, list[str]] = {}
            for entry_id, pid in found:
                by_partition.setdefault(pid, []).append(entry_id)
            for pid, pids in by_partition.items():
                self._vectors.delete(pid, pids)
        except Exception as exc:
            raise BackendError(f"remove failed: {exc}") from exc
        return len(found)

    def clear(
        self,
        *,
        tenant: str | None = None,
        env: str | None = None,
        model: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> int:
        """Drop every partition matching the given fields (all None: everything)."""
        if env is not None and env not in self.config.environments:
            raise ConfigError(f"unknown env {env!r}")
        params_json = _canonical_json(params, "params") if params is not None else None
        everything = tenant is None and env is None and model is None and params is None
        try:
            partitions = self._sql.find_partitions(tenant, env, model, params_json)
            ids = [p.id for p in partitions]
            deleted = self._sql.delete_partitions(ids)
            targets = set(ids)
            if everything:
                targets.update(self._vectors.collections())
            for pid in targets:
                self._vectors.drop(pid)
                self._known_partitions.discard(pid)
        except Exception as exc:
            raise BackendError(f"clear failed: {exc}") from exc
        with self._hit_lock:
            self._pending_hits.clear()
        return deleted

    # ---- observation --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters of this process plus entry and hit counts per partition from the store."""
        self.flush()
        counts = self._sql.partition_counts()
        partitions = []
        for p in self._sql.find_partitions():
            entries, hits = counts.get(p.id, (0, 0))
            partitions.append(
                {
                    "id": p.id,
                    "tenant": p.tenant,
                    "env": p.env,
                    "model": p.model,
                    "params": json.loads(p.params_json),
                    "entries": entries,
                    "hits": hits,
                }
            )
        return {
            "entries": sum(n for n, _ in counts.values()),
            "partitions": partitions,
            "embedder": self._embedder.name,
            **self._counters.snapshot(),
        }

    def export(self, *, tenant: str | None = None) -> Iterator[dict[str, Any]]:
        """Every stored entry as a JSON-able dict (partition fields, query, history, answer)."""
        from sqlmodel import col, select

        partitions = {p.id: p for p in self._sql.find_partitions(tenant=tenant)}
        ids = list(partitions)
        with self._sql.session() as s:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for row in s.exec(select(EntryRow).where(col(EntryRow.partition_id).in_(chunk))):
                    p = partitions[row.partition_id]
                    yield {
                        "id": row.id,
                        "tenant": p.tenant,
                        "env": p.env,
                        "model": p.model,
                        "params": json.loads(p.params_json),
                        "query": row.query,
                        "history": json.loads(row.history_json),
                        "answer": json.loads(row.answer_json),
                        "metadata": json.loads(row.metadata_json or "{}"),
                        "created_at": row.created_at,
                        "hit_count": row.hit_count,
                        "expires_at": row.expires_at,
                    }

    def check(self) -> IntegrityReport:
        """Compare SQL rows and vectors partition by partition (stress and recovery tests)."""
        rows_without, vectors_without = [], []
        pids = {p.id for p in self._sql.find_partitions()} | set(self._vectors.collections())
        for pid in sorted(pids):
            rows = set(self._sql.ids_of(pid))
            vecs = set(self._vectors.ids(pid))
            rows_without += sorted(rows - vecs)
            vectors_without += sorted(vecs - rows)
        return IntegrityReport(rows_without, vectors_without)

    def close(self) -> None:
        """Flush pending bookkeeping and release the stores."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        self._vectors.close()
        self._sql.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- async twins: the same implementation, run in a worker thread -----------------------
    async def alookup(self, request: Request, *, threshold: float | None = None) -> Hit | None:
        """Async :meth:`lookup`; the embedding runs in a worker thread, not on the loop."""
        return await asyncio.to_thread(self.lookup, request, threshold=threshold)

    async def ainsert(
        self,
        request: Request,
        answer: Any,
        *,
        ttl: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Async :meth:`insert`."""
        return await asyncio.to_thread(self.insert, request, answer, ttl=ttl, metadata=metadata)

    async def ainsert_many(
        self,
        items: Iterable[tuple[Request, Any]],
        *,
        ttl: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[str]:
        """Async :meth:`insert_many`."""
        return await asyncio.to_thread(self.insert_many, list(items), ttl=ttl, metadata=metadata)

    async def aremove(self, ids: Iterable[str]) -> int:
        """Async :meth:`remove`."""
        return await asyncio.to_thread(self.remove, list(ids))

    async def aclear(
        self,
        *,
        tenant: str | None = None,
        env: str | None = None,
        model: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> int:
        """Async :meth:`clear`."""
        return await asyncio.to_thread(
            self.clear, tenant=tenant, env=env, model=model, params=params
        )

    async def astats(self) -> dict[str, Any]:
        """Async :meth:`stats`."""
        return await asyncio.to_thread(self.stats)


_CORRUPT = object()


def _estimate_tokens(answer_json: str) -> int:
    """About four characters per token: enough for a savings estimate."""
    return max(1, len(answer_json) // 4)
