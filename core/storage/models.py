"""SQLModel tables of the scalar store: settings, partitions, entries, chunk vectors, query log."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlmodel import Field, SQLModel

__all__ = ["ChunkRow", "EntryRow", "LogRow", "MetaRow", "PartitionRow"]

# MySQL's TEXT holds 64 KiB; answers and conversations can be longer.
_LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def _text(nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(_LongText, nullable=nullable)


def _time(nullable: bool = False, index: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(sa.Double(), nullable=nullable, index=index)


class MetaRow(SQLModel, table=True):
    """Settings the data was written with (embedder, dimension, metric, schema version)."""

    __tablename__ = "modelcache_meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_column=_text())


class PartitionRow(SQLModel, table=True):
    """One isolation unit: tenant, env, model, generation parameters and system prompt."""

    __tablename__ = "modelcache_partition"

    id: str = Field(primary_key=True, max_length=32)
    tenant: str = Field(max_length=191, index=True)
    env: str = Field(max_length=64)
    model: str = Field(max_length=191, index=True)
    params_json: str = Field(sa_column=_text())
    system_hash: str = Field(max_length=32)
    system: str = Field(default="", sa_column=_text())
    created_at: float = Field(sa_column=_time())


class EntryRow(SQLModel, table=True):
    """A cached answer. Its id is the request's exact key, so storing twice overwrites."""

    __tablename__ = "modelcache_entry"
    __table_args__ = (
        sa.Index("ix_entry_partition_created", "partition_id", "created_at"),
        sa.Index("ix_entry_partition_lasthit", "partition_id", "last_hit_at"),
        sa.Index("ix_entry_partition_hits", "partition_id", "hit_count", "last_hit_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    partition_id: str = Field(max_length=32, index=True)
    query: str = Field(sa_column=_text())
    history_json: str = Field(sa_column=_text())
    context_text: str = Field(sa_column=_text())
    context_vector: str | None = Field(default=None, sa_column=_text(nullable=True))
    attachments: str = Field(default="", max_length=32)
    answer_json: str = Field(sa_column=_text())
    metadata_json: str = Field(sa_column=_text())
    answer_tokens: int = Field(default=0)
    created_at: float = Field(sa_column=_time())
    last_hit_at: float = Field(sa_column=_time())
    hit_count: int = Field(default=0)
    ttl: float | None = Field(default=None, sa_column=_time(nullable=True))
    expires_at: float | None = Field(default=None, sa_column=_time(nullable=True, index=True))


class ChunkRow(SQLModel, table=True):
    """The vector of one chunk of a long text stored in a partition, keyed by a digest of the
    chunk: a process that did not embed it (another worker, a restart) reads it instead."""

    __tablename__ = "modelcache_chunk"
    __table_args__ = (sa.Index("ix_chunk_stored", "stored_at", "partition_id", "digest"),)  # trim

    partition_id: str = Field(primary_key=True, max_length=32)
    digest: str = Field(primary_key=True, max_length=32)
    vector: str = Field(sa_column=_text())
    stored_at: float = Field(sa_column=_time())


class LogRow(SQLModel, table=True):
    """One lookup or insert, written asynchronously ("data backflow")."""

    __tablename__ = "modelcache_log"

    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(sa_column=_time(index=True))
    op: str = Field(max_length=16)
    partition_id: str = Field(max_length=32, index=True)
    tenant: str = Field(max_length=191)
    model: str = Field(max_length=191)
    query: str = Field(sa_column=_text())
    hit: bool = Field(default=False)
    kind: str | None = Field(default=None, max_length=16)
    similarity: float | None = Field(default=None, sa_column=_time(nullable=True))
    entry_id: str | None = Field(default=None, max_length=32)
    matched_query: str | None = Field(default=None, sa_column=_text(nullable=True))
    latency_ms: float = Field(sa_column=_time())
