"""The cache's maintenance: deferred hit counts, expiry, eviction, orphan vectors, the query
log, and the integrity check and repair of the two stores.

Lookups only touch memory here (a hit noted, a log row queued, an orphan id noted); one daemon
thread, the :class:`BackgroundWriter`, writes log rows in batches and runs the
:class:`Maintenance` pass. A full log queue drops and counts, so a lookup never waits for a
write. Deletions take the engine's write lock and remove rows before vectors.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .config import CacheConfig
from .redact import log_failure
from .request import stored_conversation_text
from .storage.rows import Entry
from .storage.sql import SQLStore
from .vectors import VectorStore
from .vectors.recall import embed_entries

if TYPE_CHECKING:
    from .embedding import Embedder

__all__ = ["BackgroundWriter", "IntegrityReport", "Maintenance", "RepairReport", "target_size"]

log = logging.getLogger("modelcache")

_LOG_BATCH = 500  # log rows written per statement; a queue this long wakes the writer early
_PURGE_EVERY = 30.0  # seconds between lazy purges of expired entries
_PURGE_BATCH = 500  # expired entries deleted per pass
_PROTECT = 1024  # entries just written that eviction spares, at most (>= insert_many's batch)
_RETENTION_EVERY = 3600.0  # seconds between query-log retention passes
_CHUNK_TRIM_EVERY = 600.0  # seconds between trims of the stored chunk vectors
# Seconds a vector must stay without its row before it counts as an orphan: an insert writes
# its vector just before its row, and another process (or another cache of this folder) shares
# no lock with it, so a vector met without a row may have its row on the way (its commit can
# wait out a lock or a retry: sql_timeout is 10 s by default).
_ORPHAN_GRACE = 60.0
_REPAIR_BATCH = 256  # rows re-embedded per batch by repair()


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


class _Counters(Protocol):
    """The engine's statistics, as maintenance adds to them."""

    def add(self, partition_id: str | None, latency_ms: float | None = None, **deltas: int) -> None:
        """Add ``deltas`` to the counters of the whole cache and of ``partition_id``."""
        ...


def target_size(capacity: int, low_water: float) -> int:
    """Size a full store is shrunk to, so that eviction is not paid on every insert."""
    return max(0, min(capacity - 1, math.floor(capacity * low_water)))


class Maintenance:
    """Deferred bookkeeping and deletions of one cache, shared by its lookups and writes.

    ``write_lock`` is the engine's: one eviction, purge, orphan or repair pass at a time, and
    none beside an insert or remove of this process. The ``embedder`` writes the vectors of
    rows that have none (``repair``, an entry inserted again while it was being deleted).
    """

    def __init__(
        self,
        sql: SQLStore,
        vectors: VectorStore,
        embedder: Embedder,
        config: CacheConfig,
        stats: _Counters,
        *,
        write_lock: threading.RLock,
        clock: Callable[[], float],
    ) -> None:
        self._sql = sql
        self._vectors = vectors
        self._embedder = embedder
        self._config = config
        self._stats = stats
        self._write_lock = write_lock
        self._clock = clock
        self._hit_lock = threading.Lock()
        self._pending_hits: dict[str, tuple[int, float]] = {}  # id -> (hits, last hit's time)
        # vectors lookups met without a row: partition -> id -> when first met
        self._orphans: dict[str, dict[str, float]] = {}
        self._next_purge = 0.0
        self._next_retention = 0.0
        self._next_chunk_trim = 0.0

    # ---- a lookup only touches memory ----------------------------------------------------------
    def note_hit(self, entry: Entry, now: float) -> None:
        """Count a hit (and renew a sliding TTL) in memory; the next pass writes it."""
        if not self._config.track_hits:
            return
        with self._hit_lock:
            count, last = self._pending_hits.get(entry.id, (0, now))
            self._pending_hits[entry.id] = (count + 1, max(last, now))

    def drop_orphans(self, partition_id: str, ids: Sequence[str]) -> None:
        """Vectors whose row is gone (a crash between the two writes): ignore and delete.

        An insert writes its vector just before its row, and an insert of another process or
        of another cache of the folder holds no lock of ours: a vector is deleted only once it
        has been without its row for ``_ORPHAN_GRACE`` seconds. A lookup never waits for the
        write lock: while a write holds it, the ids are left to the background pass.
        """
        now = self._clock()
        with self._hit_lock:
            noted = self._orphans.setdefault(partition_id, {})
            for entry_id in ids:
                noted.setdefault(entry_id, now)
        if self._write_lock.acquire(blocking=False):
            try:
                self._clean_orphans()
            finally:
                self._write_lock.release()

    # ---- the background pass ---------------------------------------------------------------------
    def run(self) -> None:
        """Background pass: hit counts, orphan vectors, lazy purge of expired entries, log
        retention, the cap on stored chunk vectors."""
        self.write_hits()
        if self._orphans:
            with self._write_lock:
                self._clean_orphans()
        now = self._clock()
        if now >= self._next_purge:
            self._next_purge = now + _PURGE_EVERY
            self._purge_batch(now)
        retention = self._config.query_log_retention_days
        if retention is not None and now >= self._next_retention:
            self._next_retention = now + _RETENTION_EVERY
            self._sql.purge_log(now - retention * 86400)
        kept = self._config.chunk_vectors_kept
        if kept and now >= self._next_chunk_trim:  # 0: this process neither reads nor writes them
            self._next_chunk_trim = now + _CHUNK_TRIM_EVERY
            self._sql.trim_chunk_vectors(kept)

    def write_hits(self) -> None:
        """Write the hits noted since the last pass; a failure loses them, with a warning."""
        with self._hit_lock:
            pending, self._pending_hits = self._pending_hits, {}
        try:
            self._sql.record_hits(pending, renew_ttl=self._config.sliding_ttl)
        except Exception as exc:
            log_failure(log, f"modelcache could not record {len(pending)} hits", exc)

    def _clean_orphans(self) -> None:
        """Delete the orphan vectors noted at least ``_ORPHAN_GRACE`` seconds ago whose row
        still does not exist (write lock held); younger ones wait for a later pass."""
        due = self._clock() - _ORPHAN_GRACE
        noted: dict[str, set[str]] = {}
        with self._hit_lock:
            for partition_id, seen in list(self._orphans.items()):
                ripe = {i for i, first in seen.items() if first <= due}
                if ripe:
                    noted[partition_id] = ripe
                    for entry_id in ripe:
                        del seen[entry_id]
                if not seen:
                    del self._orphans[partition_id]
        for partition_id, ids in sorted(noted.items()):
            try:
                gone = sorted(ids - {i for i, _ in self._sql.locate(sorted(ids))})
                if gone:
                    log.info("modelcache removing %d orphan vectors of %s", len(gone), partition_id)
                    self._vectors.delete(partition_id, gone)
            except Exception as exc:
                log_failure(log, "modelcache could not remove orphan vectors", exc)

    # ---- deletions -------------------------------------------------------------------------------
    def purge_expired(self) -> int:
        """Delete every expired entry from both stores; returns how many. Hits noted but not
        yet written go first: with a sliding ttl they renew what would otherwise be deleted."""
        self.write_hits()
        total = 0
        while n := self._purge_batch(self._clock()):
            total += n
        return total

    def _purge_batch(self, now: float) -> int:
        with self._write_lock:
            gone = self._sql.expired(now, _PURGE_BATCH)
            self.delete_entries(gone)
        self._stats.add(None, expirations=len(gone))
        return len(gone)

    def evict(self, partition_ids: Iterable[str], written: Sequence[str]) -> None:
        """Shrink the partitions just written to, and the whole cache, when over capacity;
        the entries just ``written`` are spared (under LFU a new entry has no hits yet and
        would otherwise be its own first victim)."""
        cfg = self._config
        if cfg.eviction == "none" or (
            cfg.max_entries_per_partition is None and not cfg.max_entries
        ):
            return
        self.write_hits()  # LRU/LFU order must see the latest hits
        scopes: list[tuple[int, str | None]] = []
        if cfg.max_entries_per_partition is not None:
            scopes += [(cfg.max_entries_per_partition, pid) for pid in partition_ids]
        if cfg.max_entries is not None:
            scopes.append((cfg.max_entries, None))
        protect = written[:_PROTECT]
        gone: list[tuple[str, str]] = []
        with self._write_lock:
            for capacity, pid in scopes:  # each pass sees the deletions of the one before
                batch = self._victims(capacity, pid, protect)
                self.delete_entries(batch)
                gone += batch
        for _, pid in gone:
            self._stats.add(pid, evictions=1)

    def _victims(
        self, capacity: int, partition_id: str | None, protect: Sequence[str]
    ) -> list[tuple[str, str]]:
        """The policy's victims, as (id, partition), when a scope is over capacity
        (``partition_id=None``: the whole cache); selection only."""
        count = self._sql.count(partition_id)
        if count <= capacity:
            return []
        target = target_size(capacity, self._config.low_water)
        shielded = protect if len(protect) <= target else ()  # a bulk load larger than the target
        return self._sql.eviction_order(
            self._config.eviction, count - target, partition_id, shielded
        )

    def delete_entries(self, entries: Sequence[tuple[str, str]]) -> None:
        """Delete (id, partition) entries: rows first, then vectors (write lock held).

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
                self.reembed(pid, ids)
        except Exception as exc:  # the remove itself succeeded; `repair` finishes the job
            log_failure(log, "modelcache: could not restore vectors of re-inserted entries", exc)

    # ---- integrity -------------------------------------------------------------------------------
    def _partition_ids(self, known: set[str]) -> list[str]:
        """Every partition either store knows of: partition rows, entries' and collections."""
        return sorted(known | set(self._sql.entry_partitions()) | set(self._vectors.collections()))

    def check(self) -> IntegrityReport:
        """Compare SQL rows and vectors partition by partition (stress and recovery tests)."""
        rows_without, vectors_without = [], []
        for pid in self._partition_ids({p.id for p in self._sql.find_partitions()}):
            rows = set(self._sql.ids_of(pid))
            vecs = set(self._vectors.ids(pid))
            rows_without += sorted(rows - vecs)
            vectors_without += sorted(vecs - rows)
        return IntegrityReport(rows_without, vectors_without)

    def repair(self, progress: Callable[[int, int], None] | None = None) -> RepairReport:
        """Make the two stores agree: re-embed rows that lack a vector, drop orphan vectors
        and the collections of cleared partitions; ``progress(done, total)`` per partition."""
        known = {p.id for p in self._sql.find_partitions()}
        pids = self._partition_ids(known)
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
                        n, bad = self.reembed(pid, missing[start : start + _REPAIR_BATCH])
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

    def reembed(self, partition_id: str, ids: Sequence[str]) -> tuple[int, list[str]]:
        """Write the recall vectors of rows that have none, as an insert would; returns how
        many were written and the ids whose stored history is corrupt."""
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
        _, recall = embed_entries(self._embedder, [q for _, q, _ in good], [c for *_, c in good])
        self._vectors.upsert(partition_id, [i for i, _, _ in good], recall)
        return len(good), failed


class BackgroundWriter:
    """One daemon thread that writes queued log rows and runs ``periodic`` every ``interval``
    seconds (the cache's maintenance pass)."""

    def __init__(
        self,
        store: SQLStore,
        *,
        queue_size: int,
        periodic: Callable[[], None],
        interval: float = 0.5,
    ) -> None:
        self._store = store
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=queue_size)
        self._periodic = periodic
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._io_lock = threading.Lock()
        self.dropped = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="modelcache-writer", daemon=True)
        self._thread.start()

    def record(self, row: dict[str, Any]) -> bool:
        """Queue a log row (LogRow's columns) without blocking; False and counted when full.

        Plain dicts, written with one prepared statement: building validated model objects
        on the lookup path would cost more than the lookup itself on an exact hit.
        """
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1
            return False
        if self._queue.qsize() >= _LOG_BATCH:
            self._wake.set()
        return True

    def pending(self) -> int:
        """Rows waiting in the queue."""
        return self._queue.qsize()

    def _write_log(self) -> None:
        while True:
            batch: list[dict[str, Any]] = []
            while len(batch) < _LOG_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                return
            try:
                self._store.append_log(batch)
                self.written += len(batch)
            except Exception as exc:
                self.dropped += len(batch)
                log_failure(log, f"modelcache query log lost {len(batch)} rows", exc)

    def run_once(self) -> None:
        """Write everything pending now (also called by ``flush`` and ``close``)."""
        with self._io_lock:
            self._write_log()
            try:
                self._periodic()
            except Exception as exc:
                log_failure(log, "modelcache background maintenance failed", exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self.run_once()

    def close(self) -> None:
        """Stop the thread after a last flush."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.run_once()
