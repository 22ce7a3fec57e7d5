"""The int8-quantised ONNX embedder vs fp32: vector drift, calibrated thresholds, accuracy, speed.

Method (printed with the results), on the shipped all-MiniLM-L6-v2, one thread, same process:

* drift: cosine between the int8 and fp32 vectors of 2,000 distinct ``qqp_dev`` questions;
* thresholds (``core/lab/calibration.py``, on ``--pairs`` sampled pairs): for each kind (short,
  long, follow-up, context) the int8 threshold is the one with the most recall whose pairwise
  precision reaches what fp32 reaches at its shipped default, on ``qqp_dev`` pairs
  (short/long) and ``multiturn_dev`` conversations (follow-up/context);
* accuracy: the cache-level protocol of ``../shared/data/README.md`` through ``Cache`` (insert
  every distinct ``a``, look up every ``b``) on the first ``--limit`` rows: fp32 at its
  defaults, int8 at fp32's defaults, int8 at its calibrated short threshold (a per-lookup
  threshold; the long one rarely applies to Quora questions);
* speed: one query (``embed([q])``, fp32 and int8 alternating per query), wall and CPU
  median; batch throughput in texts per CPU-second.

Usage: ``python benchmarks/int8.py [--limit 3000] [--out benchmarks/results/int8.md]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import DATA, write_report

ROOT = Path(__file__).resolve().parents[1]


def _texts(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(t for r in rows for t in (r["a"], r["b"])))


def drift(fp32: Any, int8: Any, texts: list[str]) -> dict[str, float]:
    """Cosine of int8 vs fp32 vectors of the same texts."""
    cos = np.sum(fp32.embed(texts) * int8.embed(texts), axis=1)
    return {
        "texts": len(texts),
        "min": float(cos.min()),
        "p1": float(np.percentile(cos, 1)),
        "median": float(np.median(cos)),
        "mean": float(cos.mean()),
    }


def thresholds(
    fp32: Any, int8: Any, pairs_path: Path, convs_path: Path, limit: int | None
) -> list[dict[str, Any]]:
    """int8 thresholds matching fp32's pairwise precision at its defaults, kind by kind."""
    from modelcache.embedding import DEFAULT_THRESHOLDS
    from modelcache.lab.calibration import (
        _cosines,
        context_pairs_from_conversations,
        embed_texts,
        followup_pairs_from_conversations,
        pick_threshold,
    )
    from modelcache.lab.evaluation import load_conversations
    from modelcache.lab.finetune import load_pairs

    pairs = load_pairs(pairs_path, limit=limit)  # a seeded random sample
    convs = load_conversations(convs_path)
    long_tokens = 48  # CacheConfig.long_query_tokens
    is_long = np.array([fp32.count_tokens(p.b) >= long_tokens for p in pairs])
    sets: dict[str, tuple[list[tuple[str, str]], np.ndarray, np.ndarray]] = {
        "short": (
            [(p.a, p.b) for p in pairs],
            np.array([p.same_answer for p in pairs]),
            ~is_long,
        ),
        "long": (
            [(p.a, p.b) for p in pairs],
            np.array([p.same_answer for p in pairs]),
            is_long,
        ),
    }
    for kind, triples in (
        ("followup", followup_pairs_from_conversations(convs)),
        ("context", context_pairs_from_conversations(convs)),
    ):
        labels = np.array([s for *_, s in triples])
        sets[kind] = ([(a, b) for a, b, _ in triples], labels, np.ones_like(labels))
    out = []
    for kind, (texts, labels, mask) in sets.items():
        default = float(getattr(DEFAULT_THRESHOLDS, kind))
        flat = [t for pair in texts for t in pair]
        cos32 = _cosines(embed_texts(fp32, flat), texts)[mask]
        cos8 = _cosines(embed_texts(int8, flat), texts)[mask]
        y = labels[mask]
        grid = np.array([default])
        at_default = pick_threshold(cos32, y, 0.0, grid=grid)
        int8_at_default = pick_threshold(cos8, y, 0.0, grid=grid)
        matched = pick_threshold(cos8, y, at_default.precision)
        out.append(
            {
                "kind": kind,
                "pairs": int(mask.sum()),
                "fp32": at_default,
                "int8_at_fp32": int8_at_default,
                "int8": matched,
            }
        )
    return out


def accuracy(
    fp32: Any, int8: Any, rows_path: Path, limit: int, calibrated: dict[str, float]
) -> list[Any]:
    """Cache-level precision / recall / false-hit on qqp_dev through Cache."""
    from modelcache import Cache, CacheConfig
    from modelcache.lab.evaluation import MemoEmbedder, insert_rows, load_rows, run_pairs

    rows = load_rows(rows_path, limit=limit)
    results = []
    runs = [
        ("fp32 at its defaults", fp32, None),
        ("int8 at fp32's defaults", int8, None),
        (f"int8 at its calibrated {calibrated['short']:.3f}", int8, calibrated["short"]),
    ]
    caches: dict[str, tuple[Any, MemoEmbedder]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, threshold in runs:
            if model.name not in caches:
                memo = MemoEmbedder(model)
                memo.warm([t for r in rows for t in (r.a, r.b)])
                cache = Cache(CacheConfig(path=os.path.join(tmp, str(len(caches)))), embedder=memo)
                insert_rows(cache, rows)
                caches[model.name] = (cache, memo)
            cache, memo = caches[model.name]
            print(f"  {label} ...", file=sys.stderr)
            results.append(run_pairs(cache, rows, label, threshold=threshold, memo=memo))
        for cache, _ in caches.values():
            cache.close()
    return results


def speed(fp32: Any, int8: Any, texts: list[str]) -> dict[str, dict[str, float]]:
    """Single-query wall/CPU ms (alternating) and batch texts per CPU-second."""
    out: dict[str, dict[str, float]] = {"fp32": {}, "int8": {}}
    wall: dict[str, list[float]] = {"fp32": [], "int8": []}
    cpu: dict[str, list[float]] = {"fp32": [], "int8": []}
    models = {"fp32": fp32, "int8": int8}
    for i, text in enumerate(texts[:200]):
        for name in ("fp32", "int8") if i % 2 == 0 else ("int8", "fp32"):
            t0, c0 = time.perf_counter(), time.process_time()
            models[name].embed([text])
            wall[name].append((time.perf_counter() - t0) * 1000)
            cpu[name].append((time.process_time() - c0) * 1000)
    batch = texts[200:1200]
    for name in ("fp32", "int8"):
        out[name]["single_wall_ms"] = statistics.median(wall[name])
        out[name]["single_cpu_ms"] = statistics.median(cpu[name])
        c0 = time.process_time()
        models[name].embed(batch)
        out[name]["batch_per_cpu_s"] = len(batch) / (time.process_time() - c0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=3000, help="qqp_dev rows for accuracy")
    parser.add_argument("--pairs", type=int, default=None, help="qqp_dev pairs to calibrate on")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "int8.md"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from modelcache.embedding import OnnxSentenceEmbedder

    fp32, int8 = OnnxSentenceEmbedder(), OnnxSentenceEmbedder(quantize=True)
    dev = DATA / "qqp_dev.jsonl"
    with dev.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    texts = _texts(rows)
    print("drift ...", file=sys.stderr)
    d = drift(fp32, int8, texts[:2000])
    print("speed ...", file=sys.stderr)
    s = speed(fp32, int8, texts[4000:])
    print("thresholds ...", file=sys.stderr)
    th = thresholds(fp32, int8, dev, DATA / "multiturn_dev.json", args.pairs)
    print(th, file=sys.stderr)
    calibrated = {t["kind"]: round(t["int8"].threshold, 3) for t in th}
    print("accuracy ...", file=sys.stderr)
    acc = accuracy(fp32, int8, dev, args.limit, calibrated)

    def op(o: Any) -> str:
        return f"{o.threshold:.3f} | {o.precision:.3f} | {o.recall:.3f}"

    lines = [
        "# int8-quantised ONNX embedder vs fp32 (all-MiniLM-L6-v2)",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores (shared, loaded: quote CPU times), Python "
        f"{platform.python_version()}. Method: see the docstring of `benchmarks/int8.py`.",
        "",
        "## Vector drift (cosine int8 vs fp32)",
        "",
        "| texts | min | p1 | median | mean |",
        "|---:|---:|---:|---:|---:|",
        f"| {d['texts']:,} | {d['min']:.4f} | {d['p1']:.4f} | {d['median']:.4f} | "
        f"{d['mean']:.4f} |",
        "",
        f"## Thresholds (pairwise on {args.pairs or 'all'} qqp_dev pairs and multiturn_dev; "
        "int8 matched to fp32's precision at its default)",
        "",
        "| kind | pairs | fp32 default | precision | recall | int8 at that threshold | "
        "precision | recall | int8 calibrated | precision | recall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {t['kind']} | {t['pairs']:,} | {op(t['fp32'])} | {op(t['int8_at_fp32'])} | "
            f"{op(t['int8'])} |"
            if t["fp32"].predicted
            else f"| {t['kind']} | {t['pairs']:,} | {op(t['fp32'])} | {op(t['int8_at_fp32'])} | "
            f"fp32 serves none of these pairs: nothing to match; int8 moves by the short "
            "threshold's offset | | |"
            for t in th
        ),
        "",
        f"## Cache-level accuracy (qqp_dev, first {args.limit:,} rows, through `Cache`)",
        "",
        "| configuration | lookups | hits | precision | recall | false-hit rate | p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r.name} | {r.lookups:,} | {r.hits:,} | {r.precision:.3f} | {r.recall:.3f} | "
            f"{r.unanswerable_hits / max(1, r.unanswerable):.3f} | "
            f"{statistics.median(r.latencies_ms):.1f} |"
            for r in acc
        ),
        "",
        "## Speed (one thread)",
        "",
        "| runtime | one query, wall ms (median) | one query, CPU ms | batch, texts per CPU-s |",
        "|---|---:|---:|---:|",
        *(
            f"| {n} | {v['single_wall_ms']:.2f} | {v['single_cpu_ms']:.2f} | "
            f"{v['batch_per_cpu_s']:.0f} |"
            for n, v in s.items()
        ),
        "",
    ]
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
