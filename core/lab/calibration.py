"""Threshold calibration: the loosest thresholds that still reach a target precision.

Pairwise: every labelled pair is scored alone (cosine of the two questions, the guard's verdict,
and the verifier's score when one is given), which is fast and stable; the cache-level
benchmark (``benchmarks/accuracy.py``) then checks what users feel. Short and long queries get
their own cosine threshold (long ones score higher for the same meaning); with a verifier the
cosine threshold and the verifier threshold are searched together. The context and follow-up
thresholds come from conversations: the same first turn said two ways must match, different ones
must not; a follow-up said two ways must match, another follow-up in that conversation must not.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from ..request import conversation_text
from ..verifier import Verifier
from .finetune import Pair

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

__all__ = [
    "Calibration",
    "Operating",
    "calibrate",
    "calibrate_contexts",
    "calibrate_followups",
    "context_pairs_from_conversations",
    "embed_texts",
    "followup_pairs_from_conversations",
    "pick_threshold",
    "save_toml",
]

_MIN_LONG = 30  # fewer long pairs than this: the long threshold follows the short one


@dataclass(frozen=True)
class Operating:
    """One operating point: a threshold and what it gives on the calibration pairs."""

    threshold: float
    precision: float
    recall: float
    positives: int
    predicted: int
    reached: bool


@dataclass
class Calibration:
    """The calibrated thresholds and their cost in recall."""

    target_precision: float
    pairs: int
    short: Operating | None = None
    long: Operating | None = None
    context: Operating | None = None
    followup: Operating | None = None
    verifier: Operating | None = None
    overall_precision: float = float("nan")
    overall_recall: float = float("nan")
    notes: list[str] = field(default_factory=list)

    def config_values(self) -> dict[str, float]:
        """The ``CacheConfig`` fields this calibration sets."""
        values: dict[str, float] = {}
        if self.short is not None:
            values["similarity_threshold"] = round(self.short.threshold, 3)
        if self.long is not None:
            values["similarity_threshold_long"] = round(self.long.threshold, 3)
        if self.context is not None:
            values["context_threshold"] = round(self.context.threshold, 3)
        if self.followup is not None:
            values["similarity_threshold_followup"] = round(self.followup.threshold, 3)
        if self.verifier is not None:
            values["verifier_threshold"] = round(self.verifier.threshold, 3)
        return values

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-friendly)."""
        return asdict(self)


def pick_threshold(
    scores: np.ndarray,
    labels: np.ndarray,
    target: float,
    *,
    allowed: np.ndarray | None = None,
    grid: np.ndarray | None = None,
) -> Operating:
    """The threshold with the most recall whose precision reaches ``target``.

    ``allowed`` masks pairs a later stage (the guard) rejects whatever their score. When no
    threshold reaches the target, the most precise one is returned with ``reached=False``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    ok = np.ones_like(labels) if allowed is None else np.asarray(allowed, dtype=bool)
    grid = np.round(np.arange(0.0, 1.0001, 0.005), 3) if grid is None else grid
    positives = int(labels.sum())
    best: Operating | None = None
    fallback: Operating | None = None
    for t in grid:
        pred = (scores >= t) & ok
        n = int(pred.sum())
        tp = int((pred & labels).sum())
        precision = tp / n if n else 1.0
        recall = tp / positives if positives else 0.0
        op = Operating(float(t), precision, recall, positives, n, precision >= target)
        if n and precision >= target and (best is None or recall > best.recall):
            best = op
        if n and (fallback is None or precision > fallback.precision):
            fallback = op
    if best is not None:
        return best
    if fallback is not None:
        return fallback
    return Operating(float(grid[-1]), 1.0, 0.0, positives, 0, False)


def embed_texts(embedder: Any, texts: Sequence[str], batch_size: int = 128) -> dict[str, Any]:
    """Unit vectors of distinct texts, in batches, with a progress bar."""
    from .._progress import bar

    unique = list(dict.fromkeys(texts))
    out: dict[str, Any] = {}
    with bar("embedding", len(unique), disable=len(unique) < 500) as advance:
        for i in range(0, len(unique), batch_size):
            chunk = unique[i : i + batch_size]
            vecs = np.asarray(embedder.embed(chunk), dtype=np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-12
            out.update(zip(chunk, vecs, strict=True))
            advance(len(chunk))
    return out


def _cosines(vectors: dict[str, Any], pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    return np.array([float(np.dot(vectors[a], vectors[b])) for a, b in pairs])


def calibrate(
    pairs: Sequence[Pair],
    embedder: Any,
    target_precision: float,
    *,
    guard: Any | None = None,
    verifier: Verifier | None = None,
    long_query_tokens: int = 48,
    context_pairs: Sequence[tuple[str, str, bool]] | None = None,
    followup_pairs: Sequence[tuple[str, str, bool]] | None = None,
) -> Calibration:
    """Thresholds (short, long, context, follow-up, verifier) reaching ``target_precision``."""
    if not 0.0 < target_precision <= 1.0:
        raise ValueError("target precision must be in (0, 1]")
    cal = Calibration(target_precision=target_precision, pairs=len(pairs))
    if not pairs:
        cal.notes.append("no pairs: nothing calibrated")
        return cal
    vectors = embed_texts(embedder, [t for p in pairs for t in (p.a, p.b)])
    cos = _cosines(vectors, [(p.a, p.b) for p in pairs])
    labels = np.array([p.same_answer for p in pairs])
    allowed = np.array([guard is None or guard.conflict(p.b, p.a) is None for p in pairs])
    is_long = np.array([embedder.count_tokens(p.b) >= long_query_tokens for p in pairs])
    groups = {"short": ~is_long, "long": is_long}
    if is_long.sum() < _MIN_LONG:
        groups = {"short": np.ones_like(is_long)}
        cal.notes.append(
            f"only {int(is_long.sum())} long queries (< {_MIN_LONG}): "
            "the long threshold is set to the short one"
        )

    if verifier is None:
        for name, mask in groups.items():
            setattr(cal, name, pick_threshold(cos[mask], labels[mask], target_precision,
                                              allowed=allowed[mask]))  # fmt: skip
        predicted = _predict(cal, cos, groups, allowed)
    else:
        scores = np.asarray(verifier.score([(p.b, p.a) for p in pairs]), dtype=np.float64)
        best: tuple[float, Calibration, np.ndarray] | None = None
        for v in np.round(np.arange(0.0, 1.0001, 0.02), 3):
            trial = Calibration(target_precision=target_precision, pairs=len(pairs))
            ok = allowed & (scores >= v)
            for name, mask in groups.items():
                setattr(trial, name, pick_threshold(cos[mask], labels[mask], target_precision,
                                                    allowed=ok[mask]))  # fmt: skip
            pred = _predict(trial, cos, groups, ok)
            tp = int((pred & labels).sum())
            reached = all(getattr(trial, n).reached for n in groups)
            recall = tp / max(1, int(labels.sum()))
            key = recall if reached else -1.0 + tp / max(1, int(pred.sum()))
            if best is None or key > best[0]:
                trial.verifier = Operating(
                    float(v), tp / max(1, int(pred.sum())), recall, int(labels.sum()),
                    int(pred.sum()), reached,
                )  # fmt: skip
                best = (key, trial, pred)
        assert best is not None
        _, chosen, predicted = best
        cal.short, cal.long, cal.verifier = chosen.short, chosen.long, chosen.verifier
    if cal.long is None and cal.short is not None:
        cal.long = cal.short
    tp = int((predicted & labels).sum())
    cal.overall_precision = tp / int(predicted.sum()) if predicted.sum() else 1.0
    cal.overall_recall = tp / max(1, int(labels.sum()))
    if context_pairs and not all(same for *_, same in context_pairs):
        cal.context = calibrate_contexts(context_pairs, embedder, target_precision)
    elif context_pairs:
        cal.notes.append(
            "no two different conversations to compare: the context threshold keeps its default"
        )
    if followup_pairs:
        cal.followup = calibrate_followups(followup_pairs, embedder, target_precision, guard)
    return cal


def _predict(
    cal: Calibration, cos: np.ndarray, groups: dict[str, np.ndarray], allowed: np.ndarray
) -> np.ndarray:
    pred = np.zeros_like(allowed)
    for name, mask in groups.items():
        op: Operating = getattr(cal, name)
        pred |= mask & (cos >= op.threshold) & allowed
    return pred


def calibrate_contexts(
    pairs: Sequence[tuple[str, str, bool]], embedder: Any, target_precision: float
) -> Operating:
    """Context threshold from (context, context, same) triples: same conversation said twice."""
    vectors = embed_texts(embedder, [t for a, b, _ in pairs for t in (a, b)])
    cos = _cosines(vectors, [(a, b) for a, b, _ in pairs])
    labels = np.array([same for _, _, same in pairs])
    return pick_threshold(cos, labels, target_precision)


def context_pairs_from_conversations(
    conversations: Sequence[Any], max_negatives: int = 5000
) -> list[tuple[str, str, bool]]:
    """The same first exchange said two ways (positives) and two different conversations
    (negatives), each as the engine embeds a context: every earlier turn, joined."""

    def context(user: str, reply: str) -> str:
        return conversation_text([("user", user), ("assistant", reply)])

    out = [(context(c.u0, c.system_q0), context(c.u0_duplicate, c.system_q0), True)
           for c in conversations]  # fmt: skip
    negatives = [
        (context(a.u0, a.system_q0), context(b.u0_duplicate, b.system_q0), False)
        for a in conversations
        for b in conversations
        if a.u0 != b.u0
    ]
    step = max(1, math.ceil(len(negatives) / max_negatives))
    return out + negatives[::step]


def calibrate_followups(
    pairs: Sequence[tuple[str, str, bool]],
    embedder: Any,
    target_precision: float,
    guard: Any | None = None,
) -> Operating:
    """Follow-up threshold from (stored, asked, same) triples, the guard's verdict included."""
    vectors = embed_texts(embedder, [t for a, b, _ in pairs for t in (a, b)])
    cos = _cosines(vectors, [(a, b) for a, b, _ in pairs])
    labels = np.array([same for _, _, same in pairs])
    allowed = np.array([guard is None or guard.conflict(b, a) is None for a, b, _ in pairs])
    return pick_threshold(cos, labels, target_precision, allowed=allowed)


def followup_pairs_from_conversations(
    conversations: Sequence[Any], max_negatives: int = 5000
) -> list[tuple[str, str, bool]]:
    """Follow-ups said two ways (positives) and the other conversations' follow-ups asked in
    their place (negatives), as ``benchmarks/accuracy.py`` asks them."""
    out = [(c.u1, c.u1_duplicate, True) for c in conversations]
    negatives = [
        (a.u1, b.u1_duplicate, False)
        for a in conversations
        for b in conversations
        if a.u0 != b.u0 and a.u1 != b.u1
    ]
    step = max(1, math.ceil(len(negatives) / max_negatives))
    return out + negatives[::step]


# ---- TOML -------------------------------------------------------------------------------------
def save_toml(path: str | os.PathLike[str], values: dict[str, Any]) -> None:
    """Merge values into a TOML config file (top level, or its ``[modelcache]`` table)."""
    target = Path(path)
    data: dict[str, Any] = {}
    if target.exists():
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    table = data["modelcache"] if isinstance(data.get("modelcache"), dict) else data
    table.update(values)
    target.write_text(tomli_w.dumps(data), encoding="utf-8")
