"""The scalar store: entries, partitions and settings in SQL (SQLite, MySQL/MariaDB, PostgreSQL)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, delete, func, select, update

from ..errors import BackendError, ConfigError
from ..request import Partition
from .models import EntryRow, LogRow, MetaRow, PartitionRow

__all__ = ["SQLStore"]

_CHUNK = 500  # rows per IN (...) list: well under every dialect's parameter limit
_ENTRY = EntryRow.__table__  # type: ignore[attr-defined]
_LIVE = sa.select(_ENTRY).where(
    _ENTRY.c.id == sa.bindparam("id"),
    _ENTRY.c.partition_id == sa.bindparam("pid"),
    sa.or_(_ENTRY.c.expires_at.is_(None), _ENTRY.c.expires_at > sa.bindparam("now")),
)
# By primary key only: with a partition filter beside it, SQLite's planner picks the partition
# index and scans the whole partition (12 ms at 30k entries instead of 0.1 ms).
_MANY = sa.select(_ENTRY).where(_ENTRY.c.id.in_(sa.bindparam("ids", expanding=True)))


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


class SQLStore:
    """SQLModel-backed rows; every method is one short transaction."""

    def __init__(self, url: str) -> None:
        try:
            self.url = sa.make_url(url)
        except sa.exc.ArgumentError as exc:
            raise ConfigError(f"invalid sql_url {url!r}: {exc}") from exc
        kwargs: dict[str, Any] = {}
        if self.url.get_backend_name() == "sqlite":
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False}
        else:  # network databases drop idle connections; SQLite files never do
            kwargs.update(pool_pre_ping=True, pool_recycle=3600)
        try:
            self.engine: Engine = sa.create_engine(self.url, **kwargs)
            if self.url.get_backend_name() == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            SQLModel.metadata.create_all(
                self.engine,
                tables=[t.__table__ for t in (MetaRow, PartitionRow, EntryRow, LogRow)],  # type: ignore[attr-defined]
            )
        except sa.exc.SQLAlchemyError as exc:
            raise BackendError(f"cannot open SQL store {self.url!r}: {exc}") from exc

    @property
    def dialect(self) -> str:
        """Backend name: sqlite, mysql, postgresql."""
        return self.url.get_backend_name()

    def session(self) -> Session:
        """A new session; callers use it as a context manager."""
        return Session(self.engine, expire_on_commit=False)

    # ---- settings ----------------------------------------------------------------------------
    def get_meta(self) -> dict[str, str]:
        """All stored settings."""
        with self.session() as s:
            return {row.key: row.value for row in s.exec(select(MetaRow))}

    def set_meta(self, values: dict[str, str]) -> None:
        """Store settings that are not stored yet."""
        with self.session() as s:
            existing = {row.key for row in s.exec(select(MetaRow))}
            s.add_all(MetaRow(key=k, value=v) for k, v in values.items() if k not in existing)
            s.commit()

    def replace_meta(self, key: str, value: str) -> None:
        """Overwrite one stored setting (a schema upgrade)."""
        with self.session() as s:
            s.merge(MetaRow(key=key, value=value))
            s.commit()

    # ---- partitions --------------------------------------------------------------------------
    def ensure_partition(self, partition: Partition, now: float) -> None:
        """Create the partition row if missing (idempotent, race-tolerant)."""
        with self.session() as s:
            if s.get(PartitionRow, partition.id) is not None:
                return
            s.add(
                PartitionRow(
                    id=partition.id,
                    tenant=partition.tenant,
                    env=partition.env,
                    model=partition.model,
                    params_json=partition.params_json,
                    system_hash=partition.system_hash,
                    system=partition.system,
                    created_at=now,
                )
            )
            try:
                s.commit()
            except sa.exc.IntegrityError:
                s.rollback()

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
        with self.session() as s:
            rows = list(s.exec(stmt))
        return [
            row for row in rows if all(v is None or getattr(row, k) == v for k, v in wanted.items())
        ]

    def delete_all(self) -> int:
        """Delete every entry and partition; returns the number of entries deleted."""
        with self.session() as s:
            deleted = int(s.exec(delete(EntryRow)).rowcount or 0)
            s.exec(delete(PartitionRow))
            s.commit()
        return deleted

    def entry_partitions(self) -> list[str]:
        """Partition ids that have entries (including rows whose partition row is gone)."""
        with self.session() as s:
            return list(s.exec(select(EntryRow.partition_id).distinct()))

    def delete_partitions(self, partition_ids: Sequence[str]) -> int:
        """Delete partitions with all their entries; returns the number of entries deleted."""
        deleted = 0
        with self.session() as s:
            for chunk in _chunks(list(partition_ids)):
                result = s.exec(delete(EntryRow).where(col(EntryRow.partition_id).in_(chunk)))
                deleted += result.rowcount or 0
                s.exec(delete(PartitionRow).where(col(PartitionRow.id).in_(chunk)))
            s.commit()
        return deleted

    def histories(self) -> list[tuple[str, str, str]]:
        """(id, partition id, history JSON) of every entry that has earlier turns."""
        with self.session() as s:
            rows = s.exec(
                select(EntryRow.id, EntryRow.partition_id, EntryRow.history_json).where(
                    EntryRow.history_json != "[]"
                )
            )
            return [(str(i), str(p), str(h)) for i, p, h in rows]

    # ---- entries -----------------------------------------------------------------------------
    def get_live(self, entry_id: str, partition_id: str, now: float) -> EntryRow | None:
        """The entry with this id in this partition, unless expired (the exact path).

        Core SQL with a prebuilt statement and unvalidated row objects: this is the sub-millisecond
        path, and the ORM's per-call statement building costs more than the query itself.
        """
        with self.engine.connect() as conn:
            found = conn.execute(_LIVE, {"id": entry_id, "pid": partition_id, "now": now}).first()
        return EntryRow.model_construct(**found._mapping) if found is not None else None

    def get_many(self, ids: Sequence[str], partition_id: str) -> dict[str, EntryRow]:
        """Rows of these ids restricted to one partition (isolation is enforced here too)."""
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(_MANY, {"ids": list(ids)}).all()
        return {
            row.id: EntryRow.model_construct(**row._mapping)
            for row in rows
            if row.partition_id == partition_id  # isolation: never another partition's row
        }

    def upsert(self, rows: Sequence[EntryRow]) -> None:
        """Insert rows, replacing any row with the same id (idempotent writes).

        A native upsert per dialect (ON CONFLICT / ON DUPLICATE KEY), in id order, so that
        concurrent writers of the same key neither violate the key nor deadlock; a deadlock
        that MySQL still reports is retried.
        """
        if not rows:
            return
        values = [r.model_dump() for r in sorted(rows, key=lambda r: r.id)]
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    conn.execute(self._upsert, values)  # one prepared statement, executemany
                return
            except sa.exc.OperationalError:
                if attempt == 2 or self.dialect != "mysql":
                    raise

    @functools.cached_property
    def _upsert(self) -> Any:
        updated = [c.name for c in _ENTRY.columns if c.name != "id"]
        if self.dialect == "mysql":
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            stmt = mysql_insert(_ENTRY)
            return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in updated})
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as pg_insert
        else:  # pragma: no cover - guarded by the supported URLs
            raise ConfigError(f"unsupported SQL dialect {self.dialect!r}")
        stmt = pg_insert(_ENTRY)
        return stmt.on_conflict_do_update(
            index_elements=["id"], set_={c: stmt.excluded[c] for c in updated}
        )

    def locate(self, ids: Sequence[str]) -> list[tuple[str, str]]:
        """(id, partition_id) of the entries that exist among ``ids``."""
        found: list[tuple[str, str]] = []
        with self.engine.connect() as conn:
            for chunk in _chunks(list(ids)):
                stmt = sa.select(_ENTRY.c.id, _ENTRY.c.partition_id).where(_ENTRY.c.id.in_(chunk))
                found.extend((i, p) for i, p in conn.execute(stmt))
        return found

    def delete_ids(self, ids: Sequence[str]) -> int:
        """Delete entries by id; returns how many rows went."""
        deleted = 0
        with self.engine.begin() as conn:
            for chunk in _chunks(sorted(ids)):
                deleted += conn.execute(sa.delete(_ENTRY).where(_ENTRY.c.id.in_(chunk))).rowcount
        return deleted

    def record_hits(self, hits: dict[str, tuple[int, float, float | None]]) -> None:
        """Apply buffered hit bookkeeping: id -> (extra hits, last hit time, new expiry or None)."""
        if not hits:
            return
        with self.session() as s:
            for entry_id, (count, last, expires) in hits.items():
                values: dict[str, Any] = {
                    "hit_count": EntryRow.hit_count + count,
                    "last_hit_at": last,
                }
                if expires is not None:
                    values["expires_at"] = expires
                s.exec(update(EntryRow).where(EntryRow.id == entry_id).values(**values))  # type: ignore[call-overload]
            s.commit()

    def count(self, partition_id: str | None = None) -> int:
        """Number of entries, in one partition or overall."""
        stmt = select(func.count()).select_from(EntryRow)
        if partition_id is not None:
            stmt = stmt.where(EntryRow.partition_id == partition_id)
        with self.session() as s:
            return int(s.exec(stmt).one())

    def ids_of(self, partition_id: str) -> list[str]:
        """Every entry id of a partition (integrity checks)."""
        with self.session() as s:
            return list(s.exec(select(EntryRow.id).where(EntryRow.partition_id == partition_id)))

    def partition_counts(self) -> dict[str, tuple[int, int, int]]:
        """partition id -> (entries, total hits, answer tokens served by hits)."""
        stmt = select(
            EntryRow.partition_id,
            func.count(),
            func.coalesce(func.sum(EntryRow.hit_count), 0),
            func.coalesce(func.sum(EntryRow.hit_count * EntryRow.answer_tokens), 0),
        ).group_by(EntryRow.partition_id)
        with self.session() as s:
            return {pid: (int(n), int(h), int(t)) for pid, n, h, t in s.exec(stmt)}

    def close(self) -> None:
        """Dispose of the connection pool."""
        self.engine.dispose()
