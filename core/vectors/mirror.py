"""Small partitions of an embedded Chroma held in process memory, queried by one matrix product.

Chroma's query costs about 1 ms whatever the partition's size, 2.1-2.4 ms within a lookup at
1,000-10,000 vectors (``benchmarks/results/mirror.md``), as much as the rest of a lookup beyond
the embedding; a matrix product over up to ``PARTITION_MAX`` vectors answers in 0.35-1.6 ms
there, exactly (no approximate index). Only an embedded Chroma is mirrored: one process owns
its folder (``FolderLock``), every write goes through this process, so the copy stays exact. A
Chroma server shared by several processes is never mirrored.

A partition is copied on its first query, on a background thread (Chroma answers meanwhile);
inserts and deletes made during the copy are replayed after it, a drop discards it. Each write
updates the copy after Chroma's write, under one lock per folder, so the copy sees writes in
Chroma's order. A copy that fails, or a partition that outgrows ``PARTITION_MAX`` or the memory
budget, is answered by Chroma.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from ..redact import describe_error

__all__ = ["PARTITION_MAX", "VectorMirror"]

log = logging.getLogger("modelcache")

# Above this many vectors one matrix product costs about what Chroma's query does (1.6 against
# 2.1 ms at 10,000 right after an embedding, which leaves the matrix out of the CPU caches).
PARTITION_MAX = 10_000
# Rows per matrix product: OpenBLAS runs a larger one on several threads, whose workers then
# spin for about 0.1 s on the other core, which the embedding of the next lookup needs.
_BLOCK = 1_024
_RETRY_AFTER = 30.0  # seconds before a failed copy is tried again

Hit = tuple[str, float, np.ndarray]
# ("upsert", ids, vectors) | ("delete", ids, None) | ("drop", (), None)
_Op = tuple[str, Sequence[str], np.ndarray | None]
# reads a partition from Chroma: every id and vector, or None when it holds more than the limit
_Read = Callable[[int], "tuple[list[str], np.ndarray] | None"]


class _Snapshot:
    """What a query reads: ids, their vectors and norms. Never changed once published; a write
    publishes a new one. Appends reuse the spare rows no published snapshot covers, and a
    delete (or a replaced vector) only marks its row dead in a new mask, so a write costs the
    rows it touches, not a copy of the partition; dead rows are compacted away past a quarter."""

    __slots__ = ("alive", "ids", "index", "matrix", "norms", "size")

    def __init__(
        self,
        ids: list[str],
        index: dict[str, int],
        matrix: np.ndarray,
        norms: np.ndarray,
        size: int,
        alive: np.ndarray | None = None,
    ) -> None:
        self.ids, self.index, self.matrix, self.norms, self.size = ids, index, matrix, norms, size
        self.alive = alive  # None: every row up to size is live

    @classmethod
    def build(cls, ids: Sequence[str], vectors: np.ndarray) -> _Snapshot:
        """A snapshot of these vectors, an id given twice keeping its last vector."""
        index: dict[str, int] = {}
        for row, key in enumerate(ids):
            index[key] = row
        rows = sorted(index.values())
        matrix = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)[rows])
        kept = [ids[row] for row in rows]
        return cls(
            kept,
            {key: row for row, key in enumerate(kept)},
            matrix,
            np.linalg.norm(matrix, axis=1) if len(kept) else np.zeros(0, np.float32),
            len(kept),
        )

    @property
    def live(self) -> int:
        """Vectors the partition holds (rows marked dead not counted)."""
        return len(self.index)

    def upserted(self, ids: Sequence[str], vectors: np.ndarray) -> _Snapshot:
        """This snapshot with vectors inserted or replaced (a replaced row is marked dead and
        its new vector appended)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.size and vectors.shape[1] != self.matrix.shape[1]:
            raise ValueError("a vector of another dimension than the partition's")
        fresh = {key: row for row, key in enumerate(ids)}  # the last of a repeated id wins
        base = self.deleted([key for key in fresh if key in self.index], compact=False)
        if base.size == 0:
            return _Snapshot.build(list(fresh), vectors[list(fresh.values())])
        size, added = base.size, len(fresh)
        matrix = base.matrix
        if size + added > matrix.shape[0]:  # no spare rows: a larger buffer
            grown = np.empty((max(size + added, size * 3 // 2), matrix.shape[1]), np.float32)
            grown[:size] = matrix[:size]
            matrix = grown
        matrix[size : size + added] = vectors[list(fresh.values())]
        norms = np.concatenate(
            [base.norms[:size], np.linalg.norm(matrix[size : size + added], axis=1)]
        )
        index = dict(base.index)
        index.update({key: size + n for n, key in enumerate(fresh)})
        alive = None
        if base.alive is not None:
            alive = np.concatenate([base.alive[:size], np.ones(added, dtype=bool)])
        grown = _Snapshot(base.ids + list(fresh), index, matrix, norms, size + added, alive)
        return grown.compacted() if grown.crowded else grown

    def deleted(self, ids: Sequence[str], *, compact: bool = True) -> _Snapshot:
        """This snapshot without these ids (unknown ones ignored)."""
        gone = [self.index[key] for key in dict.fromkeys(ids) if key in self.index]
        if not gone:
            return self
        alive = np.ones(self.size, dtype=bool) if self.alive is None else self.alive.copy()
        alive[gone] = False
        index = dict(self.index)
        for key in dict.fromkeys(ids):
            index.pop(key, None)
        thinned = _Snapshot(self.ids, index, self.matrix, self.norms, self.size, alive)
        return thinned.compacted() if compact and thinned.crowded else thinned

    @property
    def crowded(self) -> bool:
        """Whether dead rows are worth compacting away (over a quarter, and over 64)."""
        return self.size - self.live > max(64, self.size // 4)

    def compacted(self) -> _Snapshot:
        """The live rows only, in a buffer of their own."""
        if self.alive is None:
            return self
        rows = np.flatnonzero(self.alive[: self.size])
        return _Snapshot.build([self.ids[r] for r in rows], self.matrix[rows])

    def query(self, vector: np.ndarray, k: int) -> list[Hit]:
        """The k nearest by cosine similarity, best first, with their stored vectors."""
        live = self.live
        if live == 0 or k < 1:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        q_norm = float(np.linalg.norm(q))
        if q.shape[0] != self.matrix.shape[1] or q_norm == 0.0:
            raise ValueError("a query vector of another dimension than the partition's, or zero")
        matrix = self.matrix[: self.size]
        products = np.empty(self.size, dtype=np.float32)
        for start in range(0, self.size, _BLOCK):
            np.matmul(matrix[start : start + _BLOCK], q, out=products[start : start + _BLOCK])
        sims = products / np.maximum(self.norms * q_norm, 1e-12)
        if self.alive is not None:
            sims[~self.alive[: self.size]] = -np.inf
        k = min(k, live)
        if k < self.size:
            best = np.argpartition(-sims, k - 1)[:k]
            best = best[np.argsort(-sims[best], kind="stable")]
        else:
            best = np.argsort(-sims, kind="stable")[:k]
        # float32 rounding can put identical vectors a hair past 1: clamp to the cosine range
        alive = self.alive
        return [
            (self.ids[r], min(1.0, max(-1.0, float(sims[r]))), matrix[r])
            for r in best
            if alive is None or alive[r]
        ]


class _Loading:
    """A copy under way: the writes made meanwhile, replayed when it is done."""

    __slots__ = ("journal", "reserved")

    def __init__(self, reserved: int) -> None:
        self.journal: list[_Op] = []
        self.reserved = reserved


_OFF = "off"  # too large, or over the budget: Chroma answers until the partition is dropped


class VectorMirror:
    """The in-memory copies of one embedded Chroma's small partitions, shared by every store
    of that Chroma in the process.

    ``budget`` bounds the vectors held over all partitions (about 1.5 KB each at dimension 384).
    ``spawn`` runs a copy: a daemon thread by default; tests pass a function that runs it at once.
    """

    def __init__(
        self,
        budget: int,
        *,
        spawn: Callable[[Callable[[], None]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self._spawn = spawn or _daemon
        self._clock = clock
        self._lock = threading.Lock()  # guards _parts and _held; held briefly
        self.writing = threading.Lock()  # one write (Chroma's, then the mirror's) at a time
        self._parts: dict[str, _Snapshot | _Loading | str | float] = {}
        self._held = 0  # vectors in snapshots plus those reserved by copies under way
        self._open = True  # False once the folder's last store closed (see forget)

    # ---- reads ------------------------------------------------------------------------------
    def query(
        self,
        partition: str,
        vector: np.ndarray,
        k: int,
        read: _Read,
    ) -> list[Hit] | None:
        """The partition's k nearest from memory, or None when Chroma must answer (not copied
        yet: ``read(limit)`` then copies it in the background; it returns every id and vector,
        or None when the partition holds more than ``limit``)."""
        part = self._parts.get(partition)
        if isinstance(part, _Snapshot):
            return part.query(vector, k)
        if self._due(part):
            self._start_copy(partition, read)
            part = self._parts.get(partition)  # a copy run at once (tests) answers already
            if isinstance(part, _Snapshot):
                return part.query(vector, k)
        return None

    def _due(self, part: _Snapshot | _Loading | str | float | None) -> bool:
        """Whether a partition in this state is to be copied now: never tried, or its retry
        time has come."""
        return part is None or (isinstance(part, float) and self._clock() >= part)

    def _start_copy(self, partition: str, read: _Read) -> None:
        with self._lock:
            part = self._parts.get(partition)
            if not self._open:
                return  # a lookup that raced the last store's close: nobody keeps it exact
            if not self._due(part):
                return
            if self._held >= self.budget:
                return  # no room now; a later query tries again
            loading = _Loading(min(PARTITION_MAX, self.budget - self._held))
            self._parts[partition] = loading
            self._held += loading.reserved
        try:
            self._spawn(lambda: self._copy(partition, read, loading))
        except Exception as exc:  # no thread to run it: Chroma answers, tried again later
            self._give_up(partition, loading, exc)

    def _copy(self, partition: str, read: _Read, loading: _Loading) -> None:
        """Read the partition from Chroma, replay the writes made meanwhile, publish; a copy
        whose partition was dropped (or the mirror closed) meanwhile is discarded."""
        try:
            found = read(loading.reserved)
        except Exception as exc:
            self._give_up(partition, loading, exc)
            return
        with self._lock:
            if self._parts.get(partition) is not loading:
                return  # dropped or closed meanwhile: its reservation went with it
            self._held -= loading.reserved
            if found is None and loading.reserved < PARTITION_MAX:
                self._parts[partition] = self._clock() + _RETRY_AFTER  # no room for it yet
                return
            snapshot: _Snapshot | None = None
            try:
                if found is not None:
                    snapshot = _Snapshot.build(*found) if found[0] else _empty()
                    for op in loading.journal:
                        snapshot = _applied(snapshot, op)
            except Exception:  # an unexpected shape: Chroma answers this partition
                snapshot = None
            self._publish(partition, snapshot)

    def _give_up(self, partition: str, loading: _Loading, exc: Exception) -> None:
        """A copy that could not be made: Chroma answers, and the copy is tried again later."""
        with self._lock:
            if self._parts.get(partition) is not loading:
                return  # dropped or closed meanwhile: nothing to warn about
            self._held -= loading.reserved
            self._parts[partition] = self._clock() + _RETRY_AFTER
        log.warning(
            "modelcache: could not copy a vector partition into memory, Chroma answers it "
            "(retried in %.0f s): %s",
            _RETRY_AFTER,
            describe_error(exc),
        )

    # ---- writes (called under ``writing``, after Chroma's write succeeded) ------------------
    def upserted(self, partition: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Vectors Chroma has just stored."""
        self._apply(partition, ("upsert", list(ids), np.asarray(vectors, dtype=np.float32)))

    def deleted(self, partition: str, ids: Sequence[str]) -> None:
        """Ids Chroma has just deleted."""
        self._apply(partition, ("delete", list(ids), None))

    def dropped(self, partition: str) -> None:
        """A partition Chroma has just dropped: copied again at its next query."""
        self._apply(partition, ("drop", (), None))

    def _apply(self, partition: str, op: _Op) -> None:
        with self._lock:
            part = self._parts.get(partition)
            if op[0] == "drop":  # a copy under way read what is gone: a new one at next query
                if isinstance(part, _Snapshot):
                    self._held -= part.size
                elif isinstance(part, _Loading):
                    self._held -= part.reserved
                self._parts.pop(partition, None)
            elif isinstance(part, _Loading):
                part.journal.append(op)
            elif isinstance(part, _Snapshot):
                self._held -= part.size
                try:
                    fresh: _Snapshot | None = _applied(part, op)
                except Exception:  # unexpected shape: let Chroma answer this partition
                    fresh = None
                self._publish(partition, fresh)

    def _publish(self, partition: str, snapshot: _Snapshot | None) -> None:
        """Install a snapshot (under ``_lock``), or hand the partition to Chroma when there is
        none or it does not fit."""
        if snapshot is not None and (
            snapshot.size > PARTITION_MAX or self._held + snapshot.size > self.budget
        ):
            snapshot = snapshot.compacted()  # dead rows do not count against either limit
        if (
            snapshot is None
            or snapshot.size > PARTITION_MAX
            or self._held + snapshot.size > self.budget
        ):
            self._parts[partition] = _OFF
            return
        self._held += snapshot.size
        self._parts[partition] = snapshot

    def forget(self) -> None:
        """Drop every copy and make no more (the folder's last store closed)."""
        with self._lock:
            self._open = False
            self._parts.clear()
            self._held = 0

    def reopen(self) -> None:
        """A store of the folder opened again: copies may be made."""
        with self._lock:
            self._open = True

    @property
    def held(self) -> int:
        """Vectors held in memory now (copies under way count what they reserved)."""
        return self._held

    def copied(self, partition: str) -> bool:
        """Whether queries of the partition are answered from memory."""
        return isinstance(self._parts.get(partition), _Snapshot)


def _empty() -> _Snapshot:
    return _Snapshot([], {}, np.zeros((0, 0), np.float32), np.zeros(0, np.float32), 0)


def _applied(snapshot: _Snapshot, op: _Op) -> _Snapshot:
    kind, ids, vectors = op
    if kind == "delete":
        return snapshot.deleted(ids)
    assert vectors is not None
    return snapshot.upserted(ids, vectors)


def _daemon(task: Callable[[], None]) -> None:
    threading.Thread(target=task, name="modelcache-vector-copy", daemon=True).start()
