"""Acceptance of recalled candidates: threshold, context match, guard, optional verifier.

Semantic similarity is not answer equality, so a candidate must pass every stage, best
similarity first; the first one that does is the hit.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import CacheConfig
from .crowding import crowding_threshold
from .embedding.base import Thresholds, thresholds_of
from .request import Request, stored_replies_digest
from .storage.models import EntryRow

if TYPE_CHECKING:
    from .embedding.base import Embedder

__all__ = ["Acceptor", "Candidate", "decode_vector", "encode_vector", "resolve_thresholds"]

log = logging.getLogger("modelcache")


def encode_vector(vector: np.ndarray) -> str:
    """Base64 of a float32 vector: compact, JSON-safe, never pickled."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    """Inverse of :func:`encode_vector`."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def resolve_thresholds(config: CacheConfig, embedder: Embedder) -> Thresholds:
    """The thresholds in force: each config field that is set, else the embedder's value."""
    base = thresholds_of(embedder)
    return Thresholds(
        short=_pick(config.similarity_threshold, base.short),
        long=_pick(config.similarity_threshold_long, base.long),
        followup=_pick(config.similarity_threshold_followup, base.followup),
        context=_pick(config.context_threshold, base.context),
    )


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


def _row_replies(row: EntryRow) -> str:
    """Replies digest of a stored entry's history (the same one the request computes)."""
    try:
        return stored_replies_digest(row.history_json)
    except ValueError:
        return "\x00corrupt"  # never equal to a request's digest


@dataclass(frozen=True)
class Candidate:
    """A recalled row with its cosine similarity to the request's query."""

    row: EntryRow
    similarity: float


class Acceptor:
    """Decides which candidate, if any, answers a request."""

    def __init__(
        self,
        config: CacheConfig,
        embedder: Embedder,
        verifier: Any | None = None,
    ) -> None:
        self._config = config
        self._embedder = embedder
        self.thresholds = resolve_thresholds(config, embedder)
        self._guard: Any | None = None
        if config.guard:
            from .guard import Guard

            self._guard = Guard()
            # word lists and jieba's dictionary take about a second: load them now, off the
            # caller's thread, instead of inside the first (Chinese) lookup
            threading.Thread(
                target=self._guard.warm, name="modelcache-guard-warm", daemon=True
            ).start()
        if verifier is None and config.verifier is not None:
            verifier = config.verifier
        self._verifier: Any | None = None
        if verifier is not None:
            from .verifier import load_verifier

            self._verifier = load_verifier(verifier)

    def threshold_for(self, request: Request, override: float | None) -> float:
        """Per-call override, else the long, follow-up or short threshold of the query."""
        if override is not None:
            return override
        if self._embedder.count_tokens(request.query_text) >= self._config.long_query_tokens:
            return self.thresholds.long
        if request.history:
            return self.thresholds.followup
        return self.thresholds.short

    def _context_matches(
        self, request: Request, request_ctx: np.ndarray | None, row: EntryRow
    ) -> bool:
        """Same earlier replies (exactly) and similar earlier user turns."""
        if bool(request.history) != (row.history_json not in ("", "[]")):
            return False
        if request.history and _row_replies(row) != request.replies_digest:
            return False
        if request_ctx is None or not row.context_text:
            return request_ctx is None and not row.context_text
        if row.context_vector is None:
            return False
        similarity = float(np.dot(request_ctx, decode_vector(row.context_vector)))
        return similarity >= self.thresholds.context

    def choose(
        self,
        request: Request,
        candidates: Sequence[Candidate],
        threshold: float,
        context_vector: np.ndarray | None,
        is_usable: Callable[[EntryRow], bool],
    ) -> Candidate | None:
        """The best candidate passing threshold, context, guard and verifier, or None."""
        margin = self._config.crowding_margin
        if (
            margin is not None
            and not request.history
            and self._embedder.count_tokens(request.query_text) < self._config.long_query_tokens
        ):
            # a short standalone query must also stand out from its runner-up
            threshold = crowding_threshold(
                [c.similarity for c in candidates],
                threshold,
                margin,
                self._config.crowding_rank,
            )
        passing: list[Candidate] = []
        for cand in sorted(candidates, key=lambda c: -c.similarity):
            if cand.similarity < threshold:
                break
            if (
                cand.row.attachments != request.attachment_digest
                or not self._context_matches(request, context_vector, cand.row)
                or not is_usable(cand.row)
            ):
                continue
            if self._guard is not None:
                reason = self._guard.conflict(request.query_text, cand.row.query)
                if reason is not None:
                    log.debug("guard rejected %s: %s", cand.row.id, reason)
                    continue
            passing.append(cand)
        if not passing or self._verifier is None:
            return passing[0] if passing else None
        band = threshold + self._config.verifier_band
        unsure = [c for c in passing if c.similarity < band]
        scores = dict(
            zip(
                (c.row.id for c in unsure),
                self._verifier.score([(request.query_text, c.row.query) for c in unsure]),
                strict=True,
            )
        )
        for cand in passing:
            score = scores.get(cand.row.id)
            if score is None or score >= self._config.verifier_threshold:
                return cand
        return None
