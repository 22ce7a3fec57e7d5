"""ModelCache beside GPTCache 0.1.44: the same model, data and lookups in one run.

Method (printed with the results):

* GPTCache runs in a virtualenv of its own that this script creates (its pins may conflict
  with ModelCache's): CPU torch first (never a CUDA build), then ``gptcache==0.1.44``,
  ``faiss-cpu``, ``sentence-transformers``, ``sqlalchemy``. Its side is a child process
  (``benchmarks/_peers_gptcache.py``) that answers one command per line, so the two systems
  alternate query by query and machine noise falls on both alike.
* Same model: the shipped all-MiniLM-L6-v2 folder; ModelCache embeds with ONNX Runtime (its
  default), GPTCache with its SBERT embedding (sentence-transformers on torch); one thread each.
  GPTCache is set up as its README shows: ``get_prompt``, sqlite + faiss,
  ``SearchDistanceEvaluation`` and the default threshold; ModelCache with its defaults.
* Same data: distinct Quora questions (QQP train + dev from the shared data folder, read by
  path). Both systems are filled to each size from the SAME precomputed vectors (GPTCache's
  ``data_manager.import_data`` takes embeddings), so only lookups embed.
* Same lookups, in random order, each sent to both systems (order alternating): ``exact``
  repeats an inserted question, ``semantic`` asks the labelled paraphrase of an inserted
  question, ``miss`` asks a held-out question without a duplicate in the data. Next to each
  non-exact lookup the bare embedding of the same text is timed in each process (ONNX in
  ModelCache's, torch in GPTCache's): the floor. ``--runs`` repetitions; medians over runs.
* Insert/s: bulk insert with real embedding into fresh stores (``insert_many`` vs
  GPTCache's ``import_data``), alternating. Memory: fresh processes that open the largest
  stores and serve the lookups, RSS after each stage (``/proc/self/status``).

Usage: ``python benchmarks/peers.py [--sizes 1000,10000,100000] [--queries 200] [--runs 2]
[--per-set N] [--throughput 500] [--out benchmarks/results/peers.md]``. The fill vectors are
cached under /tmp by chunk (as in latency.py); ``--workload-size 100000`` with smaller
``--sizes`` reuses the chunks of a 100k run, so the small sizes can run beside the large one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import numpy as np
from _common import add_data_option, proc_rss
from runtime import measure_cli, run_child

from modelcache import Cache, CacheConfig, Request
from modelcache.embedding import build_embedder
from modelcache.embedding.models import shipped_model_path
from modelcache.lab.latency import CHUNK, PrecomputedEmbedder, fill_vectors, load_workload, machine

GPTCACHE_PINS = ("gptcache==0.1.44", "faiss-cpu", "sentence-transformers", "sqlalchemy<3")
DRIVER = Path(__file__).with_name("_peers_gptcache.py")
SEMANTIC_VS_PEER = 0.35
SEMANTIC_VS_EMBEDDING = 1.3
EXACT_P50_MS = 1.0
RSS_MIB = 500
KINDS = ("exact", "semantic", "miss")


# ---- GPTCache's virtualenv and child process ---------------------------------------------------
def ensure_venv(venv: Path) -> Path:
    """GPTCache's virtualenv, created once (CPU torch first: a plain request pulls CUDA)."""
    python = venv / "bin" / "python"
    stamp = venv / ".peers-installed"
    wanted = "\n".join(("torch==2.13.0", *GPTCACHE_PINS))
    if stamp.is_file() and stamp.read_text() == wanted:
        return python
    print(f"creating GPTCache's virtualenv in {venv} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    local = glob.glob("/opt/wheels/torch-2.13.0+cpu*.whl")
    cpu_index = [
        "--index-url",
        "https://download.pytorch.org/whl/cpu",
        "--extra-index-url",
        "https://pypi.org/simple",
    ]
    subprocess.run([*pip, "torch==2.13.0", *([] if local else cpu_index)], check=True)
    subprocess.run([*pip, *GPTCACHE_PINS], check=True)
    stamp.write_text(wanted)
    return python


class Peer:
    """The GPTCache child: one JSON command per line in, one JSON reply per line out."""

    def __init__(self, python: Path, log_path: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.pop("PYTHONPATH", None)
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            [str(python), str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )

    def call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        """Send one command and wait for its reply."""
        self.send(op, **kwargs)
        return self.reply(op)

    def send(self, op: str, **kwargs: Any) -> None:
        """Send one command; its reply is read by :meth:`reply` (meanwhile the child works)."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self._proc.stdin.flush()

    def reply(self, op: str) -> dict[str, Any]:
        """The reply to the command sent last."""
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the GPTCache child ended (see {self._log.name})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"GPTCache child, {op}: {reply['error']}")
        return reply

    def close(self) -> None:
        """Ask the child to end and wait for it."""
        try:
            self.call_quit()
        finally:
            self._log.close()

    def call_quit(self) -> None:
        """End the child (no reply)."""
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.write('{"op": "quit"}\n')
            self._proc.stdin.flush()
            self._proc.wait(timeout=60)


def vectors_upto(model: Any, keys: list[str], cache_dir: Path, upto: int) -> np.ndarray:
    """The first ``upto`` fill vectors, from latency.py's chunk cache of the whole fill list
    when those chunks are there (a run of the small sizes reuses the largest run's vectors)."""
    digest = hashlib.sha256(
        ("\x00".join(keys) + model.name + str(model.dimension)).encode("utf-8")
    ).hexdigest()[:16]
    folder = cache_dir / f"{model.name.replace(':', '_')}-{len(keys)}-{digest}"
    paths = [folder / f"chunk{n:04d}.npy" for n in range(-(-upto // CHUNK))]
    if upto < len(keys) and all(p.is_file() for p in paths):
        return np.concatenate([np.load(p) for p in paths])[:upto]
    return fill_vectors(model, keys, cache_dir)[:upto]


# ---- measurement ---------------------------------------------------------------------------------
def pct(values: Sequence[float], q: float) -> float:
    """Percentile (linear), NaN for no values."""
    return float(np.percentile(values, q)) if values else float("nan")


def fmt(x: float) -> str:
    """Milliseconds with sensible precision."""
    return "n/a" if x != x else (f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}")


def du_mib(path: Path) -> float:
    """Bytes on disk under a folder, MiB."""
    total = sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())
    return total / 2**20


Samples = dict[str, dict[str, list[float]]]  # system -> row label -> values


def run_mix(
    cache: Cache,
    embedder: PrecomputedEmbedder,
    peer: Peer,
    tasks: list[tuple[str, str]],
    samples: Samples,
) -> dict[str, dict[str, int]]:
    """Each lookup to both systems, order alternating; returns hit counts per system and set."""
    embedder.enabled = False
    counts: dict[str, dict[str, int]] = {"modelcache": {}, "gptcache": {}}
    model = embedder.model
    for i, (asked, text) in enumerate(tasks):
        bare = "none" if asked == "exact" else ("before" if (i // 2) % 2 == 0 else "after")
        for system in ("modelcache", "gptcache") if i % 2 == 0 else ("gptcache", "modelcache"):
            if system == "gptcache":
                out = peer.call("lookup", text=text, bare=bare)
                hit, kind = out["hit"], "semantic"
                ms, cpu, bare_ms = out["ms"], out["cpu_ms"], out.get("bare_ms")
            else:
                req = Request.from_text(text)
                bare_ms = None
                if bare == "before":
                    t0 = time.perf_counter()
                    model.embed([req.query_text])
                    bare_ms = (time.perf_counter() - t0) * 1000
                c0, t0 = time.process_time(), time.perf_counter()
                found = cache.lookup(req)
                ms = (time.perf_counter() - t0) * 1000
                cpu = (time.process_time() - c0) * 1000
                if bare == "after":
                    t0 = time.perf_counter()
                    model.embed([req.query_text])
                    bare_ms = (time.perf_counter() - t0) * 1000
                hit = found is not None
                kind = "exact" if found is not None and found.exact else "semantic"
            rows = samples[system]
            rows.setdefault(f"{asked} (all)", []).append(ms)
            rows.setdefault(f"{asked} (all) cpu", []).append(cpu)
            if asked == "semantic" and hit and kind == "semantic":
                rows.setdefault("semantic hit", []).append(ms)
                rows.setdefault("semantic hit cpu", []).append(cpu)
            if asked == "exact" and hit:
                rows.setdefault("exact hit", []).append(ms)
            if bare_ms is not None:
                rows.setdefault("bare embedding", []).append(bare_ms)
            c = counts[system].setdefault(asked, 0)
            counts[system][asked] = c + int(hit)
    return counts


def insert_rates(
    model: Any, peer: Peer, texts: list[str], root: Path, runs: int
) -> dict[str, list[float]]:
    """Entries/s of bulk insert with real embedding into fresh stores, alternating."""
    rates: dict[str, list[float]] = {"modelcache": [], "gptcache": []}
    for r in range(runs):
        for system in ("modelcache", "gptcache") if r % 2 == 0 else ("gptcache", "modelcache"):
            folder = root / f"insert-{system}-{r}"
            if system == "gptcache":
                seconds = peer.call("insert", folder=str(folder), texts=texts)["s"]
            else:
                with Cache(CacheConfig(path=str(folder)), embedder=model) as cache:
                    t0 = time.perf_counter()
                    cache.insert_many([(Request.from_text(t), {"answer": t}) for t in texts])
                    cache.flush()
                    seconds = time.perf_counter() - t0
            rates[system].append(len(texts) / seconds)
            shutil.rmtree(folder, ignore_errors=True)
    return rates


def serve_probe(folder: Path, queries: list[str]) -> dict[str, Any]:
    """(Run in a fresh process.) Stage times and RSS of a process that opens the store and
    serves lookups: the model, Chroma and the rest are told apart by RSS after each stage."""
    t0 = time.perf_counter()
    marks: dict[str, dict[str, float]] = {}

    def mark(stage: str) -> None:
        marks[stage] = {"s": time.perf_counter() - t0, "cpu_s": time.process_time(), **proc_rss()}

    mark("python started")
    cache = Cache(CacheConfig(path=str(folder)))
    mark("Cache() (SQL open; no model, no Chroma yet)")
    cache.embedder.embed(["model probe"])
    mark("model loaded (ONNX Runtime)")
    hit = cache.lookup(Request.from_text(queries[0]))
    mark("first semantic lookup (Chroma opened, index loaded)")
    lookup_ms = []
    for q in queries[1:]:
        start = time.perf_counter()
        cache.lookup(Request.from_text(q))
        lookup_ms.append((time.perf_counter() - start) * 1000)
    mark(f"+ {len(queries) - 1} lookups")
    heavy = [
        m
        for m in ("torch", "sentence_transformers", "chromadb", "onnxruntime", "jieba")
        if m in sys.modules
    ]
    cache.close()
    return {
        "marks": marks,
        "first": getattr(hit, "kind", None),
        "heavy": heavy,
        "lookup_ms": lookup_ms,
    }


# ---- main ----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run both systems and print (and optionally save) the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=200, help="lookups per set per size")
    parser.add_argument("--per-set", type=int, default=None, help="use fewer of the queries")
    parser.add_argument(
        "--workload-size", type=int, default=None, help="fill list length (default: largest size)"
    )
    parser.add_argument("--runs", type=int, default=2, help="repetitions of the lookup mix")
    parser.add_argument("--throughput", type=int, default=500, help="entries for insert/s")
    parser.add_argument("--out", type=Path, default=None)
    add_data_option(parser)
    parser.add_argument("--venv", type=Path, default=Path.home() / ".cache/modelcache/peers-venv")
    parser.add_argument(
        "--vector-cache", type=Path, default=Path(tempfile.gettempdir()) / "modelcache-peers"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--serve-probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_probe is not None:  # the child of the memory measurement
        print(json.dumps(serve_probe(args.serve_probe, json.loads(sys.stdin.read()))))
        return 0
    sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})

    python = ensure_venv(args.venv)
    load_start = os.getloadavg()
    started_at = dt.datetime.now(dt.timezone.utc)
    cpu_start = time.process_time()
    per_set = args.per_set or args.queries
    work = load_workload(
        args.data, args.queries, max(sizes[-1], args.workload_size or 0), args.throughput
    )
    model = build_embedder("minilm", threads=1, backend="onnx")
    fill_keys = [Request.from_text(t).query_text for t in work.fill]
    vectors = vectors_upto(model, fill_keys, args.vector_cache, sizes[-1])
    work.fill, fill_keys = work.fill[: sizes[-1]], fill_keys[: sizes[-1]]
    embedder = PrecomputedEmbedder(model, fill_keys, vectors)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="modelcache-peers-"))
    workdir.mkdir(parents=True, exist_ok=True)
    texts_path, vectors_path = workdir / "fill.json", workdir / "fill.npy"
    texts_path.write_text(json.dumps(work.fill), encoding="utf-8")
    np.save(vectors_path, vectors)
    mc_folder, gc_folder = workdir / "modelcache", workdir / "gptcache"
    peer = Peer(python, workdir / "gptcache-child.log")
    opened = peer.call("open", folder=str(gc_folder), model=str(shipped_model_path()), threads=1)
    cache = Cache(CacheConfig(path=str(mc_folder)), embedder=embedder)
    per_size: dict[int, dict[str, Any]] = {}
    filled = 0
    try:
        for size in sizes:
            embedder.enabled = True
            # both fills at once (the set-up, not a measurement of interest): GPTCache's child
            # imports while this process inserts
            peer.send(
                "fill",
                texts_path=str(texts_path),
                vectors_path=str(vectors_path),
                start=filled,
                stop=size,
            )
            t0 = time.perf_counter()
            for start in range(filled, size, 1000):
                chunk = work.fill[start : min(size, start + 1000)]
                cache.insert_many([(Request.from_text(t), {"answer": t}) for t in chunk])
            cache.flush()
            mc_fill = time.perf_counter() - t0
            gc_fill = peer.reply("fill")["s"]
            added, filled = size - filled, size
            print(
                f"filled {size:,}: ModelCache {mc_fill:.1f} s, GPTCache {gc_fill:.1f} s",
                file=sys.stderr,
            )
            runs: list[Samples] = []
            counts: list[dict[str, dict[str, int]]] = []
            for r in range(args.runs):
                rnd = random.Random(size * 100 + r)
                exact = rnd.sample(work.fill[:size], min(per_set, size))
                tasks = [("exact", q) for q in exact]
                tasks += [("semantic", q) for q in work.semantic[: min(per_set, size)]]
                tasks += [("miss", q) for q in work.miss[:per_set]]
                rnd.shuffle(tasks)
                if r == 0:  # warm-up: first Chroma / faiss query, tokenizer caches
                    run_mix(cache, embedder, peer, tasks[:20], {"modelcache": {}, "gptcache": {}})
                samples: Samples = {"modelcache": {}, "gptcache": {}}
                counts.append(run_mix(cache, embedder, peer, tasks, samples))
                runs.append(samples)
                print(f"  run {r + 1}/{args.runs} at {size:,} done", file=sys.stderr)
            stats = peer.call("stats")
            assert cache.stats()["entries"] == size
            per_size[size] = {
                "runs": runs,
                "counts": counts,
                "fill": {"modelcache": added / mc_fill, "gptcache": added / gc_fill},
                "disk": {"modelcache": du_mib(mc_folder), "gptcache": du_mib(gc_folder)},
                "rss": {"modelcache": proc_rss()["peak_mib"], "gptcache": stats["peak_mib"]},
            }
    finally:
        cache.close()
    print("measuring insert/s with real embedding ...", file=sys.stderr)
    rates = insert_rates(model, peer, work.throughput, workdir, args.runs if args.throughput else 0)
    peer.close()

    print("measuring serving processes (memory, cold start) ...", file=sys.stderr)
    probe_queries = work.semantic[:50] + work.fill[:50] + work.miss[:50]
    rnd = random.Random(1)
    rnd.shuffle(probe_queries)
    probe_queries.insert(0, work.semantic[0])
    mc_serve: list[dict[str, Any]] = []
    gc_serve: list[dict[str, Any]] = []
    for r in range(args.runs):
        for system in ("modelcache", "gptcache") if r % 2 == 0 else ("gptcache", "modelcache"):
            if system == "modelcache":
                with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
                    fh.write(json.dumps(probe_queries))
                    fh.flush()
                    wall, peak, out = run_child(
                        [
                            "sh",
                            "-c",
                            f'"{sys.executable}" "{__file__}" --serve-probe '
                            f'"{mc_folder}" < "{fh.name}"',
                        ]
                    )
                mc_serve.append({"wall": wall, "peak": peak, **json.loads(out.splitlines()[-1])})
            else:
                child = Peer(python, workdir / "gptcache-child.log")
                t0 = time.perf_counter()
                marks = child.call(
                    "open", folder=str(gc_folder), model=str(shipped_model_path()), threads=1
                )["marks"]
                for q in probe_queries:
                    child.call("lookup", text=q, bare="none")
                end = child.call("stats")
                child.close()
                marks[f"+ {len(probe_queries)} lookups"] = {
                    "s": time.perf_counter() - t0,
                    "rss_mib": end["rss_mib"],
                    "peak_mib": end["peak_mib"],
                }
                gc_serve.append({"marks": marks, "peak": end["peak_mib"]})
    cli_rows = measure_cli(mc_folder, 3)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)

    report = render(
        args,
        sizes,
        per_size,
        rates,
        mc_serve,
        gc_serve,
        cli_rows,
        opened,
        load_start,
        started_at,
        time.process_time() - cpu_start,
    )
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
    return 0


def _med(runs: list[Samples], system: str, label: str, q: float) -> float:
    """Median over runs of one percentile of one row."""
    values = [pct(r[system].get(label, []), q) for r in runs]
    values = [v for v in values if v == v]
    return float(np.median(values)) if values else float("nan")


def render(
    args: argparse.Namespace,
    sizes: list[int],
    per_size: dict[int, dict[str, Any]],
    rates: dict[str, list[float]],
    mc_serve: list[dict[str, Any]],
    gc_serve: list[dict[str, Any]],
    cli_rows: list[str],
    opened: dict[str, Any],
    load_start: tuple[float, float, float],
    started_at: dt.datetime,
    cpu_s: float,
) -> str:
    """The markdown report."""
    info = machine()
    load_end = os.getloadavg()
    lat = [
        "| entries | lookups | ModelCache p50 | p95 | CPU p50 | GPTCache p50 | p95 | CPU p50 "
        "| ModelCache / GPTCache (p50) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    targets = []
    for size in sizes:
        runs = per_size[size]["runs"]
        labels = [
            "exact (all)",
            "exact hit",
            "semantic (all)",
            "semantic hit",
            "miss (all)",
            "bare embedding",
        ]
        for label in labels:
            mc50, gc50 = _med(runs, "modelcache", label, 50), _med(runs, "gptcache", label, 50)
            cpu_label = f"{label} cpu"
            shown = "bare embedding (ONNX / torch)" if label == "bare embedding" else label
            lat.append(
                f"| {size:,} | {shown} | {fmt(mc50)} | {fmt(_med(runs, 'modelcache', label, 95))} "
                f"| {fmt(_med(runs, 'modelcache', cpu_label, 50))} | {fmt(gc50)} "
                f"| {fmt(_med(runs, 'gptcache', label, 95))} "
                f"| {fmt(_med(runs, 'gptcache', cpu_label, 50))} | {mc50 / gc50:.2f}x |"
            )
        sem = _med(runs, "modelcache", "semantic hit", 50)
        sem_cpu = _med(runs, "modelcache", "semantic hit cpu", 50)
        gsem = _med(runs, "gptcache", "semantic hit", 50)
        gsem_cpu = _med(runs, "gptcache", "semantic hit cpu", 50)
        ratio = sem / gsem
        verdict = "met" if ratio <= SEMANTIC_VS_PEER else "missed"
        targets.append(
            f"| semantic hit p50 vs GPTCache's, {size:,} | <= {SEMANTIC_VS_PEER}x | {ratio:.2f}x "
            f"(CPU {sem_cpu / gsem_cpu:.2f}x) | {verdict} |"
        )
    top = per_size[sizes[-1]]["runs"]
    sem = _med(top, "modelcache", "semantic hit", 50)
    bare = _med(top, "modelcache", "bare embedding", 50)
    exact = _med(top, "modelcache", "exact hit", 50)
    targets.append(
        f"| semantic hit p50 vs bare ONNX embedding, {sizes[-1]:,} | <= {SEMANTIC_VS_EMBEDDING}x "
        f"| {sem / bare:.2f}x ({fmt(sem)} vs {fmt(bare)} ms) "
        f"| {'met' if sem / bare <= SEMANTIC_VS_EMBEDDING else 'missed'} |"
    )
    targets.append(
        f"| exact hit p50, {sizes[-1]:,} | <= {EXACT_P50_MS:g} ms | {fmt(exact)} ms "
        f"| {'met' if exact <= EXACT_P50_MS else 'missed'} |"
    )
    counts = [
        "| entries | run | set | lookups | ModelCache hits | GPTCache hits |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    store = [
        "| entries | fill from vectors, entries/s (MC / GPTCache) | disk MiB (MC / GPTCache) "
        "| peak RSS of the benchmark processes, MiB (MC / GPTCache) |",
        "|---:|---:|---:|---:|",
    ]
    for size in sizes:
        d = per_size[size]
        for r, c in enumerate(d["counts"]):
            n = {
                "exact": min(args.per_set or args.queries, size),
                "semantic": min(args.per_set or args.queries, size),
                "miss": args.per_set or args.queries,
            }
            for kind in KINDS:
                counts.append(
                    f"| {size:,} | {r + 1} | {kind} | {n[kind]} | "
                    f"{c['modelcache'].get(kind, 0)} | {c['gptcache'].get(kind, 0)} |"
                )
        store.append(
            f"| {size:,} | {d['fill']['modelcache']:,.0f} / {d['fill']['gptcache']:,.0f} | "
            f"{d['disk']['modelcache']:,.1f} / {d['disk']['gptcache']:,.1f} | "
            f"{d['rss']['modelcache']:,.0f} / {d['rss']['gptcache']:,.0f} |"
        )
    mem = [
        "| system | stage | seconds since start | RSS MiB | peak RSS MiB |",
        "|---|---|---:|---:|---:|",
    ]
    for name, serve in (("ModelCache", mc_serve), ("GPTCache", gc_serve)):
        for stage in serve[0]["marks"]:
            got = [s["marks"][stage] for s in serve if stage in s["marks"]]
            mem.append(
                f"| {name} | {stage} | {np.median([g['s'] for g in got]):.2f} | "
                f"{np.median([g['rss_mib'] for g in got]):,.0f} | "
                f"{np.median([g['peak_mib'] for g in got]):,.0f} |"
            )
    mc_peak = float(np.median([s["peak"] for s in mc_serve]))
    marks = mc_serve[0]["marks"]
    stages = list(marks)
    rss = [float(np.median([s["marks"][st]["rss_mib"] for s in mc_serve])) for st in stages]
    first_lookup = float(
        np.median([s["marks"][stages[3]]["s"] - s["marks"][stages[0]]["s"] for s in mc_serve])
    )
    components = (
        f"Components of ModelCache's serving process (medians of {len(mc_serve)}): Python, "
        f"modelcache and SQL {rss[1]:,.0f} MiB; the ONNX model +{rss[2] - rss[1]:,.0f} MiB; "
        f"Chroma (client and the {sizes[-1]:,}-vector index) +{rss[3] - rss[2]:,.0f} MiB; "
        f"{stages[4]} +{rss[4] - rss[3]:,.0f} MiB; peak "
        f"{mc_peak:,.0f} MiB (whole process, /usr/bin/time); heavy modules loaded: "
        f"{', '.join(mc_serve[0]['heavy'])}; first lookup came back "
        f"{mc_serve[0]['first'] or 'a miss'}."
    )
    targets.append(
        f"| peak RSS serving lookups, {sizes[-1]:,} | <= {RSS_MIB} MiB | {mc_peak:,.0f} MiB | "
        f"{'met' if mc_peak <= RSS_MIB else 'missed'} |"
    )
    targets.append(
        f"| Cache() + first semantic lookup, {sizes[-1]:,} | <= 3 s | {first_lookup:.2f} s | "
        f"{'met' if first_lookup <= 3 else 'missed'} |"
    )
    mc_rates, gc_rates = rates["modelcache"], rates["gptcache"]
    lines = [
        "# ModelCache beside GPTCache",
        "",
        f"Run {started_at:%Y-%m-%d %H:%M} UTC, `python benchmarks/peers.py --sizes "
        f"{','.join(map(str, sizes))} --queries {args.queries} --per-set {args.per_set} "
        f"--workload-size {args.workload_size} --runs {args.runs}`; "
        f"{cpu_s / 60:.0f} CPU-minutes in the main process.",
        "",
        "## Method",
        "",
        __doc__.split("Method (printed with the results):")[1].split("Usage:")[0].strip(),
        "",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, {info['os']}; "
        f"Python {info['python']}, onnxruntime {info['onnxruntime']}, chromadb "
        f"{info['chromadb']}; GPTCache's venv: torch 2.13.0+cpu, gptcache 0.1.44, faiss-cpu.",
        f"- Load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/"
        f"{load_start[2]:.2f}, at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}: "
        "the 2 CPUs are shared with other work, so wall times are inflated and noisy; CPU "
        "times (`time.process_time()` of the whole process around the call) and ratios "
        "measured in the same run are the figures to compare.",
        f"- {args.per_set or args.queries} lookups per set and size, {args.runs} runs "
        "(different order); each "
        "figure is the median over runs of the per-run percentile. `exact (all)` etc. are all "
        "lookups of a set; `semantic hit` only those paraphrase lookups that a system answered "
        "from a similar entry; `bare embedding` is the query embedding alone (ONNX for "
        "ModelCache, torch for GPTCache). GPTCache has no exact path: its exact lookups embed.",
        "",
        "## Targets",
        "",
        "| target | wanted | measured | verdict |",
        "|---|---|---|---|",
        *targets,
        "",
        "## Lookup latency (ms, wall unless marked CPU)",
        "",
        *lat,
        "",
        "## Hits per query set",
        "",
        "GPTCache's default threshold (cosine >= 0.60) answers nearly every lookup, misses "
        "included (those are false hits); ModelCache's defaults (0.86 + guard) answer fewer.",
        "",
        *counts,
        "",
        "## Inserts, disk and memory",
        "",
        *store,
        "",
        (
            f"Bulk insert with real embedding, {args.throughput} "
            f"fresh entries, median of {args.runs}: ModelCache `insert_many` (ONNX) "
            f"{np.median(mc_rates):,.0f}/s, GPTCache `import_data` (torch) "
            f"{np.median(gc_rates):,.0f}/s (runs: {', '.join(f'{x:,.0f}' for x in mc_rates)} / "
            f"{', '.join(f'{x:,.0f}' for x in gc_rates)})."
            if mc_rates
            else "Bulk insert with real embedding: not measured in this run (`--throughput 0`)."
        ),
        "",
        f"### Serving processes at {sizes[-1]:,} entries",
        "",
        "A fresh process opens the stores and serves "
        "lookups (up to 50 per set, one semantic first); RSS "
        "after each stage; medians of the runs.",
        "",
        *mem,
        "",
        components,
        "",
        f"GPTCache's benchmark child at start: {json.dumps(opened['marks'])}.",
        "",
        f"### Cold start and CLI at {sizes[-1]:,} entries (median of 3 fresh processes)",
        "",
        "| command | wall s | peak RSS MiB |",
        "|---|---:|---:|",
        *cli_rows,
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
