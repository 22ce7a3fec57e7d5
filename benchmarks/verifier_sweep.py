"""Verifier sweep: compare cross-encoder verifiers at equal operating points on qqp_dev.

One verifier threshold says little when two models score on different scales, so this sweeps
it. Per verifier, the cache (MiniLM, guard, one cosine threshold) looks up every ``b`` once with
``verifier_threshold=0``, recording the ranked candidates the verifier scored and their scores;
the acceptor takes the first of them scoring at or above the threshold, so every threshold's
precision / recall / false-hit rate follows in one pass. One threshold is also run through the
cache a second time and its counts are printed beside the sweep's. A pairwise AUC / average
precision of the labelled ``(b, a)`` pairs is reported too (threshold-free).

    python benchmarks/verifier_sweep.py before=/tmp/ft_a/verifier after=/tmp/ft_b/verifier \
        --limit 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from accuracy import DATA, Bench, Setting

from modelcache import Cache, CacheConfig, Request
from modelcache.lab.evaluation import EvalRow, insert_rows, load_rows, run_pairs
from modelcache.verifier import load_verifier

RESULTS = Path(__file__).resolve().parent / "results" / "verifier_sweep.md"
RECALLS = (0.40, 0.50, 0.55, 0.60, 0.65, 0.70)


class _Recorder:
    """Scores pairs once (memoised) and keeps each request's ranked, scored candidates."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._scores: dict[tuple[str, str], float] = {}
        self.calls: dict[str, list[tuple[str, float]]] = {}
        self.cpu_s = 0.0

    @property
    def scored(self) -> int:
        """How many distinct pairs were scored."""
        return len(self._scores)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The inner verifier's scores; keeps the first call per request."""
        scores = self.scores(pairs)
        if pairs:
            self.calls.setdefault(
                pairs[0][0], [(b, s) for (_, b), s in zip(pairs, scores, strict=True)]
            )
        return scores

    def scores(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The inner verifier's scores, computing only pairs not scored before."""
        missing = [p for p in dict.fromkeys(pairs) if p not in self._scores]
        if missing:
            started = time.process_time()
            for pair, s in zip(missing, self._inner.score(missing), strict=True):
                self._scores[pair] = float(s)
            self.cpu_s += time.process_time() - started
        return [self._scores[p] for p in pairs]


def _key(text: str) -> str:
    """The text the cache stores and hands the verifier (normalised)."""
    return Request.from_text(text).query_text


def _curve(
    rows: Sequence[EvalRow],
    calls: dict[str, list[tuple[str, float]]],
    grid: np.ndarray,
    fixed: tuple[int, int, int] = (0, 0, 0),
) -> list[dict[str, float]]:
    """Precision / recall / F1 / false-hit rate at each verifier threshold of the grid.

    ``fixed``: hits, correct hits and false hits served without the verifier (exact matches).

    A lookup serves its first candidate scoring >= t: candidate j is chosen for t in
    (max of the earlier scores, its own score], so each lookup is a few intervals of t.
    """
    cluster_of = {_key(r.a): r.a_cluster for r in rows}
    clusters = {r.a_cluster for r in rows}
    answerable = [r.b_cluster in clusters for r in rows]
    lo, hi, good, bad = [], [], [], []
    for row, ok in zip(rows, answerable, strict=True):
        best = -np.inf
        for cand, s in calls.get(_key(row.b), []):
            if s > best:
                lo.append(best)
                hi.append(s)
                good.append(cluster_of[cand] == row.b_cluster)
                bad.append(not ok)
                best = s
    t = grid[:, None]
    chosen = (t > np.array(lo)[None, :]) & (t <= np.array(hi)[None, :])
    hits = chosen.sum(axis=1) + fixed[0]
    correct = (chosen & np.array(good)[None, :]).sum(axis=1) + fixed[1]
    false_hits = (chosen & np.array(bad)[None, :]).sum(axis=1) + fixed[2]
    n_ok = sum(answerable)
    out = []
    for i, thr in enumerate(grid):
        p = correct[i] / hits[i] if hits[i] else 1.0
        r = correct[i] / n_ok
        out.append(
            {
                "threshold": float(thr),
                "hits": int(hits[i]),
                "correct": int(correct[i]),
                "precision": float(p),
                "recall": float(r),
                "F1": float(2 * p * r / (p + r)) if p + r else 0.0,
                "false_hits": int(false_hits[i]),
                "false_hit": float(false_hits[i] / (len(rows) - n_ok)),
            }
        )
    return out


def _config(bench: Bench, path: str, setting: Setting) -> CacheConfig:
    """The benchmark's configuration without the lookup deadline: a slow store is no miss here."""
    return bench._config(path, setting).model_copy(update={"lookup_timeout": None})


def _auc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """ROC AUC (Mann-Whitney, ties halved) and average precision of scores against labels."""
    pos, neg = scores[labels], scores[~labels]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    auc = float(greater / (len(pos) * len(neg)))
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(labels[order])
    precision = hits / np.arange(1, len(scores) + 1)
    ap = float((precision * labels[order]).sum() / labels.sum())
    return auc, ap


def _fmt(point: dict[str, float]) -> str:
    return (
        f"{point['threshold']:.3f} | {point['precision']:.3f} | {point['recall']:.3f} | "
        f"{point['F1']:.3f} | {point['false_hit']:.3f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("verifiers", nargs="+", help="NAME=DIRECTORY of a cross-encoder")
    parser.add_argument("--limit", type=int, default=2000, help="qqp_dev rows")
    parser.add_argument("--cos", type=float, default=0.80, help="cosine threshold (guard on)")
    parser.add_argument("--check", type=float, default=0.30, help="threshold run in the cache")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    named = [v.split("=", 1) for v in args.verifiers]
    rows = load_rows(DATA / "qqp_dev.jsonl", args.limit)
    grid = np.round(np.arange(0.0, 1.0001, 0.01), 2)
    labels = np.array([r.same_answer for r in rows])
    bench = Bench("minilm", "MiniLM", None)
    bench.memo.warm([r.a for r in rows] + [r.b for r in rows])
    lines = [
        "# Verifier sweep (raw tables)",
        "",
        f"- command: `python benchmarks/verifier_sweep.py {' '.join(sys.argv[1:])}`",
        f"- qqp_dev rows: {len(rows)}; MiniLM, guard, cos >= {args.cos:.2f}",
        "",
    ]
    summary = [
        "| verifier | pair AUC | pair AP | best F1 at | precision | recall | F1 | false-hit |"
    ]
    summary.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    at_recall = [
        "| verifier | " + " | ".join(f"P @ R>={r:.2f}" for r in RECALLS) + " |",
        "|---|" + "---:|" * len(RECALLS),
    ]
    with tempfile.TemporaryDirectory(prefix="mc-vsweep-") as tmp:
        with Cache(_config(bench, tmp, Setting(args.cos, True)), embedder=bench.memo) as cache:
            insert_rows(cache, rows)
        for name, path in named:
            rec = _Recorder(load_verifier(path))
            cfg = _config(bench, tmp, Setting(args.cos, True, True, 0.0))
            with Cache(cfg, embedder=bench.memo, verifier=rec) as cache:
                first = run_pairs(cache, rows, name, memo=bench.memo)
            raw = Path(args.out).with_suffix(f".{name}.json")
            raw.write_text(json.dumps(rec.calls), encoding="utf-8")
            base = _curve(rows, rec.calls, np.zeros(1))[0]
            fixed = (
                first.hits - base["hits"],
                first.correct - base["correct"],
                first.unanswerable_hits - base["false_hits"],
            )
            curve = _curve(rows, rec.calls, grid, fixed)
            every = np.unique([s for cands in rec.calls.values() for _, s in cands])
            exact = _curve(rows, rec.calls, every, fixed)
            cfg = _config(bench, tmp, Setting(args.cos, True, True, args.check))
            with Cache(cfg, embedder=bench.memo, verifier=rec) as cache:
                checked = run_pairs(cache, rows, name, memo=bench.memo)
            point = next(p for p in curve if abs(p["threshold"] - args.check) < 1e-9)
            agree = (checked.hits, checked.correct) == (point["hits"], point["correct"])
            pair_scores = np.array(rec.scores([(r.b, r.a) for r in rows]))
            auc, ap = _auc(pair_scores, labels)
            best = max(exact, key=lambda p: p["F1"])
            summary.append(f"| {name} | {auc:.3f} | {ap:.3f} | {_fmt(best)} |")
            cells = []
            for r in RECALLS:
                ok = [p for p in exact if p["recall"] >= r]
                top = max(ok, key=lambda p: p["precision"]) if ok else None
                cells.append(f"{top['precision']:.3f} (at {top['threshold']:.3f})" if top else "-")
            at_recall.append(f"| {name} | " + " | ".join(cells) + " |")
            lines += [
                f"## {name}: {path}",
                "",
                f"scored {rec.scored} pairs in {rec.cpu_s:.0f} CPU s; a second cache run at "
                f"{args.check:.3f}: {checked.hits} hits, {checked.correct} correct; the sweep: "
                f"{point['hits']} / {point['correct']} ({'the same' if agree else 'differs'})",
                "",
                "| verifier >= | precision | recall | F1 | false-hit |",
                "|---:|---:|---:|---:|---:|",
            ]
            lines += [f"| {_fmt(p)} |" for p in curve[::5]]
            lines.append("")
            print(f"{name}: done ({rec.cpu_s:.0f} CPU s scoring)", file=sys.stderr, flush=True)
    tables = ["## Summary", "", *summary, "", *at_recall, ""]
    text = "\n".join(lines[:5] + tables + lines[5:])
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
