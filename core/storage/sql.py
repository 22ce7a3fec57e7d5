"""The scalar store: entries, partitions and settings in SQL (SQLite, MySQL/MariaDB, PostgreSQL)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, delete, func, select
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from ..errors import BackendError, ConfigError
from ..redact import mask_url
from ..request import Partition
from .models import ChunkRow, EntryRow, LogRow, MetaRow, PartitionRow
from .rows import ENTRY_COLUMNS, Entry, entry_of, export_record

__all__ = ["EVICTION_ORDER", "SQLStore", "is_transient"]

log = logging.getLogger("modelcache")
T = TypeVar("T")

_CHUNK = 500  # rows per IN (...) list: well under every dialect's parameter limit
_ENTRY = EntryRow.__table__  # type: ignore[attr-defined]
_COLUMNS = [_ENTRY.c[name] for name in ENTRY_COLUMNS]
_CONTEXT = ENTRY_COLUMNS.index("context_vector")
_IS_LIVE = sa.or_(_ENTRY.c.expires_at.is_(None), _ENTRY.c.expires_at > sa.bindparam("now"))
_LIVE = sa.select(*_COLUMNS).where(
    _ENTRY.c.id == sa.bindparam("id"), _ENTRY.c.partition_id == sa.bindparam("pid"), _IS_LIVE
)
# By primary key only: with a partition filter beside it, SQLite's planner picks the partition
# index and scans the whole partition (12 ms at 30k entries instead of 0.1 ms). Expired rows
# are read with a flag, not left out: their vectors are no orphans.
_LIVE_MANY = sa.select(*_COLUMNS, _IS_LIVE.label("live")).where(
    _ENTRY.c.id.in_(sa.bindparam("ids", expanding=True))
)
# The same two reads as plain SQLite statements on the pooled DBAPI connection: SQLAlchemy's
# per-call execution (compiled-cache lookup, result processing) costs about 50 us, three times
# the primary-key read itself, and the exact probe is the whole of an exact hit.
_RAW_COLUMNS = ", ".join(f'"{n}"' for n in ENTRY_COLUMNS)
_RAW_IS_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_RAW_LIVE = (
    f"SELECT {_RAW_COLUMNS} FROM {_ENTRY.name} WHERE id = ? AND partition_id = ? AND {_RAW_IS_LIVE}"
)
_RAW_LIVE_MANY = f"SELECT {_RAW_COLUMNS}, {_RAW_IS_LIVE} FROM {_ENTRY.name} WHERE id IN ({{}})"

# Hit bookkeeping, one statement for every row of a batch. Each SET expression reads only its
# own column (MySQL evaluates them left to right on the updated row); times never move back, as
# another process may flush older hits after newer ones.
_HIT_AT: sa.BindParameter[float] = sa.bindparam("hit_at", type_=sa.Double())
_RECORD_HITS = (
    sa.update(_ENTRY)
    .where(_ENTRY.c.id == sa.bindparam("hit_id"), _ENTRY.c.created_at <= _HIT_AT)
    .values(
        hit_count=_ENTRY.c.hit_count + sa.bindparam("hits", type_=sa.Integer()),
        last_hit_at=sa.case((_ENTRY.c.last_hit_at < _HIT_AT, _HIT_AT), else_=_ENTRY.c.last_hit_at),
    )
)
_RENEWED = _HIT_AT + _ENTRY.c.ttl
_RENEW_HITS = _RECORD_HITS.values(
    expires_at=sa.case(
        (
            sa.and_(
                _ENTRY.c.ttl.is_not(None),
                sa.or_(_ENTRY.c.expires_at.is_(None), _ENTRY.c.expires_at < _RENEWED),
            ),
            _RENEWED,
        ),
        else_=_ENTRY.c.expires_at,
    )
)

_CHUNK_TABLE = ChunkRow.__table__  # type: ignore[attr-defined]
_RAW_CHUNKS = (
    f"SELECT digest, vector FROM {_CHUNK_TABLE.name} WHERE partition_id = ? AND digest IN ({{}})"
)
_CHUNKS = sa.select(_CHUNK_TABLE.c.digest, _CHUNK_TABLE.c.vector).where(
    _CHUNK_TABLE.c.partition_id == sa.bindparam("pid"),
    _CHUNK_TABLE.c.digest.in_(sa.bindparam("digests", expanding=True)),
)

_LOG = LogRow.__table__  # type: ignore[attr-defined]
_LOG_PAGE = 500  # query-log rows read per query

#: Eviction policies as orderings over indexed columns, victims first; ties fall back to the
#: entry id for determinism. State (hit counts, last-hit times) lives in the store, so several
#: processes agree on what to evict and nothing is rebuilt in memory at start-up.
EVICTION_ORDER: dict[str, tuple[Any, ...]] = {
    "lru": (col(EntryRow.last_hit_at).asc(), col(EntryRow.created_at).asc()),
    "lfu": (col(EntryRow.hit_count).asc(), col(EntryRow.last_hit_at).asc()),
    "fifo": (col(EntryRow.created_at).asc(),),
}

_TABLES = [t.__table__ for t in (MetaRow, PartitionRow, EntryRow, ChunkRow, LogRow)]  # type: ignore[attr-defined]

# Errors after which the same transaction succeeds when simply run again: MySQL/MariaDB
# deadlock (1213), lock wait timeout (1205), "record has changed" (1020); PostgreSQL
# serialization failure, deadlock, lock not available; SQLite busy.
_MYSQL_TRANSIENT = {1213, 1205, 1020}
_PG_TRANSIENT = {"40001", "40P01", "55P03"}
_RETRY_ATTEMPTS = 6


def is_transient(exc: BaseException) -> bool:
    """True for deadlocks, serialization failures and lock timeouts: retry the transaction."""
    if not isinstance(exc, sa.exc.DBAPIError) or exc.connection_invalidated:
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_TRANSIENT:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_TRANSIENT:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Watchdog:
    """Shuts the socket of a PostgreSQL connection held past its deadline.

    libpq has no read timeout: against a server that accepts connections but never answers,
    a call would wait forever, and the server-side statement_timeout never arrives. Closing
    the socket makes the blocked call fail at once; SQLAlchemy then discards the connection.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._due: dict[int, tuple[float, Any]] = {}
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def arm(self, dbapi_conn: Any) -> None:
        with self._wake:
            idle = not self._due  # only then may the thread sleep past this deadline
            self._due[id(dbapi_conn)] = (time.monotonic() + self._timeout, dbapi_conn)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, daemon=True, name="modelcache-sql-watchdog"
                )
                self._thread.start()
            elif idle:
                self._wake.notify()

    def disarm(self, dbapi_conn: Any, *_: Any) -> None:
        with self._wake:
            self._due.pop(id(dbapi_conn), None)

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._due.clear()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stopped:
                    return
                now = time.monotonic()
                late = [k for k, (due, _) in self._due.items() if due <= now]
                conns = [self._due.pop(k)[1] for k in late]
                nearest = min((due for due, _ in self._due.values()), default=now + 60)
                if not conns:
                    self._wake.wait(max(0.01, nearest - now))
                    continue
            for conn in conns:
                self._shut(conn)

    def _shut(self, conn: Any) -> None:
        log.warning("modelcache: a SQL call exceeded sql_timeout=%ss; closing it", self._timeout)
        with contextlib.suppress(Exception):
            sock = socket.socket(fileno=os.dup(conn.fileno()))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()


class SQLStore:
    """SQLModel-backed rows; every method is one short transaction.

    Every call is bounded: ``connect_timeout`` to open a connection or wait for a pooled one,
    ``timeout`` for a call (driver read/write timeouts, a server statement timeout, SQLite's
    busy wait). Write transactions that lose a deadlock or a lock wait are run again.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, connect_timeout: float = 5.0) -> None:
        try:
            self.url = sa.make_url(url)
            port = self.url.port  # a non-numeric port fails here, with a ValueError
        except (sa.exc.ArgumentError, ValueError) as exc:
            raise ConfigError(f"invalid sql_url {mask_url(url)!r}: {exc}") from None
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"invalid sql_url {mask_url(url)!r}: port {port} is not 1-65535")
        self.timeout = timeout
        self._watchdog: _Watchdog | None = None
        self._dimension: int | None = None  # of the stored vectors, once the settings say
        backend = self.url.get_backend_name()
        self._raw_reads = backend == "sqlite"  # the lookup reads, without SQLAlchemy's layer
        kwargs: dict[str, Any] = {}
        if backend == "sqlite":
            if self.url.database and self.url.database != ":memory:":
                _check_sqlite_file(Path(self.url.database))
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": timeout}
        else:  # network databases drop idle connections; SQLite files never do
            kwargs.update(pool_recycle=3600, pool_timeout=connect_timeout)
            if backend == "mysql":
                kwargs["pool_pre_ping"] = True  # bounded by the driver's read timeout
                kwargs["connect_args"] = {
                    "connect_timeout": max(1, round(connect_timeout)),
                    "read_timeout": timeout,
                    "write_timeout": timeout,
                }
            elif backend == "postgresql":
                ms = max(1, round(timeout * 1000))
                kwargs["connect_args"] = {
                    "connect_timeout": max(2, round(connect_timeout)),  # libpq's minimum is 2
                    "options": f"-c statement_timeout={ms}",
                }
                self._watchdog = _Watchdog(timeout)
        try:
            self._engine: Engine = sa.create_engine(self.url, **kwargs)
            if backend == "sqlite":
                event.listen(self._engine, "connect", functools.partial(_sqlite_pragmas, timeout))
            elif backend == "mysql":
                event.listen(self._engine, "connect", functools.partial(_mysql_session, timeout))
            if self._watchdog is not None:
                self._watch(self._watchdog)
            self._create_schema()
        except sa.exc.SQLAlchemyError as exc:
            if hasattr(self, "engine"):
                self._engine.dispose()
            if self._watchdog is not None:
                self._watchdog.stop()
            if backend == "sqlite" and _is_corrupt(exc):
                raise BackendError(_corrupt_message(self.url.database or "", exc)) from exc
            raise BackendError(f"cannot open SQL store {mask_url(str(self.url))}: {exc}") from exc

    def _watch(self, watchdog: _Watchdog) -> None:
        """Bound every checkout of a PostgreSQL connection, its liveness ping included.

        SQLAlchemy's pool_pre_ping runs before the checkout event, outside any bound, so the
        ping is done here instead; a failed ping makes the pool open a fresh connection.
        """

        def checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
            watchdog.arm(dbapi_conn)
            try:
                cur = dbapi_conn.cursor()
                cur.execute("SELECT 1")
                cur.close()
            except Exception as exc:
                watchdog.disarm(dbapi_conn)
                raise sa.exc.DisconnectionError(f"stale connection: {exc}") from exc

        event.listen(self._engine, "checkout", checkout)
        event.listen(self._engine, "checkin", watchdog.disarm)
        event.listen(self._engine, "close", watchdog.disarm)
        event.listen(self._engine, "invalidate", watchdog.disarm)

    def _create_schema(self) -> None:
        """Create missing tables; several processes may do it at once on an empty database.

        ``create_all`` checks then creates, so a concurrent creator can win in between (MySQL
        1050 "already exists", PostgreSQL duplicate type/relation): run it again, and the check
        then sees the other process's tables.
        """
        for attempt in range(8):
            try:
                SQLModel.metadata.create_all(self._engine, tables=_TABLES)
                return
            except (sa.exc.ProgrammingError, sa.exc.IntegrityError, sa.exc.OperationalError) as e:
                if attempt == 7 or (self.dialect == "sqlite" and not is_transient(e)):
                    raise
                log.debug("modelcache: concurrent schema creation, retrying: %r", e)
                time.sleep(0.05 + random.random() * 0.1 * (attempt + 1))

    def _retrying(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a write transaction, again on deadlock / lock timeout, with jittered backoff."""
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(_RETRY_ATTEMPTS) | stop_after_delay(self.timeout),
            wait=wait_exponential_jitter(initial=0.01, max=0.5),
            before_sleep=before_sleep_log(log, logging.INFO),
            reraise=True,
        )
        return retrying(fn, *args)

    def ping(self) -> None:
        """One round trip to the database (readiness probes); raises when it is unreachable."""
        with self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    @property
    def dialect(self) -> str:
        """Backend name: sqlite, mysql, postgresql."""
        return self.url.get_backend_name()

    def _session(self) -> Session:
        """A new session; callers use it as a context manager."""
        return Session(self._engine, expire_on_commit=False)

    # ---- settings ----------------------------------------------------------------------------
    def get_meta(self) -> dict[str, str]:
        """All stored settings."""
        with self._session() as s:
            stored = {row.key: row.value for row in s.exec(select(MetaRow))}
        self._learn_dimension(stored)
        return stored

    def set_meta(self, values: dict[str, str]) -> None:
        """Store settings that are not stored yet (another process may store them at once)."""
        self._retrying(self._set_meta, values)
        self._learn_dimension(values)

    def _learn_dimension(self, settings: dict[str, str]) -> None:
        """Remember the vectors' dimension the settings name (the engine's open reads and
        records them), so that a lookup read can tell a context vector of the wrong length."""
        with contextlib.suppress(KeyError, ValueError):
            self._dimension = int(settings["dimension"])

    def _set_meta(self, values: dict[str, str]) -> None:
        for key, value in sorted(values.items()):
            with self._session() as s:
                if s.get(MetaRow, key) is not None:
                    continue
                s.add(MetaRow(key=key, value=value))
                try:
                    s.commit()
                except sa.exc.IntegrityError:
                    s.rollback()  # another process stored it first

    def replace_meta(self, key: str, value: str) -> None:
        """Overwrite one stored setting (a schema upgrade)."""

        def write() -> None:
            with self._session() as s:
                s.merge(MetaRow(key=key, value=value))
                s.commit()

        self._retrying(write)

    # ---- partitions --------------------------------------------------------------------------
    def ensure_partition(self, partition: Partition, now: float) -> None:
        """Create the partition row if missing (idempotent, race-tolerant)."""

        def write() -> None:
            with self._engine.begin() as conn:
                self._touch_partitions(conn, [partition], now)

        self._retrying(write)

    def _touch_partitions(self, conn: Any, partitions: Sequence[Partition], now: float) -> None:
        """Create the partition rows if missing and lock them until the transaction ends.

        Inserts take this lock before writing their entries and clears take it before deleting
        them, so a clear either sees an insert's entries or runs wholly before it (the insert
        then re-creates the partition row): no entry is ever left without its partition.
        """
        values = [
            {
                "id": p.id,
                "tenant": p.tenant,
                "env": p.env,
                "model": p.model,
                "params_json": p.params_json,
                "system_hash": p.system_hash,
                "system": p.system,
                "created_at": now,
            }
            for p in sorted(partitions, key=lambda p: p.id)
        ]
        conn.execute(self._touch, values)

    @functools.cached_property
    def _touch(self) -> Any:
        table = PartitionRow.__table__  # type: ignore[attr-defined]
        if self.dialect == "mysql":
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            return mysql_insert(table).on_duplicate_key_update(id=table.c.id)
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        stmt = dialect_insert(table)
        # a no-op update, not DO NOTHING: it locks an existing row against a concurrent delete
        return stmt.on_conflict_do_update(index_elements=["id"], set_={"id": stmt.excluded.id})

    def find_partitions(
        self,
        tenant: str | None = None,
        env: str | None = None,
        model: str | None = None,
        params_json: str | None = None,
    ) -> list[PartitionRow]:
        """Partitions matching every given field exactly (None matches anything).

        MySQL/MariaDB compare strings case-, accent- and trailing-space-insensitively by
        default, so the SQL filter only narrows and equality is checked again here.
        """
        wanted = {"tenant": tenant, "env": env, "model": model, "params_json": params_json}
        stmt = select(PartitionRow)
        for name, value in wanted.items():
            if value is not None:
                stmt = stmt.where(getattr(PartitionRow, name) == value)
        with self._session() as s:
            rows = list(s.exec(stmt))
        return [
            row for row in rows if all(v is None or getattr(row, k) == v for k, v in wanted.items())
        ]

    def missing_partitions(self, ids: Iterable[str]) -> set[str]:
        """The ids among ``ids`` that have no partition row yet."""
        wanted = sorted(set(ids))
        found: set[str] = set()
        with self._session() as s:
            for chunk in _chunks(wanted):
                found.update(s.exec(select(PartitionRow.id).where(col(PartitionRow.id).in_(chunk))))
        return set(wanted) - found

    def partition_count(self, tenant: str) -> int:
        """How many partitions a tenant holds, its name compared exactly.

        The SQL filter only narrows (MySQL/MariaDB collations would count "ACME " as "acme");
        the names are compared again here, as in :meth:`find_partitions`.
        """
        stmt = select(PartitionRow.tenant).where(PartitionRow.tenant == tenant)
        with self._session() as s:
            return sum(1 for name in s.exec(stmt) if name == tenant)

    def delete_all(self) -> int:
        """Delete every entry, partition and chunk vector; returns the number of entries
        deleted."""

        def write() -> int:
            with self._session() as s:
                s.exec(delete(PartitionRow))  # partition rows first, as inserts lock them
                deleted = int(s.exec(delete(EntryRow)).rowcount or 0)
                s.exec(delete(ChunkRow))
                s.commit()
            return deleted

        return self._retrying(write)

    def entry_partitions(self) -> list[str]:
        """Partition ids that have entries (including rows whose partition row is gone)."""
        with self._session() as s:
            return list(s.exec(select(EntryRow.partition_id).distinct()))

    def delete_partitions(self, partition_ids: Sequence[str]) -> int:
        """Delete partitions with all their entries and chunk vectors; returns the number of
        entries deleted.

        Partition rows go first, in id order, as inserts lock them: a clear and an insert of
        the same partition serialise instead of deadlocking or leaving entries behind.
        """

        def write() -> int:
            deleted = 0
            with self._session() as s:
                for chunk in _chunks(sorted(partition_ids)):
                    s.exec(delete(PartitionRow).where(col(PartitionRow.id).in_(chunk)))
                    result = s.exec(delete(EntryRow).where(col(EntryRow.partition_id).in_(chunk)))
                    deleted += result.rowcount or 0
                    s.exec(delete(ChunkRow).where(col(ChunkRow.partition_id).in_(chunk)))
                s.commit()
            return deleted

        return self._retrying(write)

    def histories(self) -> list[tuple[str, str, str]]:
        """(id, partition id, history JSON) of every entry that has earlier turns."""
        with self._session() as s:
            rows = s.exec(
                select(EntryRow.id, EntryRow.partition_id, EntryRow.history_json).where(
                    EntryRow.history_json != "[]"
                )
            )
            return [(str(i), str(p), str(h)) for i, p, h in rows]

    # ---- entries -----------------------------------------------------------------------------
    def get_live(self, entry_id: str, partition_id: str, now: float) -> Entry | None:
        """The entry with this id in this partition, unless expired (the exact path).

        A prebuilt statement (plain SQLite, else Core SQL) and plain entries: this is the
        sub-millisecond path, and the ORM's per-call work costs more than the query itself.
        """
        if self._raw_reads:
            rows = self._raw_read(_RAW_LIVE, (entry_id, partition_id, now))
            found = rows[0] if rows else None
        else:
            with self._engine.connect() as conn:
                found = conn.execute(
                    _LIVE, {"id": entry_id, "pid": partition_id, "now": now}
                ).first()
        if found is None:
            return None
        entry = self._entry(found)
        if entry is None:  # the exact key names the conversation: no vector is compared
            return entry_of([*found[:_CONTEXT], None, *found[_CONTEXT + 1 :]])
        return entry

    def get_live_many(
        self, ids: Sequence[str], partition_id: str, now: float
    ) -> dict[str, Entry | None]:
        """The entries among ``ids`` in one partition (isolation is enforced here too): each
        live one, and None for an expired one (its vector is no orphan; the purge removes both)
        or one whose context vector is corrupt (never compared, nor served by meaning).

        An id missing from the result has no row in this partition.
        """
        if not ids:
            return {}
        if self._raw_reads:
            found = [
                row
                for chunk in _chunks(ids)
                for row in self._raw_read(
                    _RAW_LIVE_MANY.format(",".join("?" * len(chunk))), (now, *chunk)
                )
            ]
        else:
            with self._engine.connect() as conn:
                found = [
                    tuple(row)
                    for chunk in _chunks(ids)
                    for row in conn.execute(_LIVE_MANY, {"ids": list(chunk), "now": now})
                ]
        return {
            row[0]: self._entry(row[:-1]) if row[-1] else None
            for row in found
            if row[1] == partition_id  # isolation: never another partition's row
        }

    def _entry(self, values: Sequence[Any]) -> Entry | None:
        """The entry of a row's :data:`ENTRY_COLUMNS`; None, with a warning naming the row,
        when its context vector is corrupt: one bad row fails no lookup of the others."""
        try:
            return entry_of(values, self._dimension)
        except ValueError as exc:
            log.warning(
                "modelcache entry %s is corrupt: %s; left out of semantic lookups", values[0], exc
            )
            return None

    def get_many(self, ids: Sequence[str], partition_id: str) -> dict[str, EntryRow]:
        """Whole rows of these ids in one partition, expired ones included (re-embedding)."""
        found: dict[str, EntryRow] = {}
        with self._session() as s:
            for chunk in _chunks(ids):  # by primary key only, as in get_live_many
                rows = s.exec(select(EntryRow).where(col(EntryRow.id).in_(chunk)))
                found.update((row.id, row) for row in rows if row.partition_id == partition_id)
        return found

    def _raw_read(self, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of one SQLite read on a pooled connection (pragmas and timeouts as set)."""
        conn = self._engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                return cursor.execute(statement, tuple(params)).fetchall()
            finally:
                cursor.close()
        except Exception:
            conn.invalidate()  # a connection in an unknown state never returns to the pool
            raise
        finally:
            conn.close()

    def upsert(
        self, rows: Sequence[EntryRow], partitions: Sequence[Partition] = (), now: float = 0.0
    ) -> None:
        """Insert rows, replacing any row with the same id (idempotent writes).

        The rows' partitions are created (and locked) in the same transaction, so a concurrent
        clear cannot leave the rows without their partition. A native upsert per dialect (ON
        CONFLICT / ON DUPLICATE KEY), in id order, so that concurrent writers of the same key
        neither violate the key nor deadlock; a deadlock still reported is retried.
        """
        if not rows:
            return
        values = [r.model_dump() for r in sorted(rows, key=lambda r: r.id)]

        def write() -> None:
            with self._engine.begin() as conn:
                if partitions:
                    self._touch_partitions(conn, partitions, now)
                conn.execute(self._upsert, values)  # one prepared statement, executemany

        self._retrying(write)

    @functools.cached_property
    def _upsert(self) -> Any:
        return self._native_upsert(_ENTRY, ["id"])

    def _native_upsert(self, table: sa.Table, keys: list[str]) -> Any:
        """An INSERT into ``table`` that replaces the other columns of a row with the same
        ``keys``: ON DUPLICATE KEY UPDATE (MySQL, MariaDB) or ON CONFLICT DO UPDATE."""
        updated = [c.name for c in table.columns if c.name not in keys]
        if self.dialect == "mysql":
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            stmt = mysql_insert(table)
            return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in updated})
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as pg_insert
        else:  # pragma: no cover - guarded by the supported URLs
            raise ConfigError(f"unsupported SQL dialect {self.dialect!r}")
        stmt = pg_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=keys, set_={c: stmt.excluded[c] for c in updated}
        )

    def locate(self, ids: Sequence[str]) -> list[tuple[str, str]]:
        """(id, partition_id) of the entries that exist among ``ids``."""
        found: list[tuple[str, str]] = []
        with self._engine.connect() as conn:
            for chunk in _chunks(list(ids)):
                stmt = sa.select(_ENTRY.c.id, _ENTRY.c.partition_id).where(_ENTRY.c.id.in_(chunk))
                found.extend((i, p) for i, p in conn.execute(stmt))
        return found

    def stored_answers(
        self, ids: Sequence[str], now: float
    ) -> dict[str, tuple[str, str, float | None]]:
        """(answer JSON, metadata JSON, ttl) of the live entries among ``ids``."""
        found: dict[str, tuple[str, str, float | None]] = {}
        columns = (_ENTRY.c.id, _ENTRY.c.answer_json, _ENTRY.c.metadata_json, _ENTRY.c.ttl)
        live = sa.or_(_ENTRY.c.expires_at.is_(None), _ENTRY.c.expires_at > now)
        with self._engine.connect() as conn:
            for chunk in _chunks(list(ids)):
                stmt = sa.select(*columns).where(_ENTRY.c.id.in_(chunk), live)
                found.update((i, (a, m, t)) for i, a, m, t in conn.execute(stmt))
        return found

    def delete_ids(self, ids: Sequence[str]) -> int:
        """Delete entries by id, in id order (the order every writer locks rows in)."""

        def write() -> int:
            deleted = 0
            with self._engine.begin() as conn:
                for chunk in _chunks(sorted(set(ids))):
                    stmt = sa.delete(_ENTRY).where(_ENTRY.c.id.in_(chunk))
                    deleted += conn.execute(stmt).rowcount
            return deleted

        return self._retrying(write)

    def record_hits(self, hits: dict[str, tuple[int, float]], *, renew_ttl: bool = False) -> None:
        """Apply buffered hit bookkeeping: id -> (hits, time of the last one); ``renew_ttl``
        (a sliding TTL) moves each row's expiry to that time plus the row's own ``ttl``.

        A hit noted before the row was written (an entry replaced or re-inserted since) is not
        applied: the new row keeps the expiry its own insert gave it. Rows are updated in id
        order, like every other writer, so two processes flushing hit batches (or a remove
        beside them) do not lock rows in opposite orders.
        """
        if not hits:
            return
        values = [
            {"hit_id": entry_id, "hits": count, "hit_at": at}
            for entry_id, (count, at) in sorted(hits.items())
        ]
        stmt = _RENEW_HITS if renew_ttl else _RECORD_HITS

        def write() -> None:
            with self._engine.begin() as conn:
                conn.execute(stmt, values)

        self._retrying(write)

    def count(self, partition_id: str | None = None) -> int:
        """Number of entries, in one partition or overall."""
        stmt = select(func.count()).select_from(EntryRow)
        if partition_id is not None:
            stmt = stmt.where(EntryRow.partition_id == partition_id)
        with self._session() as s:
            return int(s.exec(stmt).one())

    def ids_of(self, partition_id: str) -> list[str]:
        """Every entry id of a partition (integrity checks)."""
        with self._session() as s:
            return list(s.exec(select(EntryRow.id).where(EntryRow.partition_id == partition_id)))

    def partition_counts(self) -> dict[str, tuple[int, int, int]]:
        """partition id -> (entries, total hits, answer tokens served by hits)."""
        stmt = select(
            EntryRow.partition_id,
            func.count(),
            func.coalesce(func.sum(EntryRow.hit_count), 0),
            func.coalesce(func.sum(EntryRow.hit_count * EntryRow.answer_tokens), 0),
        ).group_by(EntryRow.partition_id)
        with self._session() as s:
            return {pid: (int(n), int(h), int(t)) for pid, n, h, t in s.exec(stmt)}

    def export(
        self, tenant: str | None = None, *, now: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every live entry (of one tenant, or all) as a JSON-able record with its partition's
        fields (:func:`~.rows.export_record`).

        Expired entries are left out: an import would bring them back. A row whose stored JSON
        is corrupt is skipped with a warning whose ``extra`` names it as ``modelcache_skipped``,
        so that a caller can count the skipped rows.
        """
        at = time.time() if now is None else now
        partitions = {p.id: p for p in self.find_partitions(tenant=tenant)}
        with self._engine.connect() as conn:
            for chunk in _chunks(list(partitions)):
                stmt = sa.select(_ENTRY).where(_ENTRY.c.partition_id.in_(chunk), _IS_LIVE)
                for row in conn.execute(stmt, {"now": at}).mappings():
                    try:
                        record = export_record(partitions[row["partition_id"]], dict(row))
                    except ValueError as exc:
                        log.warning(
                            "modelcache export: skipped entry %s, its stored data is corrupt: %s",
                            row["id"],
                            exc,
                            extra={"modelcache_skipped": row["id"]},
                        )
                        continue
                    yield record

    # ---- chunk vectors -----------------------------------------------------------------------
    def chunk_vectors(self, partition_id: str, digests: Sequence[str]) -> dict[str, str]:
        """Stored chunk vectors (encoded) of one partition, by digest; unknown digests absent."""
        if not digests:
            return {}
        if self._raw_reads:
            return {
                digest: vector
                for chunk in _chunks(digests)
                for digest, vector in self._raw_read(
                    _RAW_CHUNKS.format(",".join("?" * len(chunk))), (partition_id, *chunk)
                )
            }
        with self._engine.connect() as conn:
            return {
                digest: vector
                for chunk in _chunks(digests)
                for digest, vector in conn.execute(
                    _CHUNKS, {"pid": partition_id, "digests": list(chunk)}
                )
            }

    def put_chunk_vectors(self, partition_id: str, vectors: dict[str, str], now: float) -> None:
        """Store chunk vectors (digest -> encoded vector) of a partition, replacing any with
        the same digest; in digest order, like every other writer."""
        if not vectors:
            return
        values = [
            {"partition_id": partition_id, "digest": d, "vector": v, "stored_at": now}
            for d, v in sorted(vectors.items())
        ]
        self._retrying(lambda: self._write_chunks(values))

    def _write_chunks(self, values: list[dict[str, Any]]) -> None:
        with self._engine.begin() as conn:
            conn.execute(self._upsert_chunks, values)

    @functools.cached_property
    def _upsert_chunks(self) -> Any:
        return self._native_upsert(_CHUNK_TABLE, ["partition_id", "digest"])

    def trim_chunk_vectors(self, keep: int) -> int:
        """Delete all but the ``keep`` most recently stored chunk vectors (ties, such as one bulk
        load's, broken by partition and digest); returns how many."""
        order = (
            col(ChunkRow.stored_at).desc(),
            col(ChunkRow.partition_id).desc(),
            col(ChunkRow.digest).desc(),
        )
        last_kept = (
            select(ChunkRow.stored_at, ChunkRow.partition_id, ChunkRow.digest)
            .order_by(*order)
            .offset(max(0, keep - 1))
            .limit(1)
        )

        def write() -> int:
            with self._session() as s:
                if keep > 0:
                    found = s.exec(last_kept).first()
                    if found is None:
                        return 0
                    at, pid, digest = found
                    older = sa.or_(
                        col(ChunkRow.stored_at) < at,
                        sa.and_(
                            col(ChunkRow.stored_at) == at,
                            sa.or_(
                                col(ChunkRow.partition_id) < pid,
                                sa.and_(
                                    col(ChunkRow.partition_id) == pid, col(ChunkRow.digest) < digest
                                ),
                            ),
                        ),
                    )
                    result = s.exec(delete(ChunkRow).where(older))
                else:
                    result = s.exec(delete(ChunkRow))
                s.commit()
                return int(result.rowcount or 0)

        return self._retrying(write)

    # ---- maintenance -------------------------------------------------------------------------
    def expired(self, now: float, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` expired entries, as (id, partition), soonest expired first."""
        stmt = (
            select(EntryRow.id, EntryRow.partition_id)
            .where(col(EntryRow.expires_at).is_not(None), col(EntryRow.expires_at) <= now)
            .order_by(sa.asc(EntryRow.expires_at))
            .limit(limit)
        )
        with self._session() as s:
            return [(i, p) for i, p in s.exec(stmt)]

    def eviction_order(
        self, policy: str, limit: int, partition_id: str | None, protect: Sequence[str] = ()
    ) -> list[tuple[str, str]]:
        """The first ``limit`` entries in a policy's :data:`EVICTION_ORDER`, as (id, partition):
        of one partition, or of the whole cache with ``partition_id=None``; never ``protect``."""
        stmt = select(EntryRow.id, EntryRow.partition_id)
        if partition_id is not None:
            stmt = stmt.where(EntryRow.partition_id == partition_id)
        if protect:
            stmt = stmt.where(col(EntryRow.id).not_in(list(protect)))
        stmt = stmt.order_by(*EVICTION_ORDER[policy], col(EntryRow.id).asc()).limit(limit)
        with self._session() as s:
            return [(i, p) for i, p in s.exec(stmt)]

    # ---- query log ---------------------------------------------------------------------------
    def append_log(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert query-log rows (LogRow's columns as plain dicts) with one prepared statement."""
        with self._engine.begin() as conn:
            conn.execute(sa.insert(_LOG), list(rows))

    def purge_log(self, older_than: float) -> int:
        """Delete log rows written before ``older_than``; returns how many."""
        with self._session() as s:
            result = s.exec(delete(LogRow).where(col(LogRow.at) < older_than))
            s.commit()
            return int(result.rowcount or 0)

    def iter_log(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Log rows as dicts, oldest first, read in pages.

        A hit's row carries ``answer_tokens`` of its entry (``None`` once the entry is gone), so
        a report can count the tokens the hit saved without a second pass over the entries.
        """
        last_id = 0
        while True:
            stmt = select(LogRow, EntryRow.answer_tokens).outerjoin(
                EntryRow, col(EntryRow.id) == col(LogRow.entry_id)
            )
            stmt = stmt.where(col(LogRow.id) > last_id)
            if since is not None:
                stmt = stmt.where(col(LogRow.at) >= since)
            with self._session() as s:
                rows = list(s.exec(stmt.order_by(col(LogRow.id)).limit(_LOG_PAGE)))
            if not rows:
                return
            for row, answer_tokens in rows:
                yield {**json.loads(row.model_dump_json()), "answer_tokens": answer_tokens}
            last_id = int(rows[-1][0].id or 0)

    def close(self) -> None:
        """Dispose of the connection pool."""
        if self._watchdog is not None:
            self._watchdog.stop()
        self._engine.dispose()


def _sqlite_pragmas(timeout: float, dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={max(1, round(timeout * 1000))}")
    cur.close()


def _mysql_session(timeout: float, dbapi_conn: Any, _record: Any) -> None:
    """A server-side statement timeout: MariaDB's max_statement_time, MySQL's for SELECTs."""
    cur = dbapi_conn.cursor()
    try:
        if "mariadb" in str(dbapi_conn.get_server_info()).lower():
            cur.execute(f"SET SESSION max_statement_time={timeout:.3f}")
        else:
            cur.execute(f"SET SESSION max_execution_time={max(1, round(timeout * 1000))}")
    except Exception as exc:  # an old server without either: the driver timeouts still hold
        log.debug("modelcache: no statement timeout on this MySQL server: %r", exc)
    finally:
        cur.close()


def _check_sqlite_file(path: Path) -> None:
    """Refuse an existing but empty database file: SQLite would silently open it as empty."""
    if path.is_file() and path.stat().st_size == 0:
        raise BackendError(
            f"the SQLite file {path} exists but is empty (0 bytes): it was truncated or replaced, "
            "and opening it would silently start an empty cache. Restore it from a backup, or "
            "move it (and the chroma folder beside it) away to start a new cache."
        )


def _is_corrupt(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return "not a database" in text or "malformed" in text or "disk image" in text


def _corrupt_message(path: str, exc: BaseException) -> str:
    return (
        f"the SQLite file {path} is corrupt ({getattr(exc, 'orig', exc)}); refusing to open it "
        "rather than start an empty cache over it. Restore it from a backup, or move it (and "
        "the chroma folder beside it) away to start a new cache."
    )
