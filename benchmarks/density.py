"""False hits as a partition grows: one partition of 1k / 10k / 100k distinct Quora questions.

Method: every distinct question of ``qqp_train`` + ``qqp_dev`` (../shared/data) belongs to a
duplicate cluster (the files' ``a_cluster`` / ``b_cluster``). Probes are drawn from qqp_dev:
``--probes`` duplicate pairs (a, b) for recall and ``--probes`` single questions for false hits.
A partition of N entries holds every recall pair's ``a`` plus filler questions drawn at random
(fixed seed) from the pool, never from a false-hit probe's cluster, so a false-hit probe has no
right answer in the cache. Recall = lookups of ``b`` that return an entry of b's cluster / recall
probes; false-hit rate = false-hit probes that get any answer / those probes; precision on the
recall probes. Every entry goes in through the public ``Cache`` (``insert_many``) and every
probe is a real ``Cache.lookup``; vectors come from the shipped MiniLM, embedded once in batches
and memoised under /tmp (``MODELCACHE_DENSITY_MEMO``, resumable), since embedding 114k
questions takes hours on a shared CPU; the probes come first, then the filler in the order the
partitions use it, so an interrupted run still serves the smaller sizes.

    python benchmarks/density.py --embed-only       # fill the memo (all sizes), nothing else
    python benchmarks/density.py --sizes 1000,10000,100000 --out benchmarks/results/raw.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results" / "density.md"
MEMO = Path(os.environ.get("MODELCACHE_DENSITY_MEMO", "/tmp/modelcache-density-memo"))


def load_questions(
    probe_file: str = "qqp_dev",
) -> tuple[dict[str, int], list[tuple[str, str, int]], list[tuple[str, int]]]:
    """Cluster of every distinct question; the probe file's duplicate pairs and questions."""
    from modelcache.request import normalize_text

    cluster: dict[str, int] = {}
    dev_pairs: list[tuple[str, str, int]] = []
    dev_questions: dict[str, int] = {}
    for name in ("qqp_train", "qqp_dev"):
        with open(DATA / f"{name}.jsonl", encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                a, b = normalize_text(row["a"]), normalize_text(row["b"])
                if not a or not b:
                    continue
                cluster.setdefault(a, int(row["a_cluster"]))
                cluster.setdefault(b, int(row["b_cluster"]))
                if name == probe_file:
                    dev_questions.setdefault(a, int(row["a_cluster"]))
                    dev_questions.setdefault(b, int(row["b_cluster"]))
                    if row["same_answer"] and a != b:
                        dev_pairs.append((a, b, int(row["b_cluster"])))
    return cluster, dev_pairs, sorted(dev_questions.items())


def memo_vectors(texts: Sequence[str], memo: Path, chunk: int = 2048) -> dict[str, np.ndarray]:
    """Vectors of the texts from the memo folder, embedding (and saving) the missing ones."""
    from modelcache.embedding import build_embedder

    memo.mkdir(parents=True, exist_ok=True)
    known: dict[str, np.ndarray] = {}
    for part in sorted(memo.glob("part-*.json")):
        vecs = np.load(part.with_suffix(".npy"))
        known.update(zip(json.loads(part.read_text(encoding="utf-8")), vecs, strict=True))
    todo = [t for t in dict.fromkeys(texts) if t not in known]
    if todo:
        embedder = build_embedder("minilm", threads=1)  # ORT threads spin: one wins on a busy host
        start = len(list(memo.glob("part-*.json")))
        began = time.perf_counter()
        for n, i in enumerate(range(0, len(todo), chunk)):
            batch = todo[i : i + chunk]
            vecs = np.asarray(embedder.embed(batch), dtype=np.float32)
            stem = memo / f"part-{start + n:05d}"
            np.save(stem.with_suffix(".npy"), vecs)
            stem.with_suffix(".json").write_text(json.dumps(batch), encoding="utf-8")
            known.update(zip(batch, vecs, strict=True))
            done = i + len(batch)
            rate = done / (time.perf_counter() - began)
            print(f"embedded {done}/{len(todo)} ({rate:.0f}/s)", file=sys.stderr, flush=True)
    return known


def workload(
    probes: int, seed: int = 12, probe_file: str = "qqp_dev"
) -> tuple[list[tuple[str, str, int]], list[tuple[str, int]], list[tuple[str, int]]]:
    """Recall pairs (a, b, b's cluster), false-hit probes (text, cluster), filler in order.

    ``probe_file`` "qqp_train" draws the probes from the training split, to fit a rule on.
    """
    cluster, dev_pairs, dev_questions = load_questions(probe_file)
    rng = random.Random(seed)
    rng.shuffle(dev_pairs)
    recall: list[tuple[str, str, int]] = []
    used: set[int] = set()
    for a, b, c in dev_pairs:  # one pair per cluster, so the pairs are independent
        if c not in used and len(recall) < probes:
            used.add(c)
            recall.append((a, b, c))
    lookups = {b for _, b, _ in recall}
    candidates = [(q, c) for q, c in dev_questions if c not in used and q not in lookups]
    rng.shuffle(candidates)
    unseen: list[tuple[str, int]] = []
    for q, c in candidates:
        if c not in used and len(unseen) < probes:
            used.add(c)
            unseen.append((q, c))
    unseen_clusters = {c for _, c in unseen}
    cached = {a for a, _, _ in recall}
    filler = [
        (q, c)
        for q, c in sorted(cluster.items())
        if c not in unseen_clusters and q not in lookups and q not in cached
    ]
    rng.shuffle(filler)
    return recall, unseen, filler


class StoredVectors:
    """The shipped MiniLM's vectors from the memo; the model itself only for the rare miss."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        from modelcache.embedding import build_embedder

        self._vectors = vectors
        self._model = build_embedder("minilm", threads=1)
        self.name = self._model.name
        self.dimension = self._model.dimension

    def count_tokens(self, text: str) -> int:
        """Delegated to the model's tokenizer."""
        return int(self._model.count_tokens(text))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Memoised vectors; anything else is embedded now."""
        missing = [t for t in texts if t not in self._vectors]
        if missing:
            self._vectors.update(zip(missing, self._model.embed(missing), strict=True))
        return np.stack([self._vectors[t] for t in texts])


class Result:
    """Counts for one size and one configuration."""

    def __init__(self) -> None:
        self.recall_hits = self.recall_correct = self.unseen_hits = 0
        self.recall_n = self.unseen_n = 0
        self.latencies: list[float] = []
        self.false_hits: list[tuple[str, str, float]] = []  # (probe, question served, cosine)

    def cells(self) -> list[str]:
        """Recall, precision on recall probes, false-hit rate, p50 ms."""
        precision = self.recall_correct / self.recall_hits if self.recall_hits else 1.0
        return [
            f"{self.recall_correct / self.recall_n:.3f}",
            f"{precision:.3f}",
            f"{self.unseen_hits / self.unseen_n:.2%} ({self.unseen_hits}/{self.unseen_n})",
            f"{float(np.median(self.latencies)):.1f}",
        ]


def run_size(
    size: int,
    recall: Sequence[tuple[str, str, int]],
    unseen: Sequence[tuple[str, int]],
    filler: Sequence[tuple[str, int]],
    embedder: StoredVectors,
    configs: Sequence[tuple[str, dict[str, Any]]],
) -> list[Result]:
    """Fill one partition with ``size`` questions, then run every probe under each config."""
    from modelcache import Cache, CacheConfig, Request

    entries = [(a, c) for a, _, c in recall] + list(filler[: size - len(recall)])
    cluster = dict(entries)  # the answer is the question's text: its cluster says if it is right
    results = []
    with tempfile.TemporaryDirectory(prefix="mc-density-") as tmp:
        base = {"path": tmp, "query_log": False, "track_hits": False}
        began = time.perf_counter()
        with Cache(CacheConfig(**base), embedder=embedder) as cache:
            for i in range(0, len(entries), 1000):
                cache.insert_many([(Request.from_text(q), q) for q, _ in entries[i : i + 1000]])
        print(f"size {size}: filled in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        for _label, values in configs:
            res = Result()
            with Cache(CacheConfig(**base, **values), embedder=embedder) as cache:
                for _, b, c in recall:
                    started = time.perf_counter()
                    hit = cache.lookup(Request.from_text(b))
                    res.latencies.append((time.perf_counter() - started) * 1000)
                    res.recall_n += 1
                    if hit is not None:
                        res.recall_hits += 1
                        res.recall_correct += cluster.get(hit.answer) == c
                for q, _ in unseen:
                    started = time.perf_counter()
                    hit = cache.lookup(Request.from_text(q))
                    res.latencies.append((time.perf_counter() - started) * 1000)
                    res.unseen_n += 1
                    res.unseen_hits += hit is not None
                    if hit is not None:
                        res.false_hits.append((q, str(hit.answer), hit.similarity))
            results.append(res)
    return results


CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("defaults (threshold 0.85 and guard)", {}),
    ("+ crowding margin 0.03 over the runner-up", {"crowding_margin": 0.03}),
    ("+ crowding margin 0.05 over the runner-up", {"crowding_margin": 0.05}),
    (
        "+ crowding margin 0.05 over the 5th neighbour",
        {"crowding_margin": 0.05, "crowding_rank": 5},
    ),
    ("threshold 0.90 (for comparison)", {"similarity_threshold": 0.90}),
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--probes", type=int, default=1000, help="recall and false-hit probes")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument("--embed-only", action="store_true", help="only fill the vector memo")
    parser.add_argument("--defaults-only", action="store_true", help="skip the variants")
    parser.add_argument(
        "--false-hits", default=None, help="write each size's false hits (JSON lines) here"
    )
    args = parser.parse_args(argv)
    recall, unseen, filler = workload(args.probes)
    sizes = [int(s) for s in args.sizes.split(",")]
    order = [t for a, b, _ in recall for t in (a, b)] + [q for q, _ in unseen]
    if args.embed_only:
        memo_vectors(order + [q for q, _ in filler], MEMO)
        return 0
    vectors = memo_vectors(order + [q for q, _ in filler[: max(sizes) - len(recall)]], MEMO)
    embedder = StoredVectors(vectors)
    lines = [
        "| entries | configuration | recall | precision | false-hit rate | p50 ms |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    configs = CONFIGS[:1] if args.defaults_only else CONFIGS
    listed = []
    for size in sizes:
        for (label, _), res in zip(
            configs, run_size(size, recall, unseen, filler, embedder, configs), strict=True
        ):
            lines.append(f"| {size:,} | {label} | " + " | ".join(res.cells()) + " |")
            print(lines[-1], flush=True)
            listed += [
                {"size": size, "config": label, "probe": q, "served": a, "cosine": round(s, 3)}
                for q, a, s in res.false_hits
            ]
    if args.false_hits:
        with open(args.false_hits, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in listed)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"density benchmark: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; {args.probes} recall pairs and {args.probes} "
        f"never-cached questions per size; `python benchmarks/density.py {command}`"
    )
    table = header + "\n\n" + "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
