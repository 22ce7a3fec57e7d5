"""The query log ("data backflow") and the background writer of deferred bookkeeping.

Lookups only append to a bounded in-memory queue; one daemon thread writes log rows in
batches, flushes hit counts, purges expired entries and old log rows. A full queue drops and
counts, so a lookup never waits for a write.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from .redact import log_failure
from .storage.sql import SQLStore

__all__ = ["BackgroundWriter"]

log = logging.getLogger("modelcache")

_BATCH = 500


class BackgroundWriter:
    """One daemon thread that runs the cache's deferred writes every ``interval`` seconds."""

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
        if self._queue.qsize() >= _BATCH:
            self._wake.set()
        return True

    def pending(self) -> int:
        """Rows waiting in the queue."""
        return self._queue.qsize()

    def _write_log(self) -> None:
        while True:
            batch: list[dict[str, Any]] = []
            while len(batch) < _BATCH:
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
