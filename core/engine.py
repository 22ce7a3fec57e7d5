"""The cache engine: lookup / insert / remove / clear / register / stats, and async twins.

Like Redis, it never calls an LLM: the caller looks up, and on a miss calls its model and
inserts the answer. Lookups fail open (a backend or embedding fault is a logged miss).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
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
from sqlmodel import func, select

from ._language import english_only, mostly_non_latin
from .config import CacheConfig
from .embedding import Embedder, Thresholds, build_embedder
from .errors import (
    BackendError,
    CacheClosedError,
    ConfigError,
    IncompatibleCacheError,
    ModelCacheError,
)
from .eviction import expired, victims
from .querylog import BackgroundWriter, iter_log, purge_log
from .ranking import (
    Acceptor,
    Candidate,
    ConversationVectors,
    decode_vector,
    encode_vector,
    query_part,
    recall_vector,
)
from .redact import describe_error, log_failure
from .request import Partition, Request, Scope, _canonical_json, stored_conversation_text
from .stats import CacheStats, PartitionStats
from .storage import EntryRow, SQLStore
from .storage.folder_lock import FolderLock
from .storage.models import PartitionRow
from .vectors import ChromaVectorStore, MilvusVectorStore, VectorStore

__all__ = ["Cache", "Hit", "IntegrityReport", "RepairReport"]

log = logging.getLogger("modelcache")

# 2: follow-up vectors carried their replies digest; 3: a follow-up's context vector embeds every
# earlier turn and its recall vector is query + context (see ranking.recall_vector)
_SCHEMA_VERSION = "3"
_PURGE_EVERY = 30.0  # seconds between lazy purges of expired entries
_PURGE_BATCH = 500
_RETENTION_EVERY = 3600.0  # seconds between query-log retention passes
_REPAIR_BATCH = 256  # rows re-embedded per batch by repair()
_INSERT_BATCH = 256  # entries embedded and written together by insert_many
_LOOKUP_WORKERS = 40  # anyio's default thread limit, which the server's lookups run under


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


@dataclass(frozen=True)
class RepairReport:
    """What :meth:`Cache.repair` did: vectors re-embedded, orphan vectors and collections
    dropped, and rows it could not repair (a corrupt history)."""

    reembedded: int
    orphans_dropped: int
    collections_dropped: int
    failed: list[str]


class _NoVectors:
    """Stand-in vector store of a cache whose Chroma could not be opened: exact-only."""

    def create(self, collection: str) -> None:
        return None

    def upsert(self, collection: str, ids: Sequence[str], vectors: Any) -> None:
        return None

    def query(self, collection: str, vector: Any, k: int) -> list[Any]:
        return []

    def query_vectors(self, collection: str, vector: Any, k: int) -> list[Any]:
        return []

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        return None

    def drop(self, collection: str) -> None:
        return None

    def ids(self, collection: str) -> list[str]:
        return []

    def collections(self) -> list[str]:
        return []

    def close(self) -> None:
        return None


class _DeadlineExceeded(BackendError):
    """A lookup ran past ``lookup_timeout`` in the stores."""


class _Budget:
    """A lookup's deadline: ``seconds`` in the stores. CPU work (embedding, the acceptance
    checks, the guard warming up or loading jieba) is not counted: the deadline is there for
    stuck backends, not for a busy machine."""

    def __init__(
        self, seconds: float, busy: Callable[[], list[tuple[float, float | None]]] | None = None
    ) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self._busy = busy  # (start, end or None) windows of background CPU work
        self._pauses: list[tuple[float, float]] = []
        self._paused_since: float | None = None

    def remaining(self) -> float:
        now = time.monotonic()
        windows = list(self._pauses)
        if self._paused_since is not None:
            windows.append((self._paused_since, now))
        for start, end in self._busy() if self._busy is not None else []:
            windows.append((max(start, self.started), now if end is None else end))
        return self.started + self.seconds + _covered(windows) - now

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside the block does not count against the deadline."""
        self._paused_since = time.monotonic()
        try:
            yield
        finally:
            self._pauses.append((self._paused_since, time.monotonic()))
            self._paused_since = None


def _covered(windows: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of (start, end) windows."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(windows):
        start = max(start, reach)
        if end > start:
            total += end - start
            reach = end
    return total


_COUNTERS = (
    "lookups",
    "hits",
    "exact_hits",
    "semantic_hits",
    "misses",
    "errors",
    "timeouts",
    "inserts",
    "evictions",
    "expirations",
)


class _Counters:
    """In-process statistics of one partition or of the whole cache (no writes on lookups)."""

    def __init__(self, window: int) -> None:
        self.values: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.latencies: deque[float] = deque(maxlen=window)

    def add(self, deltas: dict[str, int], latency_ms: float | None = None) -> None:
        for key, value in deltas.items():
            self.values[key] += value
        if latency_ms is not None:
            self.latencies.append(latency_ms)

    def snapshot(self) -> dict[str, Any]:
        values: dict[str, Any] = dict(self.values)
        lookups = values["lookups"]
        lat = np.fromiter(self.latencies, dtype=np.float64)
        values["hit_rate"] = values["hits"] / lookups if lookups else 0.0
        values["exact_hit_rate"] = values["exact_hits"] / lookups if lookups else 0.0
        values["semantic_hit_rate"] = values["semantic_hits"] / lookups if lookups else 0.0
        values["latency_ms_p50"] = float(np.percentile(lat, 50)) if lat.size else None
        values["latency_ms_p95"] = float(np.percentile(lat, 95)) if lat.size else None
        return values


class _Stats:
    """Overall and per-partition counters behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = _Counters(10_000)
        self.partitions: dict[str, _Counters] = {}

    def add(self, partition_id: str | None, latency_ms: float | None = None, **deltas: int) -> None:
        with self.lock:
            self.total.add(deltas, latency_ms)
            if partition_id is not None:
                counters = self.partitions.get(partition_id)
                if counters is None:
                    counters = self.partitions[partition_id] = _Counters(1_000)
                counters.add(deltas, latency_ms)

    def snapshot(self, partition_id: str | None = None) -> dict[str, Any]:
        with self.lock:
            if partition_id is None:
                return self.total.snapshot()
            return (self.partitions.get(partition_id) or _Counters(1)).snapshot()


class Cache:
    """A semantic cache over a vector store (Chroma or Milvus) and a scalar store (SQL).

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
        self._closed = True  # until every store is open: close() then has nothing to release
        self._lock: FolderLock | None = None
        sql: SQLStore | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.degraded: str | None = None
        """Why semantic lookups are off (the vector store could not be opened), else None."""
        embedded_chroma = (
            vector_store is None
            and cfg.path is not None
            and not cfg.chroma_url
            and not cfg.vector_url
        )
        try:
            if embedded_chroma:  # an embedded Chroma folder supports one process
                self._lock = FolderLock(cfg.path)  # type: ignore[arg-type]
            folder = Path(cfg.path or ".").resolve()
            sql_url = cfg.sql_url or f"sqlite:///{folder / 'modelcache.db'}"
            self._sql = sql = SQLStore(
                sql_url, timeout=cfg.sql_timeout, connect_timeout=cfg.sql_connect_timeout
            )
            if vector_store is None:
                vector_store = self._open_vectors()
            self._vectors = vector_store
            self._embedder = embedder or build_embedder(
                cfg.embedder,
                threads=cfg.torch_threads,
                backend=cfg.embedder_backend,
                onnx_cache_dir=cfg.onnx_cache_dir,
            )
            self._check_settings()
        except BaseException:
            if sql is not None:
                sql.close()
            if self._lock is not None:
                self._lock.release()
            raise
        self._closed = False
        self._acceptor = Acceptor(cfg, self._embedder, verifier)
        self._stats = _Stats()
        self._hit_lock = threading.Lock()
        self._pending_hits: dict[str, tuple[int, float, float | None]] = {}
        self._write_lock = threading.RLock()  # one eviction/purge pass at a time
        self._orphans: dict[str, set[str]] = {}  # met by lookups while a write was running
        self._next_purge = 0.0
        self._next_retention = 0.0
        self._language_warned = not english_only(self._embedder.name)
        self._pool_lock = threading.Lock()
        self._writer = BackgroundWriter(
            self._sql, queue_size=cfg.query_log_queue, periodic=self._maintain
        )

    def _open_vectors(self) -> VectorStore:
        """Milvus or Chroma as configured; a corrupt embedded Chroma starts the cache exact-only."""
        cfg = self.config
        if cfg.vector_url is not None:
            return MilvusVectorStore(
                cfg.vector_url,
                collection=cfg.milvus_collection,
                partition_key=cfg.milvus_partition_key,
                hnsw_m=cfg.milvus_hnsw_m,
                hnsw_ef_construction=cfg.milvus_hnsw_ef_construction,
                search_ef=cfg.milvus_search_ef,
                timeout=cfg.milvus_timeout,
            )
        # Absolute: Chroma shares one client per folder name in a process, so a relative name
        # reused after a change of directory would reach the first directory's store.
        chroma_path = (
            str(Path(cfg.path).resolve() / "chroma") if cfg.path and not cfg.chroma_url else None
        )
        if chroma_path is None and not cfg.chroma_url:
            log.warning(
                "modelcache: no path and no chroma_url: vectors live in memory and are lost "
                "when the process ends (rows stay in the SQL store)"
            )
        try:
            return ChromaVectorStore(path=chroma_path, url=cfg.chroma_url)
        except BackendError as exc:
            if chroma_path is None:
                raise  # a Chroma server that is down: the caller must know at start-up
            self.degraded = f"vector store unavailable: {exc}"
            log.error(
                "modelcache: cannot open the Chroma folder %s (%s); starting DEGRADED: exact "
                "lookups only, new entries get no vectors. Restore or move the folder away, "
                "then run `modelcache repair` to re-embed the entries.",
                chroma_path,
                exc,
            )
            return _NoVectors()

    # ---- settings ------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The embedder in use."""
        return self._embedder

    @property
    def thresholds(self) -> Thresholds:
        """Thresholds in force: the config's where set, else the embedder's calibrated ones."""
        return self._acceptor.thresholds

    def _check_settings(self) -> None:
        wanted = {
            "schema_version": _SCHEMA_VERSION,
            "embedder": self._embedder.name,
            "dimension": str(self._embedder.dimension),
            "metric": "cosine",
        }
        stored = self._sql.get_meta()
        if (
            stored.get("schema_version") in ("1", "2")
            and stored.get("embedder") == self._embedder.name
        ):
            self._upgrade_conversations()
            self._sql.replace_meta("schema_version", _SCHEMA_VERSION)
            stored["schema_version"] = _SCHEMA_VERSION
        for key, value in wanted.items():
            if key in stored and stored[key] != value:
                raise IncompatibleCacheError(
                    f"this cache was written with {key}={stored[key]!r} but is opened with "
                    f"{value!r}; open it with the same embedder or use a new path/database"
                )
        self._sql.set_meta(wanted)

    def _upgrade_conversations(self) -> None:
        """Upgrade a version-1/2 store: re-embed each follow-up's context (every earlier turn,
        not the user turns only) and store its recall vector (query + context)."""
        by_partition: dict[str, list[str]] = {}
        for entry_id, partition_id, _ in self._sql.histories():
            by_partition.setdefault(partition_id, []).append(entry_id)
        upgraded = 0
        for partition_id, ids in by_partition.items():
            for start in range(0, len(ids), _PURGE_BATCH):
                rows = list(
                    self._sql.get_many(ids[start : start + _PURGE_BATCH], partition_id).values()
                )
                texts: list[str] = []
                for row in rows:
                    try:
                        texts.append(stored_conversation_text(row.history_json))
                    except ValueError:
                        texts.append("")  # a corrupt row: its lookups miss, as before
                keep = [(row, text) for row, text in zip(rows, texts, strict=True) if text]
                if not keep:
                    continue
                queries = self._embedder.embed([row.query for row, _ in keep])
                contexts = self._embedder.embed([text for _, text in keep])
                self._sql.upsert(
                    [
                        EntryRow.model_construct(
                            **{**row.model_dump(), "context_vector": encode_vector(context)}
                        )
                        for (row, _), context in zip(keep, contexts, strict=True)
                    ]
                )
                self._vectors.upsert(
                    partition_id,
                    [row.id for row, _ in keep],
                    np.stack([recall_vector(q, c) for q, c in zip(queries, contexts, strict=True)]),
                )
                upgraded += len(keep)
        log.info(
            "modelcache: upgraded the store to schema %s (%d follow-ups)", _SCHEMA_VERSION, upgraded
        )

    # ---- validation ------------------------------------------------------------------------
    def _validate(self, request: Request) -> None:
        if not isinstance(request, Request):
            raise ConfigError(f"expected a modelcache.Request, got {type(request).__name__}")
        if request.scope.env not in self.config.environments:
            raise ConfigError(
                f"unknown env {request.scope.env!r}; allowed: {', '.join(self.config.environments)}"
            )
        if len(request.scope.params_json) > self.config.max_params_chars:
            raise ConfigError(
                f"scope params are longer than {self.config.max_params_chars} characters (JSON)"
            )

    def _check_partition_cap(self, partitions: Iterable[Partition]) -> None:
        """Refuse to create partitions beyond a tenant's cap: each one costs a collection.

        Checked per write against the store (every process's partitions count); two processes
        creating the last ones at the same moment may pass the cap by a few.
        """
        cap = self.config.max_partitions_per_tenant
        if cap is None:
            return
        by_tenant: dict[str, set[str]] = {}
        for partition in partitions:
            by_tenant.setdefault(partition.tenant, set()).add(partition.id)
        try:
            with self._sql.session() as s:
                for tenant, ids in by_tenant.items():
                    new = [i for i in ids if s.get(PartitionRow, i) is None]
                    if not new:
                        continue
                    stmt = select(func.count()).select_from(PartitionRow)
                    held = int(s.exec(stmt.where(PartitionRow.tenant == tenant)).one())
                    if held + len(new) > cap:
                        raise ConfigError(
                            f"this tenant already has {held} partitions, the cap is {cap} "
                            "(max_partitions_per_tenant); clear unused ones or raise the cap"
                        )
        except ModelCacheError:
            raise
        except Exception as exc:
            raise BackendError(f"partition cap check failed: {describe_error(exc)}") from exc

    def _checked(self, vectors: Any, count: int) -> np.ndarray:
        """Embeddings as a (count, dimension) finite matrix, or BackendError before any write."""
        array = np.asarray(vectors, dtype=np.float32)
        expected = (count, self._embedder.dimension)
        if array.shape != expected:
            raise BackendError(f"the embedder returned shape {array.shape}, expected {expected}")
        if not np.isfinite(array).all():
            raise BackendError("the embedder returned non-finite values (NaN or infinity)")
        return array

    @staticmethod
    def _validate_threshold(threshold: float | None) -> None:
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")

    def _check_open(self) -> None:
        if self._closed:
            raise CacheClosedError(
                "this Cache is closed; open a new Cache(config) to use the stores again"
            )

    # ---- lookup ----------------------------------------------------------------------------
    def lookup(
        self, request: Request, *, threshold: float | None = None, exact_only: bool = False
    ) -> Hit | None:
        """The cached answer for a request, or None; backend faults are logged misses.

        ``exact_only`` skips the embedding and the semantic path (e.g. agent turns that follow
        a tool result, whose answer depends on that result). A lookup after :meth:`close` is a
        programming error, not a backend fault: it raises :class:`CacheClosedError`.
        """
        self._check_open()
        self._validate(request)
        self._validate_threshold(threshold)
        started = time.perf_counter()
        errors = timeouts = 0
        try:
            exact_only = exact_only or self.degraded is not None
            hit = self._lookup_within_deadline(request, threshold, exact_only)
        except _DeadlineExceeded as exc:  # a slow or hung store: counted apart from faults
            log.warning("modelcache lookup treated as a miss: %s", exc)
            timeouts, hit = 1, None
        except Exception as exc:  # fail open: the caller's LLM call must go on
            log_failure(log, "modelcache lookup failed, treated as a miss", exc)
            errors, hit = 1, None
        elapsed_ms = (time.perf_counter() - started) * 1000
        self._stats.add(
            request.partition.id,
            elapsed_ms,
            lookups=1,
            hits=int(hit is not None),
            misses=int(hit is None),
            exact_hits=int(hit is not None and hit.exact),
            semantic_hits=int(hit is not None and not hit.exact),
            errors=errors,
            timeouts=timeouts,
        )
        if self.config.query_log:
            self._log("lookup", request, elapsed_ms, hit)
        return hit

    def _log(self, op: str, request: Request, elapsed_ms: float, hit: Hit | None = None) -> None:
        p = request.partition
        self._writer.record(
            {
                "at": self._clock(),
                "op": op,
                "partition_id": p.id,
                "tenant": p.tenant,
                "model": p.model,
                "query": request.query_text,
                "hit": hit is not None,
                "kind": hit.kind if hit else None,
                "similarity": hit.similarity if hit else None,
                "entry_id": hit.entry_id if hit else None,
                "matched_query": hit.matched_query if hit else None,
                "latency_ms": elapsed_ms,
            }
        )

    def _lookup_within_deadline(
        self, request: Request, threshold: float | None, exact_only: bool
    ) -> Hit | None:
        """Run the lookup in a worker and give up on it at the deadline (a hung database).

        The abandoned worker ends when the SQL call's own timeout fires; the caller goes on
        to its LLM at once.
        """
        seconds = self.config.lookup_timeout
        if seconds is None:
            return self._lookup(request, threshold, exact_only, None)
        budget = _Budget(seconds, self._acceptor.warm_up_windows)
        future = self._lookup_pool().submit(self._lookup, request, threshold, exact_only, budget)
        while True:
            try:
                return future.result(timeout=max(0.0, budget.remaining()))
            except concurrent.futures.TimeoutError:
                if budget.remaining() > 0:  # the embedding ran meanwhile: its time is free
                    continue
                future.cancel()
                raise _DeadlineExceeded(
                    f"lookup exceeded lookup_timeout={seconds}s in the stores"
                ) from None

    def _lookup_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    # mostly waiting on I/O; as many as a server's request threads, so that
                    # queueing for a worker does not eat the deadline
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=_LOOKUP_WORKERS, thread_name_prefix="modelcache-lookup"
                    )
        return self._pool

    def _lookup(
        self,
        request: Request,
        threshold: float | None,
        exact_only: bool,
        budget: _Budget | None,
    ) -> Hit | None:
        now = self._clock()
        partition = request.partition
        row = self._sql.get_live(request.exact_key, partition.id, now)
        if row is not None:
            answer = self._decode_answer(row)
            if answer is not _CORRUPT:
                self._note_hit(row, now)
                return self._hit(row, answer, 1.0, "exact")
        if exact_only:
            return None
        estimate = (
            None if request.conversation_text else self._acceptor.estimate(request.query_text)
        )
        conv = (
            ConversationVectors(estimate)
            if estimate is not None
            else self._embed_request(request, budget)
        )
        # a follow-up recalls by query + context, so the same short follow-up stored in many
        # conversations does not crowd this one's entry out of the top-k; a standalone
        # question after unrelated turns also recalls by its query alone
        if budget is not None and not getattr(self._vectors, "is_open", True):
            with budget.paused():  # a lazily opened store (import, files) is not a stuck one
                self._vectors.open()  # type: ignore[attr-defined]
        recalled = self._vectors.query_vectors(
            partition.id,
            recall_vector(conv.query, conv.context),
            self.config.top_k * (1 if estimate is None else 2),
        )
        if conv.standalone:
            seen = {i for i, _, _ in recalled}
            recalled += [
                hit
                for hit in self._vectors.query_vectors(partition.id, conv.query, self.config.top_k)
                if hit[0] not in seen
            ]
        if not recalled:
            return None
        rows = self._sql.get_many([i for i, _, _ in recalled], partition.id)
        orphans = [i for i, _, _ in recalled if i not in rows]
        if orphans:
            self._drop_orphans(partition.id, orphans)
        if estimate is not None:
            # a long prompt recalled by its memoised chunks: one model call embeds the rest with
            # the parts the long-text check compares, then the exact vector ranks the recall
            with budget.paused() if budget is not None else contextlib.nullcontext():
                conv = ConversationVectors(
                    self._acceptor.embed_long(
                        request.query_text, [rows[i].query for i, _, _ in recalled if i in rows]
                    )
                )
            recalled = sorted(recalled, key=lambda hit: -float(np.dot(conv.query, hit[2])))
            recalled = recalled[: self.config.top_k]
        candidates = [
            Candidate(rows[i], _query_similarity(conv.query, stored, rows[i]))
            for i, _, stored in recalled
            if i in rows
        ]
        decoded: dict[str, Any] = {}

        def usable(entry: EntryRow) -> bool:
            if entry.expires_at is not None and entry.expires_at <= now:
                return False
            decoded[entry.id] = self._decode_answer(entry)
            return decoded[entry.id] is not _CORRUPT

        with budget.paused() if budget is not None else contextlib.nullcontext():
            chosen = self._acceptor.choose(
                request,
                candidates,
                self._acceptor.threshold_for(request, threshold),
                conv,
                usable,
            )
        if chosen is None:
            return None
        self._note_hit(chosen.row, now)
        return self._hit(chosen.row, decoded[chosen.row.id], chosen.similarity, "semantic")

    def _embed_request(self, request: Request, budget: _Budget | None) -> ConversationVectors:
        """The query and, for a follow-up, every earlier turn, embedded in one batch (time
        the lookup deadline does not count)."""
        texts = [request.query_text]
        if request.conversation_text:
            texts.append(request.conversation_text)
        with budget.paused() if budget is not None else contextlib.nullcontext():
            vectors = self._embedder.embed(texts)
        if len(texts) == 1:
            return ConversationVectors(vectors[0])
        query, context = vectors[0], vectors[1]
        return ConversationVectors(
            query, context, self._acceptor.is_standalone(request, query, context)
        )

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

    def _decode_answer(self, row: EntryRow) -> Any:
        try:
            return json.loads(row.answer_json)
        except (TypeError, ValueError):
            log.warning("modelcache entry %s has a corrupt answer; ignored", row.id)
            self._stats.add(row.partition_id, errors=1)
            return _CORRUPT

    def _drop_orphans(self, partition_id: str, ids: Sequence[str]) -> None:
        """Vectors whose row is gone (a crash between the two writes): ignore and delete.

        An insert writes its vector just before its row: under the write lock, inserts of
        this process have finished, and a row that exists by then is no orphan. A lookup never
        waits for that lock: while a write holds it, the ids are left to the background pass.
        """
        with self._hit_lock:
            self._orphans.setdefault(partition_id, set()).update(ids)
        if self._write_lock.acquire(blocking=False):
            try:
                self._clean_orphans()
            finally:
                self._write_lock.release()

    def _clean_orphans(self) -> None:
        """Delete the noted orphan vectors whose row still does not exist (write lock held)."""
        with self._hit_lock:
            noted, self._orphans = self._orphans, {}
        for partition_id, ids in sorted(noted.items()):
            try:
                gone = sorted(ids - {i for i, _ in self._sql.locate(sorted(ids))})
                if gone:
                    log.info("modelcache removing %d orphan vectors of %s", len(gone), partition_id)
                    self._vectors.delete(partition_id, gone)
            except Exception as exc:
                log_failure(log, "modelcache could not remove orphan vectors", exc)

    # ---- deferred bookkeeping: a lookup only touches memory -----------------------------------
    def _note_hit(self, row: EntryRow, now: float) -> None:
        if not self.config.track_hits:
            return
        expires = now + row.ttl if self.config.sliding_ttl and row.ttl is not None else None
        with self._hit_lock:
            count, _, _ = self._pending_hits.get(row.id, (0, 0.0, None))
            self._pending_hits[row.id] = (count + 1, now, expires)

    def _write_hits(self) -> None:
        with self._hit_lock:
            pending, self._pending_hits = self._pending_hits, {}
        try:
            self._sql.record_hits(pending)
        except Exception as exc:
            log_failure(log, f"modelcache could not record {len(pending)} hits", exc)

    def _maintain(self) -> None:
        """Background pass: hit counts, orphan vectors, lazy purge of expired entries, log
        retention."""
        self._write_hits()
        if self._orphans:
            with self._write_lock:
                self._clean_orphans()
        now = self._clock()
        if now >= self._next_purge:
            self._next_purge = now + _PURGE_EVERY
            self._purge_batch(now)
        retention = self.config.query_log_retention_days
        if retention is not None and now >= self._next_retention:
            self._next_retention = now + _RETENTION_EVERY
            purge_log(self._sql, now - retention * 86400)

    def flush(self) -> None:
        """Write buffered hit counts and queued log rows now."""
        self._check_open()
        self._writer.run_once()

    def _purge_batch(self, now: float) -> int:
        with self._write_lock:
            gone = expired(self._sql, now, _PURGE_BATCH)
            self._delete_entries(gone)
        self._stats.add(None, expirations=len(gone))
        return len(gone)

    def purge_expired(self) -> int:
        """Delete every expired entry from both stores; returns how many."""
        self._check_open()
        total = 0
        while n := self._purge_batch(self._clock()):
            total += n
        return total

    def _delete_entries(self, entries: Sequence[tuple[str, str]]) -> None:
        """Delete (id, partition) entries: rows first, then vectors.

        The row is the entry: once it is gone nothing serves it, and a vector delete that
        fails after it leaves orphan vectors, which lookups ignore and delete (and ``repair``
        drops). The other order could leave a row served by exact lookups after a failure.
        An insert of the same key by another process may land between the two deletes; its
        row is then found again afterwards and its vector written back.
        """
        if not entries:
            return
        self._sql.delete_ids([entry_id for entry_id, _ in entries])
        by_partition: dict[str, list[str]] = {}
        for entry_id, pid in entries:
            by_partition.setdefault(pid, []).append(entry_id)
        deleted: list[str] = []
        for pid, ids in sorted(by_partition.items()):
            try:
                self._vectors.delete(pid, ids)
                deleted += ids
            except Exception as exc:  # orphans are harmless: ignored by lookups, repaired
                log_failure(log, f"modelcache: {len(ids)} orphan vectors left in {pid}", exc)
        try:
            reinserted: dict[str, list[str]] = {}
            for entry_id, pid in self._sql.locate(deleted):
                reinserted.setdefault(pid, []).append(entry_id)
            for pid, ids in sorted(reinserted.items()):
                self._reembed(pid, ids)
        except Exception as exc:  # the remove itself succeeded; `repair` finishes the job
            log_failure(log, "modelcache: could not restore vectors of re-inserted entries", exc)

    def _evict(self, partition_ids: Iterable[str], protect: Sequence[str]) -> None:
        cfg = self.config
        if cfg.eviction == "none" or (
            cfg.max_entries_per_partition is None and not cfg.max_entries
        ):
            return
        self._write_hits()  # LRU/LFU order must see the latest hits
        scopes: list[tuple[int, str | None]] = []
        if cfg.max_entries_per_partition is not None:
            scopes += [(cfg.max_entries_per_partition, pid) for pid in partition_ids]
        if cfg.max_entries is not None:
            scopes.append((cfg.max_entries, None))
        gone: list[tuple[str, str]] = []
        with self._write_lock:
            for capacity, pid in scopes:  # each pass sees the deletions of the one before
                batch = victims(self._sql, cfg.eviction, capacity, cfg.low_water, pid, protect)
                self._delete_entries(batch)
                gone += batch
        for _, pid in gone:
            self._stats.add(pid, evictions=1)

    # ---- writes ---------------------------------------------------------------------------------
    def register(self, scope: Scope, system: str | None = None) -> str:
        """Create a partition up front (ModelCache's ``register``); returns its id."""
        self._check_open()
        request = Request(query="register", scope=scope, system=system)
        self._validate(request)
        self._check_partition_cap([request.partition])
        self._ensure_partition(request.partition)
        return request.partition.id

    def has_partition(self, scope: Scope, system: str | None = None) -> bool:
        """Whether the partition of a scope and system prompt exists in the store."""
        self._check_open()
        partition = Request(query="register", scope=scope, system=system).partition
        try:
            rows = self._sql.find_partitions(
                tenant=scope.tenant, env=scope.env, model=scope.model, params_json=scope.params_json
            )
        except Exception as exc:
            raise BackendError(f"partition lookup failed: {describe_error(exc)}") from exc
        return any(row.id == partition.id for row in rows)

    def _ensure_partition(self, partition: Partition) -> None:
        """Create the partition's row and collection; re-checked on every write, since another
        process may have cleared it (one primary-key read)."""
        try:
            self._sql.ensure_partition(partition, self._clock())
            self._vectors.create(partition.id)
        except ModelCacheError:
            raise
        except Exception as exc:
            raise BackendError(
                f"cannot create partition {partition.id}: {describe_error(exc)}"
            ) from exc

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
        progress: Callable[[int, int], None] | None = None,
        batch_size: int = _INSERT_BATCH,
    ) -> list[str]:
        """Store many answers with batched embedding and writes (bulk loads).

        Entries are embedded and written in batches of ``batch_size``, each batch's writes
        overlapping the next batch's embedding; ``progress(stored, total)`` is called as each
        batch is written, and a failure leaves the earlier batches stored (a re-run finishes).
        """
        self._check_open()
        if ttl is not None and ttl <= 0:
            raise ConfigError("ttl must be positive seconds")
        if batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
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
        self._check_partition_cap(r.partition for r, _ in unique)
        if not self._language_warned and any(mostly_non_latin(r.query_text) for r, _ in unique):
            self._language_warned = True  # once per cache; the text itself is never logged
            log.warning(
                "text mostly outside the Latin script (e.g. Chinese) was inserted, but the "
                "embedder %s is English-only: its paraphrases will mostly miss; use "
                "embedder='multilingual' for Chinese or mixed traffic",
                self._embedder.name,
            )
        batches = [unique[s : s + batch_size] for s in range(0, len(unique), batch_size)]
        stored = 0

        def write(rows: list[EntryRow], vectors: np.ndarray, partitions: list[Partition]) -> None:
            nonlocal stored
            self._write_rows(rows, vectors, partitions, now)
            stored += len(rows)
            if progress is not None:
                progress(stored, len(unique))

        try:
            if len(batches) == 1:
                write(*self._prepare_rows(batches[0], now, ttl, meta_json))
            else:  # the writer thread stores batch k while batch k + 1 is embedded
                with concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="modelcache-insert"
                ) as writer:
                    pending: concurrent.futures.Future[None] | None = None
                    for batch in batches:
                        prepared = self._prepare_rows(batch, now, ttl, meta_json)
                        if pending is not None:
                            pending.result()
                        pending = writer.submit(write, *prepared)
                    if pending is not None:
                        pending.result()
        except ModelCacheError:
            raise
        except Exception as exc:
            raise BackendError(f"insert failed: {describe_error(exc)}") from exc
        if self.config.query_log:
            for r, _ in unique:
                self._log("insert", r, 0.0)
        return [r.exact_key for r, _ in items]

    def stored(
        self,
        items: Iterable[tuple[Request, Any]],
        *,
        ttl: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> set[str]:
        """Exact keys of the items already stored, live, with the same answer, metadata and ttl.

        Inserting those again would change nothing but their age and hit count, so a bulk load
        that was interrupted skips them when it is run again.
        """
        self._check_open()
        ttl = ttl if ttl is not None else self.config.ttl_seconds
        meta_json = _canonical_json(metadata or {}, "metadata")
        wanted = {r.exact_key: _canonical_json(a, "the answer") for r, a in items}
        try:
            found = self._sql.stored_answers(list(wanted), self._clock())
        except Exception as exc:
            raise BackendError(f"stored-entry check failed: {describe_error(exc)}") from exc
        return {
            key
            for key, (answer_json, stored_meta, stored_ttl) in found.items()
            if answer_json == wanted[key] and stored_meta == meta_json and stored_ttl == ttl
        }

    def _prepare_rows(
        self,
        batch: Sequence[tuple[Request, str]],
        now: float,
        ttl: float | None,
        meta_json: str,
    ) -> tuple[list[EntryRow], np.ndarray, list[Partition]]:
        """Rows, recall vectors and partitions of (request, answer JSON) pairs: the embedding."""
        queries = self._checked(
            self._acceptor.embed_stored([r.query_text for r, _ in batch]), len(batch)
        )
        contexts = [r.conversation_text for r, _ in batch if r.conversation_text]
        context_vecs = (
            iter(self._checked(self._embedder.embed(contexts), len(contexts)))
            if contexts
            else iter(())
        )
        context_of = [next(context_vecs) if r.conversation_text else None for r, _ in batch]
        rows = [  # the values are built here, so the model's per-field validation is skipped
            EntryRow.model_construct(
                id=r.exact_key,
                partition_id=r.partition.id,
                query=r.query_text,
                history_json=_canonical_json([[m.role, m.content] for m in r.history], "history"),
                context_text=r.context_text,
                context_vector=None if ctx is None else encode_vector(ctx),
                attachments=r.attachment_digest,
                answer_json=answer_json,
                metadata_json=meta_json,
                answer_tokens=_estimate_tokens(answer_json),
                created_at=now,
                last_hit_at=now,
                hit_count=0,
                ttl=ttl,
                expires_at=now + ttl if ttl is not None else None,
            )
            for (r, answer_json), ctx in zip(batch, context_of, strict=True)
        ]
        vectors = np.stack(
            [recall_vector(q, ctx) for q, ctx in zip(queries, context_of, strict=True)]
        )
        return rows, vectors, list({r.partition.id: r.partition for r, _ in batch}.values())

    def _write_rows(
        self, rows: list[EntryRow], vectors: np.ndarray, partitions: list[Partition], now: float
    ) -> None:
        """Store one batch: its vectors first, then its rows (with their partitions)."""
        by_partition: dict[str, list[int]] = {}
        for index, row in enumerate(rows):
            by_partition.setdefault(row.partition_id, []).append(index)
        with self._write_lock:  # a remove of the same key in this process waits
            # Vectors first, then the rows: a crash or failure in between leaves orphan
            # vectors (ignored by lookups, dropped by repair), never an acknowledged row
            # without its vector. An entry's vector depends only on its id's texts, so
            # rewriting it for an existing entry changes nothing.
            for pid, indexes in sorted(by_partition.items()):
                self._vectors.upsert(pid, [rows[i].id for i in indexes], vectors[indexes])
            self._sql.upsert(rows, partitions, now)  # with the partition rows, one transaction
        self._evict(by_partition, [row.id for row in rows][:_PURGE_BATCH])
        for row in rows:
            self._stats.add(row.partition_id, inserts=1)

    def remove(
        self, ids: Iterable[str], *, tenant: str | None = None, model: str | None = None
    ) -> int:
        """Delete entries by id from both stores; returns how many existed.

        With ``tenant`` / ``model``, ids of entries outside them are left alone (multi-tenant
        front ends).
        """
        self._check_open()
        ids = [str(i) for i in ids]
        if not ids:
            return 0
        try:
            with self._write_lock:
                found = self._sql.locate(ids)
                if tenant is not None or model is not None:
                    owned = {p.id for p in self._sql.find_partitions(tenant=tenant, model=model)}
                    found = [(i, pid) for i, pid in found if pid in owned]
                self._delete_entries(found)
        except Exception as exc:
            raise BackendError(f"remove failed: {describe_error(exc)}") from exc
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
        self._check_open()
        if env is not None and env not in self.config.environments:
            raise ConfigError(f"unknown env {env!r}")
        params_json = _canonical_json(params, "params") if params is not None else None
        everything = tenant is None and env is None and model is None and params is None
        try:
            partitions = self._sql.find_partitions(tenant, env, model, params_json)
            ids = [p.id for p in partitions]
            targets = set(ids)
            if everything:
                targets.update(self._sql.entry_partitions())
                targets.update(self._vectors.collections())
                deleted = self._sql.delete_all()
            else:
                deleted = self._sql.delete_partitions(ids)
            for pid in targets:
                self._vectors.drop(pid)
        except Exception as exc:
            raise BackendError(f"clear failed: {describe_error(exc)}") from exc
        return deleted

    # ---- observation --------------------------------------------------------------------------
    def stats(self) -> CacheStats:
        """Overall and per-partition statistics (a typed result that also reads like a dict).

        Entries, stored hit counts and tokens saved come from the store (every process);
        lookups, misses, hit kinds, latency, evictions and expirations are this process's.
        """
        self._check_open()
        self.flush()
        try:
            counts = self._sql.partition_counts()
            stored = self._sql.find_partitions()
        except ModelCacheError:
            raise
        except Exception as exc:  # an outage is a BackendError (503), not a raw driver error
            raise BackendError(f"stats failed: {describe_error(exc)}") from exc
        price = self.config.token_price_per_1k / 1000
        partitions = []
        for p in stored:
            entries, hits, tokens = counts.get(p.id, (0, 0, 0))
            partitions.append(
                PartitionStats(
                    id=p.id,
                    tenant=p.tenant,
                    env=p.env,
                    model=p.model,
                    params=json.loads(p.params_json),
                    entries=entries,
                    stored_hits=hits,
                    tokens_saved=tokens,
                    cost_saved=tokens * price,
                    **self._stats.snapshot(p.id),
                )
            )
        tokens = sum(t for _, _, t in counts.values())
        return CacheStats(
            entries=sum(n for n, _, _ in counts.values()),
            stored_hits=sum(h for _, h, _ in counts.values()),
            tokens_saved=tokens,
            cost_saved=tokens * price,
            embedder=self._embedder.name,
            log_written=self._writer.written,
            log_dropped=self._writer.dropped,
            log_pending=self._writer.pending(),
            partitions=tuple(partitions),
            **self._stats.snapshot(),
        )

    def export_log(self, *, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Query-log rows (oldest first) as dicts: mine them for labelled pairs."""
        self._check_open()
        self.flush()
        return iter_log(self._sql, since)

    def export(self, *, tenant: str | None = None) -> Iterator[dict[str, Any]]:
        """Every stored entry as a JSON-able dict (partition fields, query, history, answer)."""
        from sqlmodel import col, select

        self._check_open()
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
                        "system": p.system or None,
                        "query": row.query,
                        "history": json.loads(row.history_json),
                        "answer": json.loads(row.answer_json),
                        "metadata": json.loads(row.metadata_json or "{}"),
                        "created_at": row.created_at,
                        "hit_count": row.hit_count,
                        "ttl": row.ttl,
                        "expires_at": row.expires_at,
                    }

    def check(self) -> IntegrityReport:
        """Compare SQL rows and vectors partition by partition (stress and recovery tests)."""
        self._check_open()
        rows_without, vectors_without = [], []
        pids = (
            {p.id for p in self._sql.find_partitions()}
            | set(self._sql.entry_partitions())
            | set(self._vectors.collections())
        )
        for pid in sorted(pids):
            rows = set(self._sql.ids_of(pid))
            vecs = set(self._vectors.ids(pid))
            rows_without += sorted(rows - vecs)
            vectors_without += sorted(vecs - rows)
        return IntegrityReport(rows_without, vectors_without)

    def ready(self, timeout: float = 1.0) -> dict[str, Any]:
        """Probe both stores within ``timeout`` seconds (readiness checks of a server).

        Returns ``{"ready": bool, "sql": "ok" | reason, "vectors": "ok" | reason}``; a store
        that does not answer in time is reported stuck instead of hanging the probe.
        """
        if self._closed:
            return {"ready": False, "sql": "closed", "vectors": "closed"}
        checks = {"sql": self._sql.ping, "vectors": self._vectors.collections}
        if self.degraded:
            checks.pop("vectors")
        pool = self._lookup_pool()
        futures = {name: pool.submit(check) for name, check in checks.items()}
        deadline = time.monotonic() + timeout
        result: dict[str, Any] = {}
        for name, future in futures.items():
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
                result[name] = "ok"
            except concurrent.futures.TimeoutError:
                result[name] = f"no answer within {timeout}s"
            except Exception as exc:
                result[name] = f"error: {type(exc).__name__}"
        if self.degraded:
            result["vectors"] = "degraded: exact lookups only"
        result["ready"] = all(result[name] == "ok" for name in checks)
        return result

    def repair(self, progress: Callable[[int, int], None] | None = None) -> RepairReport:
        """Make the two stores agree: re-embed rows that lack a vector, drop orphan vectors.

        Rows without vectors come from an interrupted or failed write in another process or
        a lost Chroma folder; orphan vectors from a crash between the two writes of an insert
        or a remove. ``progress(done, total)`` is called after each partition.
        """
        self._check_open()
        if self.degraded:
            raise BackendError(f"cannot repair while {self.degraded}")
        known = {p.id for p in self._sql.find_partitions()}
        pids = sorted(known | set(self._sql.entry_partitions()) | set(self._vectors.collections()))
        reembedded = orphans = dropped = 0
        failed: list[str] = []
        for done, pid in enumerate(pids, start=1):
            with self._write_lock:  # inserts of this process write vector then row: wait
                rows = set(self._sql.ids_of(pid))
                if not rows and pid not in known:
                    self._vectors.drop(pid)  # a collection whose partition was cleared
                    dropped += 1
                else:
                    vecs = set(self._vectors.ids(pid))
                    extra = sorted(vecs - rows)
                    if extra:
                        self._vectors.delete(pid, extra)
                        orphans += len(extra)
                    missing = sorted(rows - vecs)
                    for start in range(0, len(missing), _REPAIR_BATCH):
                        n, bad = self._reembed(pid, missing[start : start + _REPAIR_BATCH])
                        reembedded += n
                        failed += bad
            if progress is not None:
                progress(done, len(pids))
        if reembedded or orphans or dropped or failed:
            log.warning(
                "modelcache repair: %d vectors re-embedded, %d orphan vectors and %d collections "
                "dropped, %d rows could not be repaired",
                reembedded,
                orphans,
                dropped,
                len(failed),
            )
        return RepairReport(reembedded, orphans, dropped, failed)

    def _reembed(self, partition_id: str, ids: Sequence[str]) -> tuple[int, list[str]]:
        """Write the recall vectors of rows that have none, as an insert would."""
        rows = self._sql.get_many(ids, partition_id)
        good: list[tuple[str, str, str]] = []
        failed: list[str] = []
        for entry_id, row in sorted(rows.items()):
            try:
                context = stored_conversation_text(row.history_json) if row.history_json else ""
            except ValueError:
                failed.append(entry_id)
                continue
            good.append((entry_id, row.query, context))
        if not good:
            return 0, failed
        queries = self._checked(self._embedder.embed([q for _, q, _ in good]), len(good))
        texts = [c for *_, c in good if c]
        embedded = iter(self._checked(self._embedder.embed(texts), len(texts)) if texts else ())
        vectors = [
            recall_vector(q, next(embedded) if c else None)
            for q, (*_, c) in zip(queries, good, strict=True)
        ]
        self._vectors.upsert(partition_id, [i for i, _, _ in good], np.stack(vectors))
        return len(good), failed

    def close(self) -> None:
        """Flush pending bookkeeping and release the stores; closing twice is harmless.

        Closing is final: every later call that reads or writes the stores raises
        :class:`CacheClosedError` (the adapters log it and call the model, the HTTP service
        answers 503); ``ready()`` reports the cache not ready.
        """
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._vectors.close()
        self._sql.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- async twins: the same implementation, run in a worker thread -----------------------
    async def alookup(
        self, request: Request, *, threshold: float | None = None, exact_only: bool = False
    ) -> Hit | None:
        """Async :meth:`lookup`; the embedding runs in a worker thread, not on the loop."""
        return await asyncio.to_thread(
            self.lookup, request, threshold=threshold, exact_only=exact_only
        )

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
        progress: Callable[[int, int], None] | None = None,
        batch_size: int = _INSERT_BATCH,
    ) -> list[str]:
        """Async :meth:`insert_many` (``progress`` is called from a worker thread)."""
        return await asyncio.to_thread(
            self.insert_many,
            list(items),
            ttl=ttl,
            metadata=metadata,
            progress=progress,
            batch_size=batch_size,
        )

    async def aremove(
        self, ids: Iterable[str], *, tenant: str | None = None, model: str | None = None
    ) -> int:
        """Async :meth:`remove`."""
        return await asyncio.to_thread(self.remove, list(ids), tenant=tenant, model=model)

    async def aregister(self, scope: Scope, system: str | None = None) -> str:
        """Async :meth:`register`."""
        return await asyncio.to_thread(self.register, scope, system)

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

    async def astats(self) -> CacheStats:
        """Async :meth:`stats`."""
        return await asyncio.to_thread(self.stats)


_CORRUPT = object()


def _query_similarity(query: np.ndarray, stored: np.ndarray, row: EntryRow) -> float:
    """Cosine of the request's query and a candidate's query (a follow-up's stored vector is
    its recall vector: the query part is derived with the row's context vector)."""
    if row.context_vector is not None:
        stored = query_part(stored, decode_vector(row.context_vector))
    return min(1.0, max(-1.0, float(np.dot(query, stored))))


def _estimate_tokens(answer_json: str) -> int:
    """About four characters per token: enough for a savings estimate."""
    return max(1, len(answer_json) // 4)
