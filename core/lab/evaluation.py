"""Accuracy evaluation through the public ``Cache`` API (``modelcache eval``, benchmarks).

Protocol (``../shared/data/README.md``): insert every distinct ``a`` once, its answer naming that
text, then look up every ``b``. A hit is correct when it returns the row's own ``a`` and the row
says ``same_answer``; in files with clusters (QQP) when the hit's cluster equals the row's
``b_cluster``. Precision = correct hits / hits; recall = correct hits / lookups that have a
correct entry; false-hit rate = hits on lookups that have none / those lookups.

Supported files: JSONL pairs ``{"a","b","same_answer"[,"a_cluster","b_cluster","lang","kind"]}``;
a JSON list of ``{"origin","similar"}`` (positives only); a JSON list of conversations
``{"u0","u0_duplicate","system_q0","u1","u1_duplicate","system_q1"}`` (multi-turn).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CacheConfig
from ..embedding.base import Thresholds, thresholds_of
from ..engine import Cache
from ..request import Message, Request
from ..verifier import Verifier

__all__ = [
    "Conversation",
    "EvalResult",
    "EvalRow",
    "MemoEmbedder",
    "MemoVerifier",
    "evaluate_file",
    "load_conversations",
    "load_rows",
    "markdown_table",
    "run_multiturn",
    "run_pairs",
]


@dataclass(frozen=True)
class EvalRow:
    """One labelled lookup: insert ``a``, look up ``b``."""

    a: str
    b: str
    same_answer: bool
    a_cluster: int | None = None
    b_cluster: int | None = None
    lang: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class Conversation:
    """A two-turn conversation and its paraphrase (MeanCache's contextual queries)."""

    u0: str
    u0_duplicate: str
    system_q0: str
    u1: str
    u1_duplicate: str
    system_q1: str


@dataclass
class EvalResult:
    """Counts and latencies of one configuration on one set."""

    name: str
    lookups: int = 0
    hits: int = 0
    correct: int = 0
    answerable: int = 0  # lookups with a correct entry in the cache
    unanswerable_hits: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    notes: str = ""

    @property
    def unanswerable(self) -> int:
        """Lookups with no correct entry in the cache."""
        return self.lookups - self.answerable

    @property
    def precision(self) -> float:
        """Correct hits / hits (1.0 with no hit)."""
        return self.correct / self.hits if self.hits else 1.0

    @property
    def recall(self) -> float:
        """Correct hits / lookups that have a correct entry."""
        return self.correct / self.answerable if self.answerable else float("nan")

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r and not np.isnan(r) else 0.0

    @property
    def false_hit_rate(self) -> float:
        """Hits on lookups with no correct entry / those lookups."""
        return self.unanswerable_hits / self.unanswerable if self.unanswerable else float("nan")

    def p(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies_ms:
            return float("nan")
        return float(np.percentile(self.latencies_ms, q))

    def row(self) -> dict[str, Any]:
        """The printed columns."""
        return {
            "configuration": self.name,
            "lookups": self.lookups,
            "hits": self.hits,
            "correct": self.correct,
            "precision": self.precision,
            "recall": self.recall,
            "F1": self.f1,
            "false-hit": self.false_hit_rate,
            "false hits": self.unanswerable_hits,
            "p50 ms": self.p(50),
            "p95 ms": self.p(95),
        }


# ---- data -------------------------------------------------------------------------------------
def load_rows(path: str | os.PathLike[str], limit: int | None = None) -> list[EvalRow]:
    """Pair rows from a JSONL pair file or a JSON list of ``{"origin","similar"}``."""
    text = Path(path).read_text(encoding="utf-8")
    rows: list[EvalRow] = []
    if text.lstrip().startswith("["):
        for number, item in enumerate(json.loads(text), 1):
            try:
                if "origin" in item:
                    rows.append(EvalRow(str(item["origin"]), str(item["similar"]), True))
                else:
                    rows.append(_row(item))
            except (KeyError, TypeError) as exc:
                raise ValueError(
                    f"{path}: item {number}: expected an object with origin and similar, or "
                    f"a, b and same_answer ({exc!r})"
                ) from exc
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(_row(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{path}:{number}: expected a JSON object with a, b and same_answer ({exc!r})"
                ) from exc
    return rows[:limit] if limit is not None else rows


def _row(item: dict[str, Any]) -> EvalRow:
    return EvalRow(
        a=str(item["a"]),
        b=str(item["b"]),
        same_answer=bool(item["same_answer"]),
        a_cluster=item.get("a_cluster"),
        b_cluster=item.get("b_cluster"),
        lang=item.get("lang"),
        kind=item.get("kind"),
    )


def load_conversations(path: str | os.PathLike[str]) -> list[Conversation]:
    """Conversations from a multi-turn JSON file."""
    conversations = []
    for number, item in enumerate(json.loads(Path(path).read_text(encoding="utf-8")), 1):
        try:
            conversations.append(
                Conversation(**{k: str(v) for k, v in item.items() if k in _CONV_KEYS})
            )
        except (AttributeError, TypeError) as exc:
            raise ValueError(
                f"{path}: item {number}: expected an object with {', '.join(_CONV_KEYS)}"
            ) from exc
    return conversations


_CONV_KEYS = ("u0", "u0_duplicate", "system_q0", "u1", "u1_duplicate", "system_q1")


def is_conversation_file(path: str | os.PathLike[str]) -> bool:
    """Whether the file holds multi-turn conversations."""
    text = Path(path).read_text(encoding="utf-8").lstrip()
    if not text.startswith("["):
        return False
    items = json.loads(text)
    return bool(items) and isinstance(items[0], dict) and "u1" in items[0]


# ---- memoisation (benchmarks sweep many configurations over the same texts) --------------------
class MemoEmbedder:
    """Wraps an embedder, remembering vectors and the time each first cost.

    Sweeping thresholds re-embeds the same queries; the memo keeps that affordable while
    :meth:`cost_ms` lets the benchmark add the real embedding time back to each lookup.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._vectors: dict[str, np.ndarray] = {}
        self._cost: dict[str, float] = {}

    @property
    def name(self) -> str:
        """The wrapped embedder's name (what the cache stores)."""
        return str(self._inner.name)

    @property
    def dimension(self) -> int:
        """The wrapped embedder's dimension."""
        return int(self._inner.dimension)

    def count_tokens(self, text: str) -> int:
        """Delegated."""
        return int(self._inner.count_tokens(text))

    @property
    def thresholds(self) -> Thresholds:
        """The wrapped embedder's calibrated thresholds, so defaults stay those of the model."""
        return thresholds_of(self._inner)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of the texts, computing only the new ones."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            started = time.perf_counter()
            vectors = self._inner.embed(missing)
            per_text = (time.perf_counter() - started) * 1000 / len(missing)
            for text, vec in zip(missing, vectors, strict=True):
                self._vectors[text] = np.asarray(vec, dtype=np.float32)
                self._cost[text] = per_text
        return np.stack([self._vectors[t] for t in texts])

    def warm(self, texts: Iterable[str], batch_size: int = 256) -> None:
        """Embed many texts in batches; each is charged its single-query cost later."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            vectors = self._inner.embed(chunk)
            for text, vec in zip(chunk, vectors, strict=True):
                self._vectors[text] = np.asarray(vec, dtype=np.float32)
        if todo:  # a single query costs more than its share of a batch: measure a few
            sample = todo[: min(20, len(todo))]
            times = []
            for text in sample:
                started = time.perf_counter()
                self._inner.embed([text])
                times.append((time.perf_counter() - started) * 1000)
            single = statistics.median(times)
            for text in todo:
                self._cost[text] = single

    def cost_ms(self, text: str) -> float:
        """Measured single-query embedding time of a text (0 if unknown)."""
        return self._cost.get(text, 0.0)


class MemoVerifier:
    """Wraps a verifier, remembering scores and their cost per pair."""

    def __init__(self, inner: Verifier) -> None:
        self._inner = inner
        self._scores: dict[tuple[str, str], float] = {}
        self._cost: dict[tuple[str, str], float] = {}
        self.calls = 0
        self.charged_ms = 0.0

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Scores of the pairs, computing only the new ones; charges their measured cost."""
        self.calls += 1
        missing = [p for p in dict.fromkeys(pairs) if p not in self._scores]
        if missing:
            started = time.perf_counter()
            scores = self._inner.score(missing)
            cost = (time.perf_counter() - started) * 1000
            for pair, s in zip(missing, scores, strict=True):
                self._scores[pair] = float(s)
                self._cost[pair] = cost / len(missing)
        self.charged_ms += sum(self._cost[p] for p in pairs)
        return [self._scores[p] for p in pairs]


# ---- running ----------------------------------------------------------------------------------
def insert_rows(cache: Cache, rows: Sequence[EvalRow], batch: int = 256) -> int:
    """Insert every distinct ``a`` (answer: the text; metadata: its cluster)."""
    seen: dict[str, EvalRow] = {}
    for row in rows:
        seen.setdefault(row.a, row)
    items = [
        (Request.from_text(a), a, {"cluster": r.a_cluster} if r.a_cluster is not None else None)
        for a, r in seen.items()
    ]
    plain = [(req, ans) for req, ans, meta in items if meta is None]
    for i in range(0, len(plain), batch):
        cache.insert_many(plain[i : i + batch])
    for req, ans, meta in items:  # insert_many takes one metadata for the whole batch
        if meta is not None:
            cache.insert(req, ans, metadata=meta)
    return len(items)


def run_pairs(
    cache: Cache,
    rows: Sequence[EvalRow],
    name: str,
    *,
    threshold: float | None = None,
    memo: MemoEmbedder | None = None,
    memo_verifier: MemoVerifier | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Look up every ``b`` and score the hits (rows must already be inserted)."""
    clustered = any(r.a_cluster is not None for r in rows)
    clusters = {r.a_cluster for r in rows}
    result = EvalResult(name)
    for row in rows:
        req = Request.from_text(row.b)
        charged = memo_verifier.charged_ms if memo_verifier is not None else 0.0
        started = time.perf_counter()
        hit = cache.lookup(req, threshold=threshold)
        elapsed = (time.perf_counter() - started) * 1000
        if memo is not None:  # add back the embedding and scoring time the memo saved
            elapsed += memo.cost_ms(req.query_text)
        if memo_verifier is not None:
            elapsed += memo_verifier.charged_ms - charged
        result.latencies_ms.append(elapsed)
        result.lookups += 1
        if clustered:
            answerable = row.b_cluster in clusters
            correct = hit is not None and (hit.metadata or {}).get("cluster") == row.b_cluster
        else:
            answerable = row.same_answer
            correct = hit is not None and row.same_answer and hit.answer == row.a
        result.answerable += answerable
        if hit is not None:
            result.hits += 1
            result.correct += correct
            if not answerable:
                result.unanswerable_hits += 1
        if progress is not None:
            progress(1)
    return result


def _history(user: str, assistant: str) -> tuple[Message, ...]:
    return (Message("user", user), Message("assistant", assistant))


def insert_conversations(cache: Cache, convs: Sequence[Conversation]) -> None:
    """Store each first turn and its follow-up (with the first turn as context)."""
    items: list[tuple[Request, Any]] = []
    for c in convs:
        items.append((Request(query=c.u0), c.system_q0))
        items.append((Request(query=c.u1, history=_history(c.u0, c.system_q0)), c.system_q1))
    cache.insert_many(items)


def run_multiturn(
    cache: Cache,
    convs: Sequence[Conversation],
    name: str,
    *,
    threshold: float | None = None,
    memo: MemoEmbedder | None = None,
) -> dict[str, EvalResult]:
    """First-turn paraphrase, paraphrased conversation, and three kinds of wrong context.

    Context swap: conversation *i*'s follow-up asked after conversation *i+1*'s first turn
    (verbatim and paraphrased follow-up); the stored follow-up of *i* must not be served.
    Other follow-up: inside conversation *i* (paraphrased first turn, same reply), the
    paraphrased follow-up of every other conversation about another first turn; serving *i*'s
    stored follow-up is counted as false, although generic follow-ups ("when did it start" /
    "start year") are sometimes the same question. ``threshold`` overrides every threshold.
    """
    out = {
        "first turn": EvalResult(f"{name} · first-turn paraphrase"),
        "paraphrase": EvalResult(f"{name} · paraphrased conversation"),
        "swap": EvalResult(f"{name} · context swap"),
        "swap_para": EvalResult(f"{name} · context swap, paraphrased follow-up"),
        "other": EvalResult(f"{name} · other follow-up, same conversation"),
    }
    n = len(convs)
    for i, c in enumerate(convs):
        other = convs[(i + 1) % n]
        own = _history(c.u0_duplicate, c.system_q0)
        cases = [
            ("first turn", Request(query=c.u0_duplicate), c.system_q0, True),
            ("paraphrase", Request(query=c.u1_duplicate, history=own), c.system_q1, True),
            ("swap", Request(query=c.u1, history=_history(other.u0, other.system_q0)), None, False),
            (
                "swap_para",
                Request(query=c.u1_duplicate, history=_history(other.u0, other.system_q0)),
                None,
                False,
            ),
        ]
        cases += [
            ("other", Request(query=o.u1_duplicate, history=own), None, False)
            for o in convs
            if o.u0 != c.u0 and o.u1 != c.u1
        ]
        for key, req, expected, answerable in cases:
            res = out[key]
            started = time.perf_counter()
            hit = cache.lookup(req, threshold=threshold)
            elapsed = (time.perf_counter() - started) * 1000
            if memo is not None:  # a request with a context embeds both texts
                elapsed += memo.cost_ms(req.query_text) + memo.cost_ms(req.conversation_text)
            res.latencies_ms.append(elapsed)
            res.lookups += 1
            res.answerable += answerable
            if hit is not None:
                res.hits += 1
                if answerable and hit.answer == expected:
                    res.correct += 1
                if not answerable:
                    res.unanswerable_hits += 1
    return out


def evaluate_file(
    path: str | os.PathLike[str],
    config: CacheConfig,
    *,
    limit: int | None = None,
    embedder: Any | None = None,
    verifier: Verifier | None = None,
    thresholds: Sequence[float | None] = (None,),
    progress: bool = True,
) -> list[EvalResult]:
    """Evaluate one file in a fresh temporary cache; one result per threshold."""
    from .._progress import bar

    with tempfile.TemporaryDirectory(prefix="modelcache-eval-") as tmp:
        # decisions are measured, not speed: a lookup cut by the store deadline on a loaded
        # machine would count as a miss
        cfg = config.with_(
            path=tmp, sql_url=None, chroma_url=None, query_log=False, lookup_timeout=None
        )
        with Cache(cfg, embedder=embedder, verifier=verifier) as cache:
            if is_conversation_file(path):
                convs = load_conversations(path)[:limit]
                insert_conversations(cache, convs)
                results = []
                for t in thresholds:
                    label = _label(cache, t)
                    results += list(run_multiturn(cache, convs, label, threshold=t).values())
                return results
            rows = load_rows(path, limit)
            insert_rows(cache, rows)
            results = []
            for t in thresholds:
                with bar("lookups", len(rows), disable=not progress) as advance:
                    results.append(
                        run_pairs(cache, rows, _label(cache, t), threshold=t, progress=advance)
                    )
            return results


def _label(cache: Cache, threshold: float | None) -> str:
    cfg = cache.config
    t = cache.thresholds.short if threshold is None else threshold
    parts = [f"cos>={t:.2f}", "guard" if cfg.guard else "no guard"]
    if cfg.verifier:
        parts.append(f"verifier>={cfg.verifier_threshold:.2f}")
    return ", ".join(parts)


def markdown_table(results: Iterable[EvalResult], title: str | None = None) -> str:
    """A markdown table of results (what the benchmark prints and saves)."""
    rows = [r.row() for r in results]
    if not rows:
        return ""
    cols = list(rows[0])
    lines = []
    if title:
        lines += [f"#### {title}", ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" if c == "configuration" else "---:" for c in cols) + "|")
    for row in rows:
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float):
                cells.append("–" if np.isnan(v) else (f"{v:.1f}" if "ms" in c else f"{v:.3f}"))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
