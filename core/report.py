"""What the cache did over a stretch of traffic, computed from the query log.

One function, :func:`summarize`, turns query-log rows (``Cache.export_log()`` or the JSON lines
of ``modelcache export --log``) into hit rate by hour, latency by hit kind, and tokens and time
saved; ``modelcache report``, ``modelcache stats --since`` and the notebooks all print it.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

__all__ = ["HourSummary", "LatencySummary", "LogSummary", "parse_since", "summarize"]

# A miss and the insert of the same query further apart than this are not one LLM call.
_MAX_LLM_GAP_S = 600.0
_KINDS = ("exact", "semantic", "miss")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


@dataclass(frozen=True)
class HourSummary:
    """Lookups, hits and tokens saved in one clock hour (UTC) that had traffic."""

    start: float
    lookups: int
    hits: int
    tokens_saved: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits over lookups in this hour."""
        return self.hits / self.lookups if self.lookups else 0.0


@dataclass(frozen=True)
class LatencySummary:
    """Lookup latency of one kind of outcome (exact hit, semantic hit or miss)."""

    count: int
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class PartitionSummary:
    """Lookups and hits of one partition in the summarized rows."""

    tenant: str
    model: str
    lookups: int = 0
    hits: int = 0


@dataclass(frozen=True)
class LogSummary:
    """Hit rate, latency and savings of the lookups in a query log.

    ``tokens_saved`` adds the answer tokens of every hit whose entry is still stored
    (``hits_without_tokens`` counts the others). ``llm_seconds`` is the median gap between a
    miss and the insert of the same query, i.e. the application's LLM call as the log saw it;
    ``time_saved_s`` is, for every hit, that median less the hit's own lookup time. Both are
    ``None`` when the log holds no miss followed by its insert.
    """

    first_at: float | None
    last_at: float | None
    lookups: int
    hits: int
    exact_hits: int
    semantic_hits: int
    inserts: int
    tokens_saved: int
    hits_without_tokens: int
    llm_seconds: float | None
    time_saved_s: float | None
    hours: list[HourSummary] = field(default_factory=list)
    latency: dict[str, LatencySummary] = field(default_factory=dict)
    partitions: dict[str, PartitionSummary] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        """Hits over lookups."""
        return self.hits / self.lookups if self.lookups else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (hit rates included) for ``--json`` and the HTTP service."""
        data = asdict(self)
        data["hit_rate"] = self.hit_rate
        for hour, row in zip(data["hours"], self.hours, strict=True):
            hour["hit_rate"] = row.hit_rate
        return data


def summarize(rows: Iterable[Mapping[str, Any]], *, since: float | None = None) -> LogSummary:
    """Summarize query-log rows (oldest first), those at or after ``since`` when given."""
    lookups = hits = exact = semantic = inserts = tokens = without_tokens = 0
    first_at: float | None = None
    last_at = None
    hours: dict[float, list[int]] = {}  # start -> [lookups, hits, tokens]
    latencies: dict[str, list[float]] = {kind: [] for kind in _KINDS}
    hit_latency_s: list[float] = []
    partitions: dict[str, list[Any]] = {}
    open_misses: dict[tuple[str, str], float] = {}
    gaps: list[float] = []
    for row in rows:
        at = float(row["at"])
        if since is not None and at < since:
            continue
        first_at = at if first_at is None else min(first_at, at)
        last_at = at if last_at is None else max(last_at, at)
        key = (str(row.get("partition_id", "")), str(row.get("query", "")))
        if row.get("op") == "insert":
            inserts += 1
            missed_at = open_misses.pop(key, None)
            if missed_at is not None and 0 <= at - missed_at <= _MAX_LLM_GAP_S:
                gaps.append(at - missed_at)
            continue
        if row.get("op") != "lookup":
            continue
        hit = bool(row.get("hit"))
        lookups += 1
        bucket = hours.setdefault(at - at % 3600, [0, 0, 0])
        bucket[0] += 1
        part = partitions.setdefault(key[0], [row.get("tenant", ""), row.get("model", ""), 0, 0])
        part[2] += 1
        latency_ms = float(row.get("latency_ms") or 0.0)
        if not hit:
            latencies["miss"].append(latency_ms)
            open_misses[key] = at
            continue
        hits += 1
        bucket[1] += 1
        part[3] += 1
        kind = "exact" if row.get("kind") == "exact" else "semantic"
        exact += kind == "exact"
        semantic += kind == "semantic"
        latencies[kind].append(latency_ms)
        hit_latency_s.append(latency_ms / 1000)
        answer_tokens = row.get("answer_tokens")
        if answer_tokens is None:
            without_tokens += 1
        else:
            tokens += int(answer_tokens)
            bucket[2] += int(answer_tokens)
    llm_seconds = statistics.median(gaps) if gaps else None
    time_saved = (
        sum(max(llm_seconds - s, 0.0) for s in hit_latency_s) if llm_seconds is not None else None
    )
    return LogSummary(
        first_at=first_at,
        last_at=last_at,
        lookups=lookups,
        hits=hits,
        exact_hits=exact,
        semantic_hits=semantic,
        inserts=inserts,
        tokens_saved=tokens,
        hits_without_tokens=without_tokens,
        llm_seconds=llm_seconds,
        time_saved_s=time_saved,
        hours=[HourSummary(start, *counts) for start, counts in sorted(hours.items())],
        latency={kind: _latency(values) for kind, values in latencies.items()},
        partitions={pid: PartitionSummary(*values) for pid, values in partitions.items()},
    )


def _latency(values: list[float]) -> LatencySummary:
    if not values:
        return LatencySummary(0, None, None)
    p50, p95 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95])
    return LatencySummary(len(values), float(p50), float(p95))


def parse_since(text: str, *, now: float) -> float:
    """A start time from ``24h``/``30m``/``7d`` (ago), an ISO date or time, or epoch seconds.

    An ISO time without a zone is taken as UTC, the zone the report prints hours in.
    """
    match = _DURATION.match(text)
    if match:
        return now - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a duration like 24h, 30m or 7d, an ISO time like "
            "2026-11-30T08:00, or epoch seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
