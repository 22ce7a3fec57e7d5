"""Lookup latency, insert throughput and memory of ModelCache with the real MiniLM model.

Method (printed with the results): one partition is filled with distinct Quora questions
(QQP train + dev, read from the shared data folder, never copied) up to each size; at each
size the same mix of lookups runs in random order and each lookup is classified by what it
returned:

* exact-hit lookups repeat an inserted question verbatim (answered from SQL, no embedding);
* semantic lookups ask the other question of a labelled duplicate pair whose first question
  was inserted (they hit or miss depending on the similarity and the guard);
* miss lookups ask held-out questions whose duplicate cluster was never inserted.

Right before each non-exact lookup the bare embedding of the same query is timed
(``embedder.embed([query])``), so the semantic-hit / embedding ratio compares like with like
on a noisy machine. Batched insert throughput is measured on a fresh cache with real
embedding through ``insert_many``. To fill 100k entries quickly the fill vectors are computed
once and kept in a ``.npy`` cache under /tmp; they still go in through ``insert_many``.

Usage: ``modelcache bench`` or, from a source checkout, ``python benchmarks/latency.py``, with
``[--sizes 1000,10000,100000] [--queries 300] [--data FOLDER] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CacheConfig
from ..embedding import BaseEmbedder, build_embedder
from ..engine import Cache
from ..errors import ConfigError
from ..request import Request

DATA_FILES = ("qqp_train.jsonl", "qqp_dev.jsonl")
EXACT_P50_MS = 1.0
SEMANTIC_RATIO = 1.3
INSERT_RATE = 500.0
BOOKKEEPING_PCT = 5.0  # issue target: query log + hit bookkeeping cost < 5% at p50
CHUNK = 5_000  # vectors per cached .npy chunk (resumable precomputation)


# ---- data --------------------------------------------------------------------------------------
@dataclass
class Workload:
    """Fill texts (in insertion order) and the three query sets."""

    fill: list[str]
    semantic: list[str]  # b of a duplicate pair whose a is fill[i] for i < len(semantic)
    miss: list[str]
    throughput: list[str]


def _key(text: str) -> str | None:
    """The exact-key form of a question (None when it is not a valid query)."""
    try:
        return Request(text).query_text.casefold()
    except ConfigError:
        return None


def load_workload(data_dir: Path, queries: int, max_size: int, tp_count: int) -> Workload:
    """Distinct QQP questions split into fill, semantic, miss and throughput sets."""
    rows: list[dict[str, Any]] = []
    for name in DATA_FILES:
        with open(data_dir / name, encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    cluster_size: dict[int, int] = {}
    text_cluster: dict[str, int] = {}
    texts: dict[str, str] = {}  # key -> first spelling
    for r in rows:
        for side in ("a", "b"):
            k = _key(r[side])
            if k is None or k in texts:
                continue
            texts[k] = r[side]
            c = int(r[f"{side}_cluster"])
            text_cluster[k] = c
            cluster_size[c] = cluster_size.get(c, 0) + 1
    rnd = random.Random(20240601)
    pairs = [
        (ka, kb)
        for r in rows
        if r["same_answer"]
        and (ka := _key(r["a"])) is not None
        and (kb := _key(r["b"])) is not None
        and ka != kb
    ]
    rnd.shuffle(pairs)
    held: set[str] = set()
    sem_a: list[str] = []
    sem_b: list[str] = []
    for ka, kb in pairs:
        if len(sem_a) == queries:
            break
        if ka in held or kb in held:
            continue
        held.update((ka, kb))
        sem_a.append(ka)
        sem_b.append(kb)
    singles = [k for k, c in text_cluster.items() if cluster_size[c] == 1 and k not in held]
    rnd.shuffle(singles)
    miss = singles[:queries]
    held.update(miss)
    rest = [k for k in texts if k not in held]
    rnd.shuffle(rest)
    fill_keys = sem_a + rest
    if len(fill_keys) < max_size + tp_count:
        raise SystemExit(
            f"only {len(fill_keys)} distinct questions; need {max_size} + {tp_count} for throughput"
        )
    return Workload(
        fill=[texts[k] for k in fill_keys[:max_size]],
        semantic=[texts[k] for k in sem_b],
        miss=[texts[k] for k in miss],
        throughput=[texts[k] for k in fill_keys[max_size : max_size + tp_count]],
    )


# ---- embedding with a vector cache for the fill ------------------------------------------------
class PrecomputedEmbedder:
    """The real model, answering fill texts from precomputed vectors while ``enabled``.

    Same name and dimension as the model, so the cache records the real embedder. Lookups are
    measured with ``enabled = False``: every query is embedded by the model.
    """

    def __init__(self, model: BaseEmbedder, texts: Sequence[str], vectors: np.ndarray):
        self.model = model
        self.index = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors
        self.enabled = True

    @property
    def name(self) -> str:
        """The model's name."""
        return self.model.name

    @property
    def dimension(self) -> int:
        """The model's dimension."""
        return self.model.dimension

    def count_tokens(self, text: str) -> int:
        """The model's token count."""
        return self.model.count_tokens(text)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Precomputed rows when enabled and known, else the model."""
        if self.enabled:
            rows = [self.index[t] for t in texts if t in self.index]
            if len(rows) == len(texts):
                return self.vectors[rows]
        return self.model.embed(texts)


def fill_vectors(model: BaseEmbedder, texts: list[str], cache_dir: Path) -> np.ndarray:
    """Embeddings of the fill texts (as the cache embeds them), cached in resumable chunks."""
    digest = hashlib.sha256(
        ("\x00".join(texts) + model.name + str(model.dimension)).encode("utf-8")
    ).hexdigest()[:16]
    folder = cache_dir / f"{model.name.replace(':', '_')}-{len(texts)}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[np.ndarray] = []
    started = time.perf_counter()
    for n, start in enumerate(range(0, len(texts), CHUNK)):
        path = folder / f"chunk{n:04d}.npy"
        if path.exists():
            parts.append(np.load(path))
            continue
        chunk = model.embed(texts[start : start + CHUNK])
        np.save(path, chunk)
        parts.append(chunk)
        done = start + len(chunk)
        rate = done / (time.perf_counter() - started)
        print(f"  embedded {done:,}/{len(texts):,} fill texts ({rate:,.0f}/s)", file=sys.stderr)
    return np.concatenate(parts) if parts else np.zeros((0, model.dimension), np.float32)


# ---- measurement -------------------------------------------------------------------------------
@dataclass
class Timings:
    """Latencies in milliseconds per outcome."""

    by_kind: dict[str, list[float]] = field(default_factory=dict)

    def add(self, kind: str, ms: float) -> None:
        """Record one measurement."""
        self.by_kind.setdefault(kind, []).append(ms)


def pct(values: Sequence[float], q: float) -> float:
    """Percentile (linear), NaN for no values."""
    return float(np.percentile(values, q)) if values else float("nan")


def measure_lookups(
    cache: Cache, embedder: PrecomputedEmbedder, work: Workload, size: int, queries: int, seed: int
) -> tuple[Timings, dict[str, dict[str, int]]]:
    """Run the lookup mix once at the current size; classify by what each lookup returned."""
    rnd = random.Random(seed)
    exact = rnd.sample(work.fill[:size], min(queries, size))
    sem = work.semantic[: min(queries, size)]
    tasks = [("exact", q) for q in exact] + [("semantic", q) for q in sem]
    tasks += [("miss", q) for q in work.miss[:queries]]
    rnd.shuffle(tasks)
    embedder.enabled = False
    for _, q in tasks[:20]:  # warm-up: first Chroma query, tokenizer caches
        cache.lookup(Request.from_text(q))
        embedder.model.embed([q])
    timings = Timings()
    outcomes: dict[str, dict[str, int]] = {}
    for i, (asked, q) in enumerate(tasks):
        req = Request.from_text(q)
        bare_first = i % 2 == 0
        if asked != "exact" and bare_first:
            t0 = time.perf_counter()
            embedder.model.embed([req.query_text])
            timings.add("bare embedding", (time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        hit = cache.lookup(req)
        ms = (time.perf_counter() - t0) * 1000
        if asked != "exact" and not bare_first:
            t0 = time.perf_counter()
            embedder.model.embed([req.query_text])
            timings.add("bare embedding", (time.perf_counter() - t0) * 1000)
        kind = "miss" if hit is None else ("exact hit" if hit.exact else "semantic hit")
        timings.add(kind, ms)
        counts = outcomes.setdefault(asked, {})
        counts[kind] = counts.get(kind, 0) + 1
    return timings, outcomes


def measure_bookkeeping(
    folder: Path, embedder: PrecomputedEmbedder, work: Workload, size: int, queries: int
) -> dict[str, dict[str, list[float]]]:
    """Lookup latency with the query log and hit bookkeeping on vs off, on the same data.

    Two caches open the same folder; each query goes to both, in alternating order, so that
    machine noise falls on both sides alike.
    """
    base = CacheConfig(path=str(folder))
    caches = {
        "off": Cache(base.with_(query_log=False, track_hits=False), embedder=embedder),
        "on": Cache(base.with_(query_log=True, track_hits=True), embedder=embedder),
    }
    rnd = random.Random(7)
    tasks = [("exact hit", q) for q in rnd.sample(work.fill[:size], min(queries, size))]
    tasks += [("semantic", q) for q in work.semantic[: min(queries, size)]]
    rnd.shuffle(tasks)
    embedder.enabled = False
    out: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
    try:
        for _, q in tasks[:20]:
            for cache in caches.values():
                cache.lookup(Request.from_text(q))
        for i, (kind, q) in enumerate(tasks):
            order = ("off", "on") if i % 2 == 0 else ("on", "off")
            for name in order:
                req = Request.from_text(q)
                t0 = time.perf_counter()
                hit = caches[name].lookup(req)
                ms = (time.perf_counter() - t0) * 1000
                label = kind if kind == "exact hit" else ("semantic hit" if hit else "miss")
                out[name].setdefault(label, []).append(ms)
        caches["on"].flush()
        logged = caches["on"].stats()["log_written"]
        assert logged >= len(tasks), f"the query log wrote {logged} of {len(tasks)} rows"
    finally:
        for cache in caches.values():
            cache.close()
    return out


def measure_insert_throughput(
    model: BaseEmbedder, texts: list[str], batch: int, folder: Path
) -> dict[str, float]:
    """Entries/s through insert_many with real embedding on a fresh cache; and embedding alone."""
    cache = Cache(CacheConfig(path=str(folder)), embedder=model)
    try:
        started = time.perf_counter()
        for start in range(0, len(texts), batch):
            chunk = texts[start : start + batch]
            cache.insert_many([(Request.from_text(t), {"answer": t}) for t in chunk])
        insert_s = time.perf_counter() - started
    finally:
        cache.close()
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        model.embed([Request.from_text(t).query_text for t in texts[start : start + batch]])
    embed_s = time.perf_counter() - started
    return {
        "entries": len(texts),
        "insert_per_s": len(texts) / insert_s,
        "embed_per_s": len(texts) / embed_s,
    }


# ---- reporting ---------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = platform.processor() or "unknown"
    mem = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    from importlib.metadata import version

    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": version("torch"),
        "onnxruntime": version("onnxruntime"),
        "sentence-transformers": version("sentence-transformers"),
        "chromadb": version("chromadb"),
    }


def rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 1024 / 1024


def fmt(x: float) -> str:
    """Milliseconds with sensible precision."""
    return "n/a" if x != x else (f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}")


def main(
    argv: Sequence[str] | None = None,
    *,
    data: Path | None = None,
    prog: str = "python -m modelcache.lab.latency",
) -> int:
    """Run the benchmark and print (and optionally save) the tables.

    ``data``: the ``--data`` default (the QQP files); else ``$MODELCACHE_DATA``, else required.
    ``prog``: the command the report says was run.
    """
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("ANONYMIZED_TELEMETRY", "False"),
    ):
        os.environ.setdefault(name, value)
    if data is None and os.environ.get("MODELCACHE_DATA"):
        data = Path(os.environ["MODELCACHE_DATA"])
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated entry counts")
    parser.add_argument("--queries", type=int, default=300, help="lookups per query set per size")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--data",
        type=Path,
        default=data,
        required=data is None,
        help=f"folder with {' and '.join(DATA_FILES)} (labelled Quora question pairs)",
    )
    parser.add_argument("--batch", type=int, default=1000, help="insert_many batch size")
    parser.add_argument("--throughput", type=int, default=2000, help="entries for insert/s")
    parser.add_argument(
        "--vector-cache", type=Path, default=Path(tempfile.gettempdir()) / "modelcache-bench"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="cache folders (default: tmp)")
    parser.add_argument(
        "--backend", choices=("onnx", "torch"), default="onnx", help="embedding runtime"
    )
    args = parser.parse_args(argv)
    sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        parser.error("--sizes needs positive integers")

    load_start = os.getloadavg()
    started_at = dt.datetime.now(dt.timezone.utc)
    work = load_workload(args.data, args.queries, sizes[-1], args.throughput)
    model = build_embedder("minilm", threads=1, backend=args.backend)  # the config defaults
    assert isinstance(model, BaseEmbedder)  # the real model (the fake is no BaseEmbedder)
    print(f"loading fill vectors for {len(work.fill):,} texts ...", file=sys.stderr)
    fill_keys = [Request.from_text(t).query_text for t in work.fill]
    vectors = fill_vectors(model, fill_keys, args.vector_cache)
    embedder = PrecomputedEmbedder(model, fill_keys, vectors)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="modelcache-bench-"))
    cache = Cache(CacheConfig(path=str(workdir / "filled")), embedder=embedder)
    rows: list[list[str]] = []
    counts_rows: list[str] = []
    fill_rows: list[str] = []
    filled = 0
    try:
        for n, size in enumerate(sizes):
            embedder.enabled = True
            t0 = time.perf_counter()
            for start in range(filled, size, args.batch):
                chunk = work.fill[start : min(size, start + args.batch)]
                cache.insert_many([(Request.from_text(t), {"answer": t}) for t in chunk])
            fill_s = time.perf_counter() - t0
            fill_rows.append(
                f"| {size:,} | {size - filled:,} | {fill_s:.1f} | {(size - filled) / fill_s:,.0f} |"
            )
            filled = size
            cache.flush()
            print(f"filled {size:,} entries in {fill_s:.1f} s; measuring ...", file=sys.stderr)
            timings, outcomes = measure_lookups(cache, embedder, work, size, args.queries, n)
            bare = timings.by_kind.get("bare embedding", [])
            bare_p50 = pct(bare, 50)
            for kind in ("exact hit", "semantic hit", "miss", "bare embedding"):
                v = timings.by_kind.get(kind, [])
                if kind == "exact hit":
                    ok = pct(v, 50) <= EXACT_P50_MS
                    target = f"p50 <= {EXACT_P50_MS:g} ms: {'PASS' if ok else 'FAIL'}"
                elif kind == "semantic hit":
                    ratio = pct(v, 50) / bare_p50 if bare else float("nan")
                    verdict = "" if size != sizes[-1] else (
                        " PASS" if ratio <= SEMANTIC_RATIO else " FAIL")  # fmt: skip
                    target = f"p50 = {ratio:.2f} x bare embedding (<= {SEMANTIC_RATIO}x at max size){verdict}"  # noqa: E501
                elif kind == "miss":
                    target = f"p50 = {pct(v, 50) / bare_p50:.2f} x bare embedding" if bare else ""
                else:
                    target = "embed([query]) alone, same queries, same run"
                worst = max(v) if v else float("nan")
                quantiles = [fmt(pct(v, 50)), fmt(pct(v, 95)), fmt(pct(v, 99)), fmt(worst)]
                rows.append([f"{size:,}", kind, str(len(v)), *quantiles, target])
            for asked in ("exact", "semantic", "miss"):
                c = outcomes.get(asked, {})
                counts_rows.append(
                    f"| {size:,} | {asked} | {sum(c.values())} | {c.get('exact hit', 0)} | "
                    f"{c.get('semantic hit', 0)} | {c.get('miss', 0)} |"
                )
            stats = cache.stats()
            assert stats["entries"] == size, stats["entries"]
    finally:
        cache.close()
    print("measuring query log and hit bookkeeping on vs off ...", file=sys.stderr)
    book = measure_bookkeeping(workdir / "filled", embedder, work, sizes[-1], args.queries)
    book_rows = []
    for kind in ("exact hit", "semantic hit", "miss"):
        off, on = book["off"].get(kind, []), book["on"].get(kind, [])
        if not off or not on:
            continue
        diff = (pct(on, 50) - pct(off, 50)) / pct(off, 50) * 100
        verdict = "PASS" if diff < BOOKKEEPING_PCT else "FAIL"
        book_rows.append(
            f"| {kind} | {len(off)} / {len(on)} | {fmt(pct(off, 50))} | {fmt(pct(on, 50))} | "
            f"{fmt(pct(off, 95))} | {fmt(pct(on, 95))} | {diff:+.1f}% | "
            f"< {BOOKKEEPING_PCT:g}%: {verdict} |"
        )
    peak_after_lookups = rss_mib()
    print("measuring batched insert throughput ...", file=sys.stderr)
    tp = measure_insert_throughput(model, work.throughput, min(args.batch, 500), workdir / "tp")
    peak = rss_mib()
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)

    info = machine()
    load_end = os.getloadavg()
    lines = [
        "# ModelCache latency benchmark",
        "",
        f"Run {started_at:%Y-%m-%d %H:%M} UTC, `{prog} "
        f"--sizes {','.join(map(str, sizes))} --queries {args.queries} --backend {args.backend}`.",
        "",
        "## Method",
        "",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, {info['os']}; "
        f"Python {info['python']}, torch {info['torch']}, onnxruntime {info['onnxruntime']}, "
        f"sentence-transformers {info['sentence-transformers']}, chromadb {info['chromadb']}.",
        f"- Load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/"
        f"{load_start[2]:.2f}, at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f} "
        "(other work on the machine shows up as noise).",
        f"- Model: the shipped all-MiniLM-L6-v2 (384-d), CPU, one thread, runtime "
        f"{args.backend} (`embedder_backend`; onnx is the default). Embedded stores: "
        "Chroma PersistentClient + "
        "SQLite (WAL) in a temporary folder. Default CacheConfig (thresholds 0.86 / 0.90, "
        "top_k 5, guard on).",
        f"- Workload: distinct Quora questions from qqp_train + qqp_dev, all in ONE partition "
        f"(the worst case for a partition), inserted with insert_many in batches of "
        f"{args.batch}; answers are small JSON objects. Fill vectors were embedded once by the "
        "same model and cached under /tmp; lookups always embed with the model.",
        f"- At each size, {args.queries} lookups per query set in random order after 20 "
        "warm-up lookups: `exact` repeats an inserted question; `semantic` asks the paraphrase "
        "(labelled duplicate) of an inserted question; `miss` asks a held-out question with no "
        "duplicate in the data. Rows are grouped by what the lookup RETURNED; the counts table "
        "shows how each query set came out.",
        "- `bare embedding` is `embedder.embed([query])` of each non-exact query, timed next to "
        "its lookup (alternating before/after) in the same run. Latencies are wall-clock "
        "`time.perf_counter()` around `cache.lookup()`, in milliseconds.",
        "",
        "## Lookup latency (ms)",
        "",
        "| entries | result | n | p50 | p95 | p99 | max | target |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "## How each query set came out",
        "",
        "| entries | asked | lookups | exact hit | semantic hit | miss |",
        "|---:|---|---:|---:|---:|---:|",
        *counts_rows,
        "",
        f"## Query log and hit bookkeeping: on vs off ({sizes[-1]:,} entries)",
        "",
        "Same folder, two caches (`query_log` + `track_hits` off / on); each query goes to both "
        "in alternating order. The log is written by the background thread; the run checks that "
        "every lookup of the `on` cache reached the log.",
        "",
        "| result | n (off / on) | p50 off | p50 on | p95 off | p95 on | p50 difference | target |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *book_rows,
        "",
        "## Fill (precomputed vectors, insert_many)",
        "",
        "| entries after | inserted | seconds | entries/s |",
        "|---:|---:|---:|---:|",
        *fill_rows,
        "",
        "## Batched insert throughput (real embedding)",
        "",
        "| entries | insert_many batch | entries/s | embedding alone, entries/s | target |",
        "|---:|---:|---:|---:|---|",
        f"| {tp['entries']:,.0f} | {min(args.batch, 500)} | {tp['insert_per_s']:,.0f} | "
        f"{tp['embed_per_s']:,.0f} | >= {INSERT_RATE:g}/s: "
        f"{'PASS' if tp['insert_per_s'] >= INSERT_RATE else 'FAIL'} |",
        "",
        "## Memory",
        "",
        f"Peak RSS (getrusage): {peak_after_lookups:,.0f} MiB after the lookups at "
        f"{sizes[-1]:,} entries; {peak:,.0f} MiB at the end of the run.",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
