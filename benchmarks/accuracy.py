"""Accuracy benchmark: does the cache serve an answer only when it is the right one?

Method (``../shared/data/README.md``): through the public ``Cache`` API, insert every distinct
``a`` once (answer = that text, metadata = its QQP cluster), then look up every ``b``. QQP: a hit
is correct when the returned entry's cluster equals the row's ``b_cluster``; elsewhere when it
returns the row's own ``a`` and the pair is labelled same-answer. Multi-turn: first turns and
follow-ups (with their first turn as context) are stored; the paraphrased conversation should hit,
the follow-up after another conversation's first turn must not.

Every configuration reuses one inserted cache per embedder and set; embeddings and verifier
scores are memoised across configurations, and each lookup's latency is charged the measured
single-query embedding (and scoring) time, so p50 stays honest. Latency is CPU wall time on the
machine that runs it (stated in the output header).

    python benchmarks/accuracy.py --limit 2000                 # quick
    python benchmarks/accuracy.py --finetuned /tmp/ft/embedder --verifier /tmp/ft/verifier
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modelcache import Cache, CacheConfig
from modelcache.embedding import build_embedder
from modelcache.lab.evaluation import (
    EvalResult,
    EvalRow,
    MemoEmbedder,
    MemoVerifier,
    insert_conversations,
    insert_rows,
    load_conversations,
    load_rows,
    markdown_table,
    run_multiturn,
    run_pairs,
)
from modelcache.verifier import load_verifier

RESULTS = Path(__file__).resolve().parent / "results" / "accuracy.md"


@dataclass(frozen=True)
class Setting:
    """One acceptance configuration."""

    threshold: float | None  # None: the embedder's calibrated thresholds
    guard: bool
    verifier: bool = False
    verifier_threshold: float = 0.5
    context_threshold: float | None = None
    followup_threshold: float | None = None

    @property
    def label(self) -> str:
        """How the setting is printed."""
        cos = "default thresholds" if self.threshold is None else f"cos>={self.threshold:.2f}"
        parts = [cos, "guard" if self.guard else "cosine only"]
        if self.verifier:
            parts.append(f"verifier>={self.verifier_threshold:.2f}")
        if self.context_threshold is not None:
            parts.append(f"context>={self.context_threshold:.2f}")
        if self.followup_threshold is not None:
            parts.append(f"follow-up>={self.followup_threshold:.2f}")
        return ", ".join(parts)


def sweep(
    thresholds: Iterable[float],
    verifier_grid: Sequence[tuple[float, float]] = (),
    cosine_only: bool = True,
) -> list[Setting]:
    """Cosine only and + guard at each threshold; + verifier at (threshold, score) points."""
    out = []
    for t in thresholds:
        if cosine_only:
            out.append(Setting(t, guard=False))
        out.append(Setting(t, guard=True))
    out += [Setting(t, True, True, v) for t, v in verifier_grid]
    return out


class Bench:
    """Runs settings over sets for one embedder."""

    def __init__(self, embedder_spec: str, label: str, verifier: Any | None) -> None:
        started = time.perf_counter()
        self.memo = MemoEmbedder(build_embedder(embedder_spec, threads=1))
        self.label = label
        self.spec = embedder_spec
        self.verifier = MemoVerifier(verifier) if verifier is not None else None
        self.load_s = time.perf_counter() - started

    def _config(self, path: str, s: Setting) -> CacheConfig:
        values: dict[str, Any] = {
            "path": path,
            "embedder": self.spec,
            "guard": s.guard,
            "query_log": False,
            "lookup_timeout": None,  # decisions, not speed: a cut lookup would count as a miss
        }
        if s.threshold is not None:
            values["similarity_threshold"] = s.threshold
            values["similarity_threshold_long"] = s.threshold
        if s.verifier:
            values["verifier_threshold"] = s.verifier_threshold
        if s.context_threshold is not None:
            values["context_threshold"] = s.context_threshold
        if s.followup_threshold is not None:
            values["similarity_threshold_followup"] = s.followup_threshold
        return CacheConfig(**values)

    def pairs(
        self, rows: Sequence[EvalRow], settings: Sequence[Setting], name: str
    ) -> list[EvalResult]:
        """Insert once, then every setting looks up every ``b``."""
        from tqdm.auto import tqdm

        self.memo.warm([r.a for r in rows] + [r.b for r in rows])
        results = []
        with tempfile.TemporaryDirectory(prefix="mc-acc-") as tmp:
            with Cache(self._config(tmp, settings[0]), embedder=self.memo) as cache:
                insert_rows(cache, rows)
            for s in settings:
                verifier = self.verifier if s.verifier else None
                cfg = self._config(tmp, s)
                with (
                    Cache(cfg, embedder=self.memo, verifier=verifier) as cache,
                    tqdm(total=len(rows), desc=f"{name} {s.label}", leave=False) as bar,
                ):
                    res = run_pairs(
                        cache,
                        rows,
                        f"{self.label}: {s.label}",
                        memo=self.memo,
                        memo_verifier=verifier,
                        progress=bar.update,
                    )
                results.append(res)
                print(markdown_table([res]).splitlines()[-1], file=sys.stderr, flush=True)
        return results

    def multiturn(self, convs: Sequence[Any], settings: Sequence[Setting]) -> list[EvalResult]:
        """Per setting: first-turn paraphrase, paraphrased conversation, context swaps."""
        results: list[EvalResult] = []
        texts = [t for c in convs for t in (c.u0, c.u0_duplicate, c.u1, c.u1_duplicate)]
        self.memo.warm(texts)
        with tempfile.TemporaryDirectory(prefix="mc-mt-") as tmp:
            with Cache(self._config(tmp, settings[0]), embedder=self.memo) as cache:
                insert_conversations(cache, convs)
            for s in settings:
                verifier = self.verifier if s.verifier else None
                with Cache(self._config(tmp, s), embedder=self.memo, verifier=verifier) as cache:
                    out = run_multiturn(cache, convs, f"{self.label}: {s.label}", memo=self.memo)
                results += out.values()
        return results


def header(args: argparse.Namespace) -> str:
    """Method first: workload, counts, machine."""
    import torch

    return "\n".join(
        [
            "# Accuracy benchmark (raw tables)",
            "",
            f"- date: {time.strftime('%Y-%m-%d %H:%M')}; command: `python benchmarks/accuracy.py "
            + " ".join(sys.argv[1:])
            + "`",
            f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch "
            f"{torch.__version__} on 1 thread; a shared machine, so latencies are noisy",
            f"- sets: {args.sets}; qqp_dev rows: {args.limit or 'all 10,000'}; protocol: "
            "../shared/data/README.md",
            "- p50/p95: lookup wall time including the measured single-query embedding time "
            "(and verifier scoring when it ran), see the module docstring",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=None, help="qqp_dev rows (default: all)")
    parser.add_argument("--sets", default="qqp,mock,hard,multiturn")
    parser.add_argument("--finetuned", default=None, help="fine-tuned embedder directory")
    parser.add_argument("--verifier", default=None, help="cross-encoder verifier directory")
    parser.add_argument("--no-multilingual", action="store_true", help="skip the USE embedder")
    parser.add_argument("--thresholds", default="0.80,0.85,0.90,0.95")
    parser.add_argument("--ft-thresholds", default="0.75,0.80,0.85,0.90")
    parser.add_argument(
        "--verifier-grid",
        default="",
        help="cos:score points for the verifier, e.g. 0.80:0.3,0.85:0.5 "
        "(default: the first two thresholds x 0.5, 0.8, 0.9)",
    )
    parser.add_argument("--use-thresholds", default="0.70,0.75,0.80,0.85,0.90")
    parser.add_argument("--no-minilm", action="store_true", help="only the fine-tuned embedder")
    parser.add_argument("--out", default=str(RESULTS), help="where the raw tables are written")
    args = parser.parse_args(argv)
    sets = set(args.sets.split(","))
    thresholds = [float(t) for t in args.thresholds.split(",")]
    ft_thresholds = [float(t) for t in args.ft_thresholds.split(",")]
    verifier = load_verifier(args.verifier) if args.verifier else None

    qqp = load_rows(DATA / "qqp_dev.jsonl", args.limit) if "qqp" in sets else []
    mock = load_rows(DATA / "gptcache_mock_pairs.json") if "mock" in sets else []
    hard = load_rows(DATA / "hard_pairs_dev.jsonl") if "hard" in sets else []
    convs = load_conversations(DATA / "multiturn_dev.json") if "multiturn" in sets else []
    out: list[str] = [header(args)]

    def emit(title: str, results: list[EvalResult]) -> None:
        table = markdown_table(results, title=title)
        print(table + "\n", flush=True)
        out.append(table + "\n")

    benches = [] if args.no_minilm else [("minilm", "MiniLM", thresholds)]
    if args.finetuned:
        benches.append((args.finetuned, "MiniLM fine-tuned", ft_thresholds))
    for spec, label, ths in benches:
        bench = Bench(spec, label, verifier)
        vgrid = [(t, v) for t in ths[:2] for v in (0.5, 0.8, 0.9)] if verifier else []
        if verifier and args.verifier_grid:
            vgrid = [
                (float(t), float(v))
                for t, v in (p.split(":") for p in args.verifier_grid.split(","))
            ]
        if qqp:
            emit(f"qqp_dev ({len(qqp)} rows) · {label}", bench.pairs(qqp, sweep(ths, vgrid), "qqp"))
        if mock:
            emit(
                f"gptcache_mock_pairs ({len(mock)}) · {label}",
                bench.pairs(mock, sweep(ths), "mock"),
            )
        if hard:
            for lang in ("en", "zh"):
                rows = [r for r in hard if r.lang == lang]
                settings = sweep([0.7, *ths], vgrid)
                emit(
                    f"hard_pairs_dev {lang} ({len(rows)}) · {label}",
                    bench.pairs(rows, settings, lang),
                )
        if convs:
            settings = [Setting(None, True), Setting(None, False)] + [
                Setting(None, True, context_threshold=c, followup_threshold=f)
                for c in (0.6, 0.8)
                for f in (0.40, 0.50, 0.60)
            ]
            emit(
                f"multiturn_dev ({len(convs)} conversations) · {label}",
                bench.multiturn(convs, settings),
            )
    if not args.no_multilingual:
        bench = Bench("multilingual", "USE multilingual", None)
        use_ths = [float(t) for t in args.use_thresholds.split(",")]
        if qqp:
            emit(f"qqp_dev ({len(qqp)} rows) · USE", bench.pairs(qqp, sweep(use_ths), "qqp"))
        if mock:
            results = bench.pairs(mock, sweep(use_ths), "mock")
            emit(f"gptcache_mock_pairs ({len(mock)}) · USE", results)
        if hard:
            for lang in ("en", "zh"):
                rows = [r for r in hard if r.lang == lang]
                results = bench.pairs(rows, sweep([0.6, *use_ths]), lang)
                emit(f"hard_pairs_dev {lang} ({len(rows)}) · USE", results)
        if convs:
            settings = [Setting(None, True), Setting(None, False)] + [
                Setting(None, True, context_threshold=c, followup_threshold=f)
                for c in (0.4, 0.6)
                for f in (0.40, 0.50, 0.55)
            ]
            results = bench.multiturn(convs, settings)
            emit(f"multiturn_dev ({len(convs)} conversations) · USE", results)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(out), encoding="utf-8")
        print(f"raw tables written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
