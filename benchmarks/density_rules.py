"""Acceptance rules against false hits in large partitions, each compared with a plain threshold.

Issue 12 asks for a rule that keeps the false-hit rate of ``benchmarks/density.py`` flat as a
partition grows, at little recall cost. This script scores candidate rules offline on the same
workload: the top-5 candidates of every probe by exact cosine over the memoised MiniLM vectors
(what a lookup recalls), the default guard on each, then a rule that may reject the candidate
the defaults would serve (the next one is tried, as ``Acceptor.choose`` does). The rules use
only what a lookup has: the recalled similarities (their spread, the runner-up's margin, how
many pass the threshold) and the two texts (a content word or number on one side only).

A rule helps only if it beats raising the threshold, which also trades recall for false hits:
each row also gives the false-hit rate of the threshold that reaches the same recall
(interpolated over thresholds 0.850-0.950), so "vs threshold" below zero means the rule is the
better trade. Fit on ``--probes-from qqp_train`` (probes from the training split; the pool is
the same), then check on the protocol's ``qqp_dev`` probes. ``--accuracy`` scores the same
rules on ``qqp_dev`` as ``benchmarks/accuracy.py`` runs it, whose negatives are labelled.

    python benchmarks/density.py --embed-only            # the vector memo, once
    python benchmarks/density_rules.py --probes-from qqp_train --sizes 10000,30000,100000
    python benchmarks/density_rules.py --sizes 1000,10000,30000,100000
    python benchmarks/density_rules.py --accuracy
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from _common import DATA, write_report
from density import MEMO, memo_vectors, workload

if TYPE_CHECKING:
    from modelcache.guard import Guard

TOP_K = 5  # CacheConfig.top_k's default
THRESHOLD = 0.85  # MiniLM's default short threshold
_SUFFIX = re.compile(r"(?:ies|es|s|ing|ed|ly)$")


@dataclass
class Served:
    """One candidate above the threshold that the guard lets through, with what rules read."""

    cluster: int
    rank: int  # 0: the best recalled candidate
    similarity: float
    runner_up: float  # the next recalled similarity (0 when none)
    passing: int  # recalled candidates at or above the threshold
    mean_top: float  # mean of the recalled similarities
    lexical: bool  # a content word on either side that the other lacks
    swapped: bool  # a content word on each side that the other lacks
    one_sided_number: bool  # a number on one side only


@dataclass
class Probe:
    """A lookup: its cluster, whether it has a right answer cached, its passing candidates."""

    cluster: int
    recall: bool
    served: list[Served]


Rule = Callable[[Served], bool]  # True: the candidate is served


def _content(guard: Guard, text: str) -> set[str]:
    """Content words with a crude suffix strip (grow / grows), from the guard's own tokenizer."""
    words = guard._features(text).content
    return {_SUFFIX.sub("", w) if len(w) > 4 else w for w in words if w.isalpha()}


def _probes(
    entries: Sequence[tuple[str, int]],
    asked: Sequence[tuple[str, int, bool]],
    vectors: dict[str, np.ndarray],
) -> list[Probe]:
    """Every lookup (text, cluster, has a right entry) against a partition of entries (text,
    cluster), with its top-k candidates that pass the threshold and the default guard."""
    from modelcache.guard import Guard

    guard = Guard()
    matrix = np.stack([vectors[q] for q, _ in entries]).astype(np.float32)
    out = []
    for start in range(0, len(asked), 256):
        batch = asked[start : start + 256]
        sims = np.stack([vectors[q] for q, _, _ in batch]).astype(np.float32) @ matrix.T
        top = np.argpartition(-sims, TOP_K, axis=1)[:, :TOP_K]
        for row, best, (query, cluster, is_recall) in zip(sims, top, batch, strict=True):
            order = sorted(best, key=lambda k: -row[k])
            scores = [float(row[k]) for k in order]
            served = []
            for i, k in enumerate(order):
                text = entries[k][0]
                if scores[i] < THRESHOLD or guard.conflict(query, text) is not None:
                    continue
                own, other = _content(guard, query), _content(guard, text)
                fq, fc = guard._features(query), guard._features(text)
                served.append(
                    Served(
                        cluster=entries[k][1],
                        rank=i,
                        similarity=scores[i],
                        runner_up=scores[i + 1] if i + 1 < len(scores) else 0.0,
                        passing=sum(s >= THRESHOLD for s in scores),
                        mean_top=float(np.mean(scores)),
                        lexical=bool(own ^ other),
                        swapped=bool(own - other) and bool(other - own),
                        one_sided_number=fq.numbers != fc.numbers,
                    )
                )
            out.append(Probe(cluster, is_recall, served))
    return out


def probes_for(size: int, probe_file: str, vectors: dict[str, np.ndarray]) -> list[Probe]:
    """The density workload at one size: every probe with its guard-passing candidates."""
    recall, unseen, filler = workload(1000, probe_file=probe_file)
    entries = [(a, c) for a, _, c in recall] + list(filler[: size - len(recall)])
    asked = [(b, c, True) for _, b, c in recall] + [(q, c, False) for q, c in unseen]
    return _probes(entries, asked, vectors)


def accuracy_probes() -> list[Probe]:
    """``qqp_dev`` as ``benchmarks/accuracy.py`` runs it: every distinct ``a`` cached, every
    ``b`` looked up; a lookup without an entry of its cluster has only labelled non-duplicates
    (real errors, not unlabelled duplicates) to be served."""
    from modelcache.request import normalize_text

    rows = []
    with open(DATA / "qqp_dev.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            a, b = normalize_text(row["a"]), normalize_text(row["b"])
            if a and b:
                rows.append((a, b, int(row["a_cluster"]), int(row["b_cluster"])))
    entries = list(dict.fromkeys((a, c) for a, _, c, _ in rows))
    cached = {c for _, c in entries}
    asked = [(b, c, c in cached) for _, b, _, c in rows]
    vectors = memo_vectors([q for q, _ in entries] + [q for q, _, _ in asked], MEMO)
    return _probes(entries, asked, vectors)


def score(probes: Sequence[Probe], rule: Rule) -> tuple[float, float, float]:
    """Recall, precision on the recall probes, false-hit rate under a rule."""
    hits = correct = false_hits = n_recall = n_unseen = 0
    for probe in probes:
        served = next((s for s in probe.served if rule(s)), None)
        if probe.recall:
            n_recall += 1
            hits += served is not None
            correct += served is not None and served.cluster == probe.cluster
        else:
            n_unseen += 1
            false_hits += served is not None
    return correct / n_recall, correct / hits if hits else 1.0, false_hits / n_unseen


def _at(threshold: float) -> Rule:
    """A plain threshold."""
    return lambda s: s.similarity >= threshold


def _raised(b: float, m: float) -> Rule:
    """The threshold raised by ``b`` times the top-k mean's excess over ``m``."""
    return lambda s: s.similarity >= THRESHOLD + b * max(0.0, s.mean_top - m)


def _margin(d: float, *, swapped_only: bool) -> Rule:
    """A margin ``d`` over the runner-up, only where content words differ (or are swapped)."""
    return lambda s: (
        not ((s.swapped if swapped_only else s.lexical) and s.similarity - s.runner_up < d)
    )


def rules() -> list[tuple[str, Rule]]:
    """The candidate rules: density-aware thresholds, margins, a stricter guard when crowded."""
    out: list[tuple[str, Rule]] = [
        ("defaults (threshold 0.85 and guard)", lambda s: True),
        (  # crowding_margin=0.05: the threshold rises to the runner-up's similarity + 0.05
            "shipped option: crowding margin 0.05 over the runner-up",
            lambda s: s.rank == 0 and s.similarity - s.runner_up >= 0.05,
        ),
    ]
    for b, m in ((0.25, 0.70), (0.5, 0.70), (0.25, 0.75), (0.5, 0.75), (0.75, 0.75)):
        out.append((
            f"threshold + {b} x (mean of top-5 - {m})",
            _raised(b, m),
        ))  # fmt: skip
    for d in (0.05, 0.08):
        out.append((
            f"margin {d} over the runner-up when a content word differs",
            _margin(d, swapped_only=False),
        ))  # fmt: skip
        out.append((
            f"margin {d} when content words are swapped",
            _margin(d, swapped_only=True),
        ))  # fmt: skip
    out += [
        ("crowded (2+ pass): no swapped content word", lambda s: s.passing < 2 or not s.swapped),
        ("crowded (2+ pass): no content word differs", lambda s: s.passing < 2 or not s.lexical),
        ("crowded (2+ pass): no one-sided number",
         lambda s: s.passing < 2 or not s.one_sided_number),
        ("runner-up >= 0.80: no swapped content word",
         lambda s: s.runner_up < 0.8 or not s.swapped),
        ("no one-sided number anywhere", lambda s: not s.one_sided_number),
    ]  # fmt: skip
    return out


def threshold_at_recall(probes: Sequence[Probe], recall: float) -> float:
    """False-hit rate of the plain threshold that reaches this recall: the lowest one among the
    thresholds that reach at least it, interpolated between thresholds (0.850-0.950)."""
    best: dict[float, float] = {}
    for t in np.arange(THRESHOLD, 0.9501, 0.005):
        r, _, f = score(probes, _at(float(t)))
        best[r] = min(f, best.get(r, f))
    recalls = sorted(best)
    rates = np.minimum.accumulate([best[r] for r in reversed(recalls)])[::-1]
    return float(np.interp(recall, recalls, rates))


def _table(entries: str, probes: Sequence[Probe]) -> list[str]:
    """One table row per rule: its counts and the threshold's false hits at its recall."""
    lines = []
    for label, rule in rules():
        rec, prec, fh = score(probes, rule)
        ref = threshold_at_recall(probes, rec)
        lines.append(
            f"| {entries} | {label} | {rec:.3f} | {prec:.3f} | {fh:.1%} | {ref:.1%} "
            f"| {100 * (fh - ref):+.1f} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--probes-from", default="qqp_dev", choices=("qqp_dev", "qqp_train"))
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help="score the rules on qqp_dev's accuracy protocol (labelled negatives) instead",
    )
    args = parser.parse_args(argv)
    header = [
        "| entries | rule | recall | precision | false-hit rate | threshold at that recall "
        "| vs threshold |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    if args.accuracy:
        lines = [
            f"density rules on qqp_dev's accuracy protocol, top-{TOP_K} exact cosine, guard on; "
            f"{time.strftime('%Y-%m-%d %H:%M')}",
            "",
            *header,
            *_table("qqp_dev", accuracy_probes()),
        ]
        write_report(lines, args.out)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    recall, unseen, filler = workload(1000, probe_file=args.probes_from)
    texts = [t for a, b, _ in recall for t in (a, b)] + [q for q, _ in unseen]
    vectors = memo_vectors(texts + [q for q, _ in filler[: max(sizes) - len(recall)]], MEMO)
    lines = [
        f"density rules: probes from {args.probes_from}, top-{TOP_K} exact cosine over the "
        f"memo ({MEMO}), guard on; {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        *header,
    ]
    for size in sizes:
        lines += _table(f"{size:,}", probes_for(size, args.probes_from, vectors))
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
