"""The cache engine: lookup / insert / remove / clear / register, and async twins.

Like Redis, it never calls an LLM: the caller looks up, and on a miss calls its model and
inserts the answer. Lookups fail open (a backend or embedding fault is a logged miss). The
engine opens the stores and runs lookups and writes; statistics (stats), maintenance and
repair (maintenance), the schema and the row format (storage) live in their own modules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import numpy as np

from ._language import english_only, mostly_non_latin
from .acceptance import Acceptor, Candidate, ConversationVectors
from .config import CacheConfig
from .embedding import Embedder, Thresholds, build_embedder
from .errors import (
    BackendError,
    CacheClosedError,
    ConfigError,
    ModelCacheError,
)
from .maintenance import BackgroundWriter, IntegrityReport, Maintenance, RepairReport
from .redact import describe_error, log_failure
from .request import Partition, Request, Scope, _canonical_json
from .stats import CacheStats, _collect, _Recorder
from .storage import EntryRow, SQLStore
from .storage.folder_lock import FolderLock
from .storage.rows import Entry, chunk_digest, decode_vector, encode_vector, new_row
from .storage.schema import check_settings
from .vectors import ChromaVectorStore, MilvusVectorStore, VectorStore
from .vectors.base import NoVectors
from .vectors.recall import embed_entries, query_part, recall_vector
from .verifier import VerifierSpec

__all__ = ["Cache", "Hit"]

log = logging.getLogger("modelcache")

_INSERT_BATCH = 512  # entries embedded and written together by insert_many
_EXPIRY_SLACK = 1.0  # seconds an imported expiry may differ from a stored one that is the same
_LOOKUP_WORKERS = 40  # anyio's default thread limit, which the server's lookups run under

_Self = TypeVar("_Self")
_P = ParamSpec("_P")
_R = TypeVar("_R")


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

    def to_dict(self) -> dict[str, Any]:
        """The hit as JSON fields (REST lookup, ModelCache envelope, query log). The similarity
        is already in [-1, 1]: the engine clamps float32 rounding where it computes a cosine."""
        return {
            "hit": True,
            "kind": self.kind,
            "similarity": self.similarity,
            "answer": self.answer,
            "entry_id": self.entry_id,
            "matched_query": self.matched_query,
            "metadata": self.metadata,
        }


def _lookup_fields(hit: Hit | None) -> dict[str, Any]:
    """:meth:`Hit.to_dict` of a lookup's outcome; a miss has the same keys, empty."""
    if hit is not None:
        return hit.to_dict()
    return {
        "hit": False,
        "kind": None,
        "similarity": None,
        "answer": None,
        "entry_id": None,
        "matched_query": None,
        "metadata": {},
    }


# The query log's columns of a lookup's outcome (LogRow): the answer is not logged.
_LOGGED_FIELDS = ("hit", "kind", "similarity", "entry_id", "matched_query")


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


def _async_twin(
    method: Callable[Concatenate[_Self, _P], _R], note: str = ""
) -> Callable[Concatenate[_Self, _P], Coroutine[Any, Any, _R]]:
    """The async twin of a sync method: the same call, run in a worker thread so the event
    loop keeps running; type checkers and ``help()`` see the sync method's parameters."""
    name = method.__name__

    async def twin(self: _Self, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        # looked up on the instance, as a hand-written twin calling self.<name> would
        return await asyncio.to_thread(getattr(self, name), *args, **kwargs)

    functools.update_wrapper(twin, method)  # signature, annotations, module
    twin.__name__ = f"a{name}"
    twin.__qualname__ = f"{method.__qualname__.rpartition('.')[0]}.a{name}"
    twin.__doc__ = (
        f"Async :meth:`{name}`: the same call, run in a worker thread so the event loop "
        f"keeps running. {note}".rstrip()
    )
    return twin


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
        verifier: VerifierSpec | None = None,
        vector_store: VectorStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config if config is not None else CacheConfig()
        self._clock = clock
        cfg = self.config
        self._closed = True  # until every store is open: close() then has nothing to release
        self._lock: FolderLock | None = None
        sql: SQLStore | None = None
        opened: VectorStore | None = None
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
                vector_store = opened = self._open_vectors()
            self._vectors = vector_store
            self._embedder = embedder or build_embedder(
                cfg.embedder,
                threads=cfg.torch_threads,
                backend=cfg.embedder_backend,
                onnx_cache_dir=cfg.onnx_cache_dir,
            )
            check_settings(self._sql, self._vectors, self._embedder)
        except BaseException:
            if opened is not None:  # leaves the folder's in-memory copy to the other caches
                opened.close()
            if sql is not None:
                sql.close()
            if self._lock is not None:
                self._lock.release()
            raise
        self._closed = False
        self._acceptor = Acceptor(cfg, self._embedder, verifier)
        self._stats = _Recorder()
        self._write_lock = threading.RLock()  # one eviction/purge pass at a time
        self._maintenance = Maintenance(
            self._sql,
            self._vectors,
            self._embedder,
            cfg,
            self._stats,
            write_lock=self._write_lock,
            clock=self._clock,
        )
        self._language_warned = not english_only(self._embedder.name)
        self._pool_lock = threading.Lock()
        self._loading: dict[str, threading.Thread] | None = None  # see _start_loading
        self._load_windows: list[tuple[float, float | None]] = []
        self._writer = BackgroundWriter(
            self._sql, queue_size=cfg.query_log_queue, periodic=self._maintenance.run
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
            return ChromaVectorStore(
                path=chroma_path,
                url=cfg.chroma_url,
                memory_vectors=cfg.vectors_in_memory,
                timeout=cfg.sql_timeout,
            )
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
            return NoVectors()

    # ---- settings ------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The embedder in use."""
        return self._embedder

    @property
    def thresholds(self) -> Thresholds:
        """Thresholds in force: the config's where set, else the embedder's calibrated ones."""
        return self._acceptor.thresholds

    # ---- validation ------------------------------------------------------------------------
    def _validate(self, request: Request) -> None:
        if not isinstance(request, Request):
            raise ConfigError(f"expected a modelcache.Request, got {type(request).__name__}")
        self.config.check_env(request.scope.env)
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
            for tenant, ids in by_tenant.items():
                new = self._sql.missing_partitions(ids)
                if not new:
                    continue
                held = self._sql.partition_count(tenant)
                if held + len(new) > cap:
                    raise ConfigError(
                        f"this tenant already has {held} partitions, the cap is {cap} "
                        "(max_partitions_per_tenant); clear unused ones or raise the cap"
                    )
        except ModelCacheError:
            raise
        except Exception as exc:
            raise BackendError(f"partition cap check failed: {describe_error(exc)}") from exc

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
        outcome = _lookup_fields(hit)
        self._writer.record(
            {
                "at": self._clock(),
                "op": op,
                "partition_id": p.id,
                "tenant": p.tenant,
                "model": p.model,
                "query": request.query_text,
                **{key: outcome[key] for key in _LOGGED_FIELDS},
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
        if not exact_only and self._loading is None:
            self._start_loading()
        seconds = self.config.lookup_timeout
        if seconds is None:
            return self._lookup(request, threshold, exact_only, None)
        budget = _Budget(seconds, self._busy_windows)
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

    def _start_loading(self) -> None:
        """Load the embedding model and open the vector store on two background threads, once,
        at the first lookup that may need them: ONNX Runtime builds its session without the GIL
        while chromadb imports, and an exact hit waits for neither. Opening a cache for `stats`
        or `export` still loads nothing."""
        with self._pool_lock:
            if self._loading is not None:
                return
            self._loading = {}
            tasks: list[tuple[str, Callable[[], None]]] = []
            preload = getattr(self._embedder, "_preload", None)
            if callable(preload):
                tasks.append(("model", preload))
            if not getattr(self._vectors, "is_open", True):
                # a server's opening waits on the network: only the import is done ahead
                opening = "prepare" if getattr(self._vectors, "remote", False) else "open"
                tasks.append(("vectors", getattr(self._vectors, opening)))
            for name, task in tasks:
                slot = len(self._load_windows)
                self._load_windows.append((time.monotonic(), None))
                thread = threading.Thread(
                    target=self._load_in_background,
                    args=(task, slot),
                    name=f"modelcache-load-{name}",
                    daemon=True,
                )
                self._loading[name] = thread
                thread.start()

    def _load_in_background(self, task: Callable[[], None], slot: int) -> None:
        """Run one start-up load; a failure is left to the lookup that needs it (it loads again
        and fails open with a warning)."""
        try:
            task()
        except Exception as exc:
            log.debug("modelcache: background load failed: %s", describe_error(exc))
        finally:
            self._load_windows[slot] = (self._load_windows[slot][0], time.monotonic())

    def _busy_windows(self) -> list[tuple[float, float | None]]:
        """Start-up work a lookup deadline does not count: the guard's warm-up, jieba's load,
        the model load and the vector store's opening (a cold start is no stuck store)."""
        return [*self._acceptor.warm_up_windows(), *self._load_windows]

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
                self._maintenance.note_hit(row, now)
                return self._hit(row, answer, 1.0, "exact")
        if exact_only:
            return None
        self._load_chunks(partition.id, [request.query_text, request.conversation_text])
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
            if getattr(self._vectors, "remote", False):  # a server's answer counts
                with budget.paused():
                    self._vectors.prepare()  # type: ignore[attr-defined]
                self._vectors.open()  # type: ignore[attr-defined]
            else:
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
        found = self._sql.get_live_many([i for i, _, _ in recalled], partition.id, now)
        orphans = [i for i, _, _ in recalled if i not in found]
        if orphans:
            self._maintenance.drop_orphans(partition.id, orphans)
        rows = {i: entry for i, entry in found.items() if entry is not None}
        if estimate is not None:
            # a long prompt recalled by its memoised chunks: one model call embeds the rest with
            # the parts the long-text check compares (a store read first, within the deadline),
            # then the exact vector ranks the recall
            parts = self._acceptor.long_parts(
                request.query_text,
                [rows[i].query for i, _, _ in recalled if i in rows],
                functools.partial(self._stored_chunks, partition.id),
            )
            with budget.paused() if budget is not None else contextlib.nullcontext():
                conv = ConversationVectors(self._acceptor.embed_long(request.query_text, parts))
            recalled = sorted(recalled, key=lambda hit: -float(np.dot(conv.query, hit[2])))
            recalled = recalled[: self.config.top_k]
        candidates = [
            Candidate(rows[i], _query_similarity(conv.query, stored, rows[i]))
            for i, _, stored in recalled
            if i in rows
        ]
        with budget.paused() if budget is not None else contextlib.nullcontext():
            chosen = self._acceptor.choose(
                request, candidates, self._acceptor.threshold_for(request, threshold), conv
            )
        if chosen is None:
            return None
        answer = self._decode_answer(chosen.row)
        if answer is _CORRUPT:  # a logged, counted miss, as on the exact path
            return None
        self._maintenance.note_hit(chosen.row, now)
        return self._hit(chosen.row, answer, chosen.similarity, "semantic")

    def _load_chunks(self, partition_id: str, texts: Sequence[str]) -> None:
        """Hand the embedder the stored vectors of the chunks of long texts that this process
        has not embedded: a RAG prompt over a context that another process (or this one before
        a restart) stored then embeds only its new chunk."""
        if not self.config.chunk_vectors_kept:
            return
        unknown = self._acceptor.unknown_chunks([t for t in texts if t])
        if unknown:
            self._acceptor.remember_chunks(self._stored_chunks(partition_id, unknown))

    def _stored_chunks(self, partition_id: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of chunk texts in a partition; a failed read or a corrupt vector (not
        base64, another dimension, not finite, not of unit length) is left out: the text is
        embedded instead."""
        if not self.config.chunk_vectors_kept:
            return {}
        digests = {chunk_digest(t): t for t in texts}
        try:
            found = self._sql.chunk_vectors(partition_id, list(digests))
        except Exception as exc:
            log_failure(log, "modelcache could not read stored chunk vectors", exc)
            return {}
        vectors: dict[str, np.ndarray] = {}
        for digest, encoded in found.items():
            try:
                vector = decode_vector(encoded)
            except (TypeError, ValueError):  # binascii.Error is a ValueError
                continue
            if (
                vector.shape == (self._embedder.dimension,)
                and np.isfinite(vector).all()
                and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
            ):
                vectors[digests[digest]] = vector
        return vectors

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
    def _hit(row: Entry, answer: Any, similarity: float, kind: Literal["exact", "semantic"]) -> Hit:
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

    def _decode_answer(self, row: Entry) -> Any:
        try:
            return json.loads(row.answer_json)
        except (TypeError, ValueError):
            log.warning("modelcache entry %s has a corrupt answer; ignored", row.id)
            self._stats.add(row.partition_id, errors=1)
            return _CORRUPT

    # ---- maintenance ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Write buffered hit counts and queued log rows now."""
        self._check_open()
        self._writer.run_once()

    def purge_expired(self) -> int:
        """Delete every expired entry from both stores; returns how many."""
        self._check_open()
        return self._maintenance.purge_expired()

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
        _expires_at: Mapping[str, float] | None = None,
    ) -> list[str]:
        """Store many answers with batched embedding and writes (bulk loads).

        Entries are embedded and written in batches of ``batch_size``, shortest texts first,
        each batch's writes overlapping the next batch's embedding; ``progress(stored, total)``
        is called as each batch is written, and a failure leaves the earlier batches stored (a
        re-run finishes). ``_expires_at`` (exact key -> time), for an import, gives entries the
        expiry they had, keeping ``ttl`` as theirs.
        """
        self._check_open()
        if ttl is not None and not (0 < ttl < math.inf):
            raise ConfigError("ttl must be positive, finite seconds")
        if batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
        expiries = dict(_expires_at or {})
        if not all(math.isfinite(at) for at in expiries.values()):
            raise ConfigError("an expiry must be a finite time")
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
        # by length, so that each batch holds texts of about the same length: the model pads a
        # batch to its longest text (order of storing changes nothing: they share one timestamp)
        unique.sort(key=lambda pair: len(pair[0].query_text) + len(pair[0].conversation_text))
        batches = [unique[s : s + batch_size] for s in range(0, len(unique), batch_size)]
        stored = 0

        def write(
            rows: list[EntryRow],
            vectors: np.ndarray,
            partitions: list[Partition],
            chunks: dict[str, dict[str, str]],
        ) -> None:
            nonlocal stored
            self._write_rows(rows, vectors, partitions, now)
            self._store_chunks(chunks, now)
            stored += len(rows)
            if progress is not None:
                progress(stored, len(unique))

        try:
            if len(batches) == 1:
                write(*self._prepare_rows(batches[0], now, ttl, meta_json, expiries))
            else:  # the writer thread stores batch k while batch k + 1 is embedded
                with concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="modelcache-insert"
                ) as writer:
                    pending: concurrent.futures.Future[None] | None = None
                    for batch in batches:
                        prepared = self._prepare_rows(batch, now, ttl, meta_json, expiries)
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
        _expires_at: Mapping[str, float] | None = None,
    ) -> set[str]:
        """Exact keys of the items already stored, live, with the same answer, metadata and ttl
        (and, for a key in ``_expires_at``, an expiry no earlier than that, within a second).

        Inserting those again would change nothing but their age and hit count, so a bulk load
        that was interrupted, or an export imported into its own cache, skips them.
        """
        self._check_open()
        ttl = ttl if ttl is not None else self.config.ttl_seconds
        meta_json = _canonical_json(metadata or {}, "metadata")
        items = list(items)
        wanted = {r.exact_key: _canonical_json(a, "the answer") for r, a in items}
        try:
            found = self._sql.stored_answers(list(wanted), self._clock())
            same = {
                key
                for key, (answer_json, stored_meta, stored_ttl) in found.items()
                if answer_json == wanted[key] and stored_meta == meta_json and stored_ttl == ttl
            }
            expiries = _expires_at or {}
            by_partition: dict[str, list[str]] = {}
            for r, _ in items:
                if r.exact_key in same and r.exact_key in expiries:
                    by_partition.setdefault(r.partition.id, []).append(r.exact_key)
            for partition_id, keys in by_partition.items():
                rows = self._sql.get_many(keys, partition_id)
                for key in keys:
                    at = rows[key].expires_at if key in rows else 0.0
                    # a later expiry is the same entry renewed by a sliding ttl's hits
                    if at is not None and at < expiries[key] - _EXPIRY_SLACK:
                        same.discard(key)
        except Exception as exc:
            raise BackendError(f"stored-entry check failed: {describe_error(exc)}") from exc
        return same

    def _prepare_rows(
        self,
        batch: Sequence[tuple[Request, str]],
        now: float,
        ttl: float | None,
        meta_json: str,
        expiries: Mapping[str, float],
    ) -> tuple[list[EntryRow], np.ndarray, list[Partition], dict[str, dict[str, str]]]:
        """Rows, recall vectors and partitions of (request, answer JSON) pairs, and the chunk
        vectors of their long texts by partition (digest -> encoded): the embedding. A row
        whose key is in ``expiries`` expires then, not ``ttl`` from ``now``."""
        contexts, vectors = embed_entries(
            self._embedder,
            [r.query_text for r, _ in batch],
            [r.conversation_text for r, _ in batch],
            embed_queries=self._acceptor.embed_stored,
        )
        chunks: dict[str, dict[str, str]] = {}
        try:  # an optimisation for other processes: never a reason to fail the insert
            for r, _ in batch if self.config.chunk_vectors_kept else ():
                kept = self._acceptor.stored_vectors([r.query_text, r.conversation_text])
                if kept:
                    chunks.setdefault(r.partition.id, {}).update(
                        (chunk_digest(text), encode_vector(vector)) for text, vector in kept.items()
                    )
        except Exception as exc:
            log_failure(log, "modelcache could not collect chunk vectors to store", exc)
            chunks = {}
        rows = [
            new_row(
                entry_id=r.exact_key,
                partition_id=r.partition.id,
                query=r.query_text,
                # a turn's attachment digest is a third element, only when it has one (so
                # that an export rebuilds the exact key; other rows are stored as they were)
                history_json=_canonical_json(
                    [
                        [m.role, m.content, *([m.attachments] if m.attachments else [])]
                        for m in r.history
                    ],
                    "history",
                ),
                context_text=r.context_text,
                context_vector=context,
                attachments=r.attachment_digest,
                answer_json=answer_json,
                metadata_json=meta_json,
                now=now,
                ttl=ttl,
            )
            for (r, answer_json), context in zip(batch, contexts, strict=True)
        ]
        rows = [
            EntryRow.model_construct(**{**row.model_dump(), "expires_at": expiries[row.id]})
            if row.id in expiries
            else row
            for row in rows
        ]
        partitions = list({r.partition.id: r.partition for r, _ in batch}.values())
        return rows, vectors, partitions, chunks

    def _store_chunks(self, chunks: dict[str, dict[str, str]], now: float) -> None:
        """Keep the chunk vectors of stored long texts for other processes; a failure only costs
        them an embedding, so it is logged, not raised (the entries are stored)."""
        for partition_id, vectors in sorted(chunks.items()):
            try:
                self._sql.put_chunk_vectors(partition_id, vectors, now)
            except Exception as exc:
                log_failure(log, "modelcache could not store chunk vectors", exc)

    def _write_rows(
        self, rows: list[EntryRow], vectors: np.ndarray, partitions: list[Partition], now: float
    ) -> None:
        """Store one batch: its vectors first, then its rows (with their partitions)."""
        by_partition: dict[str, list[int]] = {}
        for index, row in enumerate(rows):
            by_partition.setdefault(row.partition_id, []).append(index)
        with self._write_lock:  # a remove of the same key in this process waits
            if self._closed:  # close() waited for the batch before: this one comes after it
                raise CacheClosedError("the cache was closed during the insert")
            # Vectors first, then the rows: a crash or failure in between leaves orphan
            # vectors (ignored by lookups, dropped by repair), never an acknowledged row
            # without its vector. An entry's vector depends only on its id's texts, so
            # rewriting it for an existing entry changes nothing.
            for pid, indexes in sorted(by_partition.items()):
                self._vectors.upsert(pid, [rows[i].id for i in indexes], vectors[indexes])
            self._sql.upsert(rows, partitions, now)  # with the partition rows, one transaction
        self._maintenance.evict(by_partition, [row.id for row in rows])
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
                self._maintenance.delete_entries(found)
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
        if env is not None:
            self.config.check_env(env)
        params_json = _canonical_json(params, "params") if params is not None else None
        everything = tenant is None and env is None and model is None and params is None
        try:
            # an insert of this process writes its vector, then its row: dropping the vectors in
            # between would leave its row without one, so a clear waits for it
            with self._write_lock:
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
        return _collect(
            self._sql,
            self._stats,
            self._writer,
            embedder=self._embedder.name,
            token_price_per_1k=self.config.token_price_per_1k,
        )

    def export_log(self, *, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Query-log rows (oldest first) as dicts: mine them for labelled pairs."""
        self._check_open()
        self.flush()
        return self._sql.iter_log(since)

    def export(self, *, tenant: str | None = None) -> Iterator[dict[str, Any]]:
        """Every live entry as a JSON-able dict (partition fields, query, history, answer)."""
        self._check_open()
        yield from self._sql.export(tenant, now=self._clock())

    def check(self) -> IntegrityReport:
        """Compare SQL rows and vectors partition by partition (stress and recovery tests)."""
        self._check_open()
        return self._maintenance.check()

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
        return self._maintenance.repair(progress)

    def close(self) -> None:
        """Flush pending bookkeeping and release the stores; closing twice is harmless.

        Closing is final: every later call that reads or writes the stores raises
        :class:`CacheClosedError` (the adapters log it and call the model, the HTTP service
        answers 503); ``ready()`` reports the cache not ready.
        """
        if self._closed:
            return
        self._closed = True
        opening = (self._loading or {}).get("vectors")
        if opening is not None:  # no Chroma client opens behind a released folder lock
            opening.join(timeout=30.0)
        self._writer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        with self._write_lock:  # a batch being written finishes; a later one finds it closed
            self._vectors.close()
        self._sql.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- async twins: the same implementation, run in a worker thread -----------------------
    alookup = _async_twin(lookup)
    ainsert = _async_twin(insert)
    ainsert_many = _async_twin(insert_many, "``progress`` is called from a worker thread.")
    aremove = _async_twin(remove)
    aregister = _async_twin(register)
    aclear = _async_twin(clear)
    astats = _async_twin(stats)


_CORRUPT = object()


def _query_similarity(query: np.ndarray, stored: np.ndarray, row: Entry) -> float:
    """Cosine of the request's query and a candidate's query (a follow-up's stored vector is
    its recall vector: the query part is derived with the row's context vector)."""
    if row.context_vector is not None:
        stored = query_part(stored, row.context_vector)
    return min(1.0, max(-1.0, float(np.dot(query, stored))))
