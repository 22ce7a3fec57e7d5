"""The stored schema: the settings a cache was written with, checked on open, and the in-place
upgrade of an older store (the engine's open calls :func:`check_settings`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import IncompatibleCacheError
from ..request import stored_conversation_text
from ..vectors.recall import embed_entries
from .models import EntryRow
from .rows import encode_vector

if TYPE_CHECKING:
    from ..embedding import Embedder
    from ..vectors import VectorStore
    from .sql import SQLStore

__all__ = ["SCHEMA_VERSION", "check_settings"]

log = logging.getLogger("modelcache")

# 2: follow-up vectors carried their replies digest; 3: a follow-up's context vector embeds every
# earlier turn and its recall vector is query + context (see vectors.recall)
SCHEMA_VERSION = "3"
_UPGRADE_BATCH = 500  # rows re-embedded together by an upgrade


def check_settings(store: SQLStore, vectors: VectorStore, embedder: Embedder) -> None:
    """Upgrade a version-1/2 store written by the same embedder, then refuse one written with
    other settings (IncompatibleCacheError) and record the settings of a new one."""
    wanted = {
        "schema_version": SCHEMA_VERSION,
        "embedder": embedder.name,
        "dimension": str(embedder.dimension),
        "metric": "cosine",
    }
    stored = store.get_meta()
    if stored.get("schema_version") in ("1", "2") and stored.get("embedder") == embedder.name:
        _upgrade_conversations(store, vectors, embedder)
        store.replace_meta("schema_version", SCHEMA_VERSION)
        stored["schema_version"] = SCHEMA_VERSION
    for key, value in wanted.items():
        if key in stored and stored[key] != value:
            raise IncompatibleCacheError(
                f"this cache was written with {key}={stored[key]!r} but is opened with "
                f"{value!r}; open it with the same embedder or use a new path/database"
            )
    store.set_meta(wanted)


def _upgrade_conversations(store: SQLStore, vectors: VectorStore, embedder: Embedder) -> None:
    """Upgrade a version-1/2 store: re-embed each follow-up's context (every earlier turn,
    not the user turns only) and store its recall vector (query + context)."""
    by_partition: dict[str, list[str]] = {}
    for entry_id, partition_id, _ in store.histories():
        by_partition.setdefault(partition_id, []).append(entry_id)
    upgraded = 0
    for partition_id, ids in by_partition.items():
        for start in range(0, len(ids), _UPGRADE_BATCH):
            rows = list(store.get_many(ids[start : start + _UPGRADE_BATCH], partition_id).values())
            texts: list[str] = []
            for row in rows:
                try:
                    texts.append(stored_conversation_text(row.history_json))
                except ValueError:
                    texts.append("")  # a corrupt row: its lookups miss, as before
            keep = [(row, text) for row, text in zip(rows, texts, strict=True) if text]
            if not keep:
                continue
            contexts, recall = embed_entries(
                embedder, [row.query for row, _ in keep], [text for _, text in keep]
            )
            store.upsert(
                [
                    EntryRow.model_construct(
                        **{**row.model_dump(), "context_vector": encode_vector(context)}
                    )
                    for (row, _), context in zip(keep, contexts, strict=True)
                    if context is not None  # every kept row has a context
                ]
            )
            vectors.upsert(partition_id, [row.id for row, _ in keep], recall)
            upgraded += len(keep)
    log.info(
        "modelcache: upgraded the store to schema %s (%d follow-ups)", SCHEMA_VERSION, upgraded
    )
