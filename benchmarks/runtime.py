"""Embedding runtime, cold start, memory and bulk loads: torch (before) vs ONNX Runtime (after).

Method (printed with the results): the shipped all-MiniLM-L6-v2 on one thread, under torch
(``embedder_backend="torch"``, the former default) and under ONNX Runtime (the default), in
the same run with the two alternating, on distinct Quora questions from the shared data folder
(read by path, never copied):

* embedding: ``embed([query])`` of the same queries, alternating torch/ONNX per query; batch
  throughput of ``embed(texts)``;
* bulk insert: ``insert_many`` with real embedding into fresh caches, alternating rounds;
* lookup path (ONNX, ``--entries`` entries): full lookup vs bare embedding per query, and the
  Chroma query stage alone with ``include=["distances"]`` (what the engine asks) vs Chroma's
  default include;
* cold start and memory: fresh processes (median of ``--repeat``), timed from outside (wall,
  and peak RSS from ``/usr/bin/time``) and inside (stage times and RSS after each stage);
* a ``modelcache serve`` process answering HTTP lookups: peak RSS from ``/proc/<pid>/status``
  (VmHWM).

Usage: ``python benchmarks/runtime.py [--entries 2000] [--queries 200] [--repeat 3]
[--out benchmarks/results/runtime.md]``

``--compare BEFORE`` measures only the cold start and the lookup stages, of this checkout and of
an earlier one (``BEFORE`` is a folder holding its ``modelcache`` package, put first on the
children's ``PYTHONPATH``), in fresh processes that alternate between the two:

* cold start: seconds (wall and the process's CPU) from the child's first line to ``Cache()``
  and to the end of its first semantic lookup, with the default config (``lookup_timeout``
  0.5 s), and what that lookup returned;
* lookup stages: each stage of ``--queries`` semantic lookups timed inside the process by
  wrapping the engine's calls (exact probe, query embedding, vector query, candidate rows,
  threshold choice, acceptor and its guard), on the caller's thread (``lookup_timeout=None``)
  so that the stages add up, then the same lookups with the default deadline; p50 of CPU time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import write_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import numpy as np

BACKENDS = ("torch", "onnx")


# ---- data --------------------------------------------------------------------------------------
def load_questions(data_dir: Path, count: int) -> list[str]:
    """Distinct QQP questions (train then dev), in a fixed shuffled order."""
    seen: dict[str, str] = {}
    for name in ("qqp_train.jsonl", "qqp_dev.jsonl"):
        with open(data_dir / name, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                for side in ("a", "b"):
                    text = str(row[side]).strip()
                    if len(text) > 3:
                        seen.setdefault(text.casefold(), text)
    texts = list(seen.values())
    random.Random(20261130).shuffle(texts)
    if len(texts) < count:
        raise SystemExit(f"only {len(texts)} questions in {data_dir}")
    return texts[:count]


def pct(values: Sequence[float], q: float) -> float:
    """Percentile (linear), NaN for no values."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def fmt(x: float) -> str:
    """Numbers with sensible precision."""
    return "n/a" if x != x else (f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:,.0f}")


# ---- in-process measurements ---------------------------------------------------------------------
def embedders() -> dict[str, Any]:
    """Both runtimes of the shipped model, loaded and warmed."""
    from modelcache.embedding import build_embedder

    out = {b: build_embedder("minilm", threads=1, backend=b) for b in BACKENDS}
    for e in out.values():
        e.embed(["warm-up"])
    assert out["onnx"].backend == "onnx", "the ONNX export failed; see the warning above"
    return out


def measure_embedding(models: dict[str, Any], queries: list[str], batch: list[str]) -> list[str]:
    """Single-query latency and batch throughput per runtime, alternating; wall and CPU time.

    CPU time (``time.process_time``) is what the embedding costs this process whatever else
    runs on the machine; wall time is what a caller waits.
    """
    single: dict[str, list[float]] = {b: [] for b in BACKENDS}
    single_cpu: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for i, q in enumerate(queries):
        order = BACKENDS if i % 2 == 0 else BACKENDS[::-1]
        for b in order:
            t0, c0 = time.perf_counter(), time.process_time()
            models[b].embed([q])
            single[b].append((time.perf_counter() - t0) * 1000)
            single_cpu[b].append((time.process_time() - c0) * 1000)
    rate: dict[str, list[float]] = {b: [] for b in BACKENDS}
    rate_cpu: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for r in range(2):
        for b in BACKENDS if r % 2 == 0 else BACKENDS[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            models[b].embed(batch)
            rate[b].append(len(batch) / (time.perf_counter() - t0))
            rate_cpu[b].append(len(batch) / (time.process_time() - c0))
    a = models["onnx"].embed(queries[:100])
    c = models["torch"].embed(queries[:100])
    worst = float(np.min(np.sum(a * c, axis=1)))
    rows = [
        f"| {b} | {len(single[b])} | {fmt(pct(single[b], 50))} | {fmt(pct(single[b], 95))} | "
        f"{fmt(pct(single_cpu[b], 50))} | {fmt(float(np.median(rate[b])))} | "
        f"{fmt(float(np.median(rate_cpu[b])))} |"
        for b in BACKENDS
    ]

    def ratio(values: dict[str, list[float]], per_item: bool) -> str:
        t, o = float(np.median(values["torch"])), float(np.median(values["onnx"]))
        return f"{(t / o if per_item else o / t):.2f}x"

    rows.append(
        f"| ONNX vs torch (speed-up) | | {ratio(single, True)} | | {ratio(single_cpu, True)} | "
        f"{ratio(rate, False)} | {ratio(rate_cpu, False)} |"
    )
    rows.append(f"| worst cosine ONNX vs torch (100 queries) | | {worst:.6f} | | | | |")
    return rows


def measure_bulk(models: dict[str, Any], texts: list[str], batch: int, root: Path) -> list[str]:
    """insert_many entries/s with real embedding, fresh cache per round, alternating."""
    from modelcache import Cache, CacheConfig, Request

    rate: dict[str, list[float]] = {b: [] for b in BACKENDS}
    cpu: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for r in range(2):
        for b in BACKENDS if r % 2 == 0 else BACKENDS[::-1]:
            folder = root / f"bulk-{b}-{r}"
            with Cache(CacheConfig(path=str(folder)), embedder=models[b]) as cache:
                t0, c0 = time.perf_counter(), time.process_time()
                for start in range(0, len(texts), batch):
                    chunk = texts[start : start + batch]
                    cache.insert_many([(Request.from_text(t), {"answer": t}) for t in chunk])
                rate[b].append(len(texts) / (time.perf_counter() - t0))
                cpu[b].append(len(texts) / (time.process_time() - c0))
            shutil.rmtree(folder, ignore_errors=True)
    return [
        f"| {b} | {len(texts):,} | {batch} | {fmt(float(np.median(rate[b])))} | "
        f"{', '.join(fmt(x) for x in rate[b])} | {fmt(float(np.median(cpu[b])))} |"
        for b in BACKENDS
    ]


def fill(folder: Path, texts: list[str], model: Any) -> None:
    """A cache folder holding ``texts`` (one partition), embedded by ``model``."""
    from modelcache import Cache, CacheConfig, Request

    with Cache(CacheConfig(path=str(folder)), embedder=model) as cache:
        for start in range(0, len(texts), 500):
            chunk = texts[start : start + 500]
            cache.insert_many([(Request.from_text(t), {"answer": t}) for t in chunk])


def measure_stages(folder: Path, model: Any, queries: list[str]) -> list[str]:
    """Lookup vs bare embedding, and the Chroma query stage with two include lists."""
    from modelcache import Cache, CacheConfig, Request

    rows = []
    with Cache(CacheConfig(path=str(folder)), embedder=model) as cache:
        pid = Request.from_text("x").partition.id
        coll = cache._vectors._get(pid, create=False)  # the handle the engine reuses
        times: dict[str, list[float]] = {}

        cpu: dict[str, list[float]] = {}

        def timed(label: str, fn: Callable[[], Any]) -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            value = fn()
            times.setdefault(label, []).append((time.perf_counter() - t0) * 1000)
            cpu.setdefault(label, []).append((time.process_time() - c0) * 1000)
            return value

        for q in queries[:20]:
            cache.lookup(Request.from_text(q))
        kinds: dict[str, int] = {}
        for i, q in enumerate(queries):
            req = Request.from_text(q)
            steps: list[tuple[str, Callable[[], Any]]] = [
                ("lookup", lambda req=req: cache.lookup(req)),
                ("bare embedding", lambda req=req: model.embed([req.query_text])),
            ]
            for label, fn in steps if i % 2 == 0 else steps[::-1]:
                value = timed(label, fn)
                if label == "lookup":
                    kind = "miss" if value is None else value.kind
                    kinds[kind] = kinds.get(kind, 0) + 1
            vec = model.embed([req.query_text]).reshape(1, -1)
            chroma: list[tuple[str, Callable[[], Any]]] = [
                (
                    "chroma query, include=[distances]",
                    lambda v=vec: cache._vectors.query(pid, v, 5),
                ),
                (
                    "chroma query, default include",
                    lambda v=vec: coll.query(query_embeddings=v, n_results=5),
                ),
            ]
            for label, fn in chroma if i % 2 == 0 else chroma[::-1]:
                timed(label, fn)
        for label, values in times.items():
            rows.append(
                f"| {label} | {len(values)} | {fmt(pct(values, 50))} | {fmt(pct(values, 95))} | "
                f"{fmt(pct(cpu[label], 50))} |"
            )
        ratio = pct(times["lookup"], 50) / pct(times["bare embedding"], 50)
        cpu_ratio = pct(cpu["lookup"], 50) / pct(cpu["bare embedding"], 50)
        rows.append(f"| lookup p50 / bare embedding p50 | | {ratio:.2f}x | | {cpu_ratio:.2f}x |")
        rows.append(f"| lookup outcomes | | {json.dumps(kinds)} | | |")
    return rows


# ---- fresh processes ---------------------------------------------------------------------------
_PROBE = textwrap.dedent(
    """
    import json, os, resource, sys, time
    t0 = time.perf_counter()
    def rss():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
    marks = {}
    import modelcache
    marks["import modelcache"] = (time.perf_counter() - t0, rss())
    from modelcache import Cache, CacheConfig, Request
    cache = Cache(CacheConfig(path=sys.argv[1], embedder_backend=sys.argv[2]))
    marks["Cache()"] = (time.perf_counter() - t0, rss())
    hit = cache.lookup(Request.from_text(sys.argv[3]))
    marks["first semantic lookup"] = (time.perf_counter() - t0, rss())
    for q in json.loads(sys.argv[4]):
        cache.lookup(Request.from_text(q))
    marks["+ lookups"] = (time.perf_counter() - t0, rss())
    heavy = [m for m in ("torch", "transformers", "sentence_transformers", "onnxruntime")
             if m in sys.modules]
    cache.close()
    print(json.dumps({"marks": marks, "hit": getattr(hit, "kind", None), "heavy": heavy}))
    """
)


_COLD_AB = textwrap.dedent(
    """
    import json, sys, time
    t0, c0 = time.perf_counter(), time.process_time()
    marks = {}
    def mark(stage):
        marks[stage] = (time.perf_counter() - t0, time.process_time() - c0)
    from modelcache import Cache, CacheConfig, Request
    mark("import")
    limit = {} if sys.argv[3] == "default" else {"lookup_timeout": None}
    cache = Cache(CacheConfig(path=sys.argv[1], **limit))
    mark("Cache()")
    hit = cache.lookup(Request.from_text(sys.argv[2]))
    mark("first lookup")
    timeouts = cache.stats()["timeouts"]
    cache.close()
    print(json.dumps({"marks": marks, "hit": getattr(hit, "kind", None), "timeouts": timeouts}))
    """
)

_STAGES_AB = textwrap.dedent(
    """
    import json, sys, time
    from modelcache import Cache, CacheConfig, Request
    probes = json.loads(sys.argv[2])
    cache = Cache(CacheConfig(path=sys.argv[1], lookup_timeout=None))
    spent = {}
    def wrap(obj, name, label):
        inner = getattr(obj, name)
        def timed(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.process_time() - c0
                wall = label + ": wall"
                spent[wall] = spent.get(wall, 0.0) + time.perf_counter() - t0
        setattr(obj, name, timed)
    wrap(cache._sql, "get_live", "exact probe (SQL)")
    wrap(cache._embedder, "embed", "query embedding")
    wrap(cache._vectors, "query_vectors", "vector query (Chroma)")
    rows = "get_live_many" if hasattr(cache._sql, "get_live_many") else "get_many"  # older builds
    wrap(cache._sql, rows, "candidate rows (SQL)")
    wrap(cache._acceptor, "threshold_for", "threshold choice")
    wrap(cache._acceptor, "choose", "acceptor (crowding, guard, decoding)")
    if cache._acceptor._guard is not None:
        wrap(cache._acceptor._guard, "conflict", "of which the guard")
    requests = [Request.from_text(p) for p in probes]
    for r in requests[:20]:  # warm-up texts, not measured (the guard memoises features)
        cache.lookup(r)
    caller, deadline = cache.config, cache.config.model_copy(update={"lookup_timeout": 0.5})
    out, kinds = {}, {}
    def add(label, value):
        out.setdefault(label, []).append(value * 1000)
    for i, r in enumerate(requests[20:]):
        on_caller = i % 2 == 0
        cache.config = caller if on_caller else deadline
        spent.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        hit = cache.lookup(r)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        stages = dict(spent)
        kind = getattr(hit, "kind", None) or "miss"
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind != "semantic":
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        cache.embedder.embed([r.query_text])
        bare_wall, bare_cpu = time.perf_counter() - t0, time.process_time() - c0
        if on_caller:
            for label, value in stages.items():
                add(label, value)
            add("whole lookup, caller's thread", cpu)
            add("bare embedding of the same texts", bare_cpu)
            add("whole lookup, caller's thread: wall", wall)
        else:
            add("whole lookup, default deadline (worker thread)", cpu)
            add("bare embedding of the same texts ", bare_cpu)
            add("whole lookup, default deadline (worker thread): wall", wall)
            add("bare embedding of the same texts: wall", bare_wall)
    cache.close()
    print(json.dumps({"ms": out, "kinds": kinds}))
    """
)


CALLER = "whole lookup, caller's thread"
DEADLINE = "whole lookup, default deadline (worker thread)"
BARE = "bare embedding of the same texts"


def measure_compare(
    folder: Path, before: Path, probes: list[str], repeat: int
) -> tuple[list[str], list[str]]:
    """Cold start and lookup stages of this checkout vs ``before``, fresh processes alternating."""
    sides = {"before": str(before.resolve()), "after": ""}

    def child(side: str, code: str, *args: str) -> dict[str, Any]:
        path = [p for p in (sides[side], os.environ.get("PYTHONPATH", "")) if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            check=True,
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    limits = {"default": "0.5 s (default)", "none": "none"}
    cold: dict[tuple[str, str], list[dict[str, Any]]] = {(s, x): [] for x in limits for s in sides}
    stages: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    for r in range(repeat):
        for limit in limits:
            for side in sides if r % 2 == 0 else list(sides)[::-1]:
                probe = probes[r % len(probes)]
                cold[side, limit].append(child(side, _COLD_AB, str(folder), probe, limit))
        for side in sides if r % 2 == 1 else list(sides)[::-1]:
            stages[side].append(child(side, _STAGES_AB, str(folder), json.dumps(probes)))
    cold_rows = []
    for (side, limit), runs in cold.items():
        med = {
            stage: [float(np.median([run["marks"][stage][i] for run in runs])) for i in (0, 1)]
            for stage in runs[0]["marks"]
        }
        outcomes = [run["hit"] or "miss" for run in runs]
        counts = ", ".join(f"{k} {outcomes.count(k)}" for k in sorted(set(outcomes)))
        cold_rows.append(
            f"| {side} | {limits[limit]} | {len(runs)} | "
            f"{med['import'][0]:.2f} / {med['import'][1]:.2f} | "
            f"{med['Cache()'][0]:.2f} / {med['Cache()'][1]:.2f} | "
            f"{med['first lookup'][0]:.2f} / {med['first lookup'][1]:.2f} | {counts} | "
            f"{sum(run['timeouts'] for run in runs)} |"
        )
    stage_rows = []
    labels = list(stages["after"][0]["ms"])
    p50 = {
        side: {
            label: float(np.median([v for run in runs for v in run["ms"].get(label, [])]))
            for label in labels
        }
        for side, runs in stages.items()
    }
    for label in labels:
        b, a = p50["before"][label], p50["after"][label]
        unit = " (ms wall)" if label.endswith(": wall") else ""
        stage_rows.append(f"| {label.strip()}{unit} | {b:.3f} | {a:.3f} | {a - b:+.3f} |")
    for side in sides:
        q = p50[side]
        stage_rows.append(
            f"| {side}: CPU beyond the embedding (caller's thread); lookup / bare embedding, "
            f"default deadline, CPU and wall | "
            f"{q[CALLER] - q[BARE]:.3f} | {q[DEADLINE] / q[BARE + ' ']:.2f}x CPU, "
            f"{q[DEADLINE + ': wall'] / q[BARE + ': wall']:.2f}x wall | |"
        )
    kinds = {s: [run["kinds"] for run in runs] for s, runs in stages.items()}
    stage_rows.append(f"| lookup outcomes per run | {kinds['before']} | {kinds['after']} | |")
    return cold_rows, stage_rows


def run_child(args: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS MiB and stdout of a fresh process, as ``/usr/bin/time`` sees it.

    (``wait4`` on a child forked from this big process would report this process's peak.)
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        t0 = time.perf_counter()
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", report.name, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - t0
        peak_kib = int(Path(report.name).read_text().split()[-1])
    return wall, peak_kib / 1024, done.stdout


def measure_cold(folder: Path, semantic: str, queries: list[str], repeat: int) -> list[str]:
    """Stage times and RSS of fresh processes, per backend, alternating; medians."""
    per: dict[str, list[dict[str, Any]]] = {b: [] for b in BACKENDS}
    for r in range(repeat):
        for b in BACKENDS if r % 2 == 0 else BACKENDS[::-1]:
            wall, peak, out = run_child(
                [sys.executable, "-c", _PROBE, str(folder), b, semantic, json.dumps(queries)]
            )
            data = json.loads(out.strip().splitlines()[-1])
            per[b].append({"wall": wall, "peak": peak, **data})
    rows = []
    for b in BACKENDS:
        runs = per[b]
        for stage in runs[0]["marks"]:
            secs = float(np.median([r["marks"][stage][0] for r in runs]))
            mib = float(np.median([r["marks"][stage][1] for r in runs]))
            rows.append(f"| {b} | {stage} | {secs:.2f} | {mib:,.0f} |")
        rows.append(
            f"| {b} | whole process (wall, peak RSS) | "
            f"{float(np.median([r['wall'] for r in runs])):.2f} | "
            f"{float(np.median([r['peak'] for r in runs])):,.0f} |"
        )
        rows.append(
            f"| {b} | first lookup: {runs[0]['hit']}; heavy modules loaded | "
            f"{', '.join(runs[0]['heavy']) or 'none'} | |"
        )
    return rows


def measure_cli(folder: Path, repeat: int) -> list[str]:
    """Wall time and peak RSS of CLI commands that need no model, and of `import modelcache`."""
    commands = {
        "python -c 'import modelcache'": [sys.executable, "-c", "import modelcache"],
        "modelcache --help": [sys.executable, "-m", "modelcache", "--help"],
        "modelcache stats": [sys.executable, "-m", "modelcache", "--path", str(folder), "stats"],
        "modelcache export": [
            sys.executable,
            "-m",
            "modelcache",
            "--path",
            str(folder),
            "export",
            "-o",
            os.devnull,
        ],
    }
    rows = []
    for label, args in commands.items():
        runs = [run_child(args) for _ in range(repeat)]
        wall = float(np.median([w for w, _, _ in runs]))
        peak = float(np.median([p for _, p, _ in runs]))
        rows.append(f"| {label} | {wall:.2f} | {peak:,.0f} |")
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure_serve(folder: Path, backend: str, queries: list[str]) -> str:
    """Peak RSS (VmHWM) of a `modelcache serve` process after answering HTTP lookups."""
    port = _free_port()
    env = {**os.environ, "MODELCACHE_EMBEDDER_BACKEND": backend}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelcache",
            "--path",
            str(folder),
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("modelcache serve did not start") from None
                time.sleep(0.3)
        hits = 0
        lat = []
        for q in queries:
            body = json.dumps(
                {
                    "type": "query",
                    "scope": {"model": "default"},
                    "query": [{"role": "user", "content": q}],
                }
            ).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/modelcache",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            t0 = time.perf_counter()
            answer = json.loads(urllib.request.urlopen(req, timeout=30).read())
            lat.append((time.perf_counter() - t0) * 1000)
            hits += bool(answer.get("cacheHit"))
        status = Path(f"/proc/{proc.pid}/status").read_text()
        fields = {
            line.split(":")[0]: int(line.split()[1]) / 1024
            for line in status.splitlines()
            if line.startswith(("VmHWM", "VmRSS"))
        }
        torch_loaded = "torch" in Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return (
        f"| {backend} | {len(queries)} | {hits} | {fmt(pct(lat, 50))} | "
        f"{fields['VmRSS']:,.0f} | {fields['VmHWM']:,.0f} | {'yes' if torch_loaded else 'no'} |"
    )


# ---- report --------------------------------------------------------------------------------------
def compare_report(
    args: argparse.Namespace,
    stored: list[str],
    queries: list[str],
    root: Path,
    load_start: tuple[float, float, float],
    started_at: dt.datetime,
) -> int:
    """The ``--compare`` run: fill one folder (ONNX), then cold start and stages, both sides."""
    from modelcache.embedding import build_embedder

    print("filling ...", file=sys.stderr)
    filled = root / "filled"
    fill(filled, stored, build_embedder("minilm", threads=1))
    probes = [q.lower().rstrip("?") + " ?" for q in stored[: args.queries]]
    print("cold start and stages, both sides ...", file=sys.stderr)
    cold_rows, stage_rows = measure_compare(filled, args.compare, probes, args.repeat)
    load_end = os.getloadavg()
    lines = [
        "## Cold start and lookup stages, before vs after",
        "",
        f"Run {started_at:%Y-%m-%d %H:%M} UTC, `python benchmarks/runtime.py --compare BEFORE "
        f"--entries {args.entries} --queries {args.queries} --repeat {args.repeat}` "
        f"({os.cpu_count()} CPUs; load average {load_start[0]:.2f}/{load_start[1]:.2f}/"
        f"{load_start[2]:.2f} at start, {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f} at "
        "end). Fresh processes alternate between the two checkouts; ONNX Runtime, one thread; "
        "probes are stored questions with case and punctuation changed.",
        "",
        "Cold start, seconds since the child's first line (wall / CPU of the process), medians; "
        "default config, and without a lookup deadline (the time to a first answer):",
        "",
        "| code | lookup_timeout | runs | import | Cache() | first lookup done | "
        "first lookup returned | timeouts |",
        "|---|---|---:|---:|---:|---:|---|---:|",
        *cold_rows,
        "",
        "Lookup stages, CPU ms per semantic hit unless marked wall (p50 over every run's "
        "lookups; the stages on the caller's thread, `lookup_timeout=None`, so that they add "
        "up; every other probe through the default deadline's worker thread instead, each "
        "followed by a bare embedding of the same text):",
        "",
        "| stage | before | after | change |",
        "|---|---:|---:|---:|",
        *stage_rows,
        "",
    ]
    write_report(lines, args.out)
    return 0


def versions() -> str:
    """Library versions, read without importing torch into this process twice."""
    from importlib.metadata import version

    names = ("torch", "onnxruntime", "sentence-transformers", "chromadb", "tokenizers")
    return ", ".join(f"{n} {version(n)}" for n in names)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement and print (and optionally save) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=2000, help="entries of the filled cache")
    parser.add_argument("--queries", type=int, default=200, help="single-query measurements")
    parser.add_argument("--batch", type=int, default=500, help="insert_many batch size")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per measurement")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--compare", type=Path, default=None, help="cold start and lookup stages vs this checkout"
    )
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "MODELCACHE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")))  # fmt: skip
    args = parser.parse_args(argv)

    load_start = os.getloadavg()
    started_at = dt.datetime.now(dt.timezone.utc)
    texts = load_questions(args.data, args.entries * 2 + args.queries * 2)
    stored, bulk = texts[: args.entries], texts[args.entries : 2 * args.entries]
    queries = texts[2 * args.entries : 2 * args.entries + args.queries]
    root = Path(tempfile.mkdtemp(prefix="modelcache-runtime-"))
    if args.compare is not None:
        try:
            return compare_report(args, stored, queries, root, load_start, started_at)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    try:
        print("loading both runtimes ...", file=sys.stderr)
        models = embedders()
        print("embedding ...", file=sys.stderr)
        emb_rows = measure_embedding(models, queries, bulk[:1000])
        print("bulk insert ...", file=sys.stderr)
        bulk_rows = measure_bulk(models, bulk, args.batch, root)
        print("lookup stages ...", file=sys.stderr)
        filled = root / "filled"
        fill(filled, stored, models["onnx"])
        # paraphrase-like probes: stored questions with their case changed (semantic, not exact)
        probes = [q.lower().rstrip("?") + " ?" for q in stored[: args.queries // 2]]
        stage_rows = measure_stages(filled, models["onnx"], probes + queries[: args.queries // 2])
        del models
        print("cold start, memory ...", file=sys.stderr)
        cold_rows = measure_cold(filled, probes[0], queries[:100], args.repeat)
        cli_rows = measure_cli(filled, args.repeat)
        serve_rows = [measure_serve(filled, b, probes[:50] + queries[:50]) for b in BACKENDS]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load_end = os.getloadavg()
    lines = [
        "# Embedding runtime, cold start, memory and bulk loads: torch vs ONNX Runtime",
        "",
        f"Run {started_at:%Y-%m-%d %H:%M} UTC, `python benchmarks/runtime.py --entries "
        f"{args.entries} --queries {args.queries} --repeat {args.repeat}`.",
        "",
        "## Method",
        "",
        f"- Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}; {versions()}.",
        f"- Load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/"
        f"{load_start[2]:.2f}, at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}: "
        "the machine is shared, so absolute numbers carry its noise; torch and ONNX alternate "
        "so both sides see the same noise.",
        "- Model: the shipped all-MiniLM-L6-v2, one thread. `torch` = sentence-transformers "
        '(`embedder_backend="torch"`, the former default); `onnx` = the same weights exported '
        "once and run by ONNX Runtime (the default). Distinct Quora questions (qqp_train + "
        "qqp_dev), answers are small JSON objects; embedded stores (Chroma + SQLite) in /tmp.",
        "- CPU columns: `time.process_time()` of the benchmark process (all its threads), what "
        "the work costs whatever else the machine runs; wall columns are what a caller waits.",
        "",
        "## Embedding (ms per single query; batch throughput)",
        "",
        "| runtime | n | p50 ms | p95 ms | p50 CPU ms | batch of 1,000: texts/s | "
        "texts per CPU-second |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *emb_rows,
        "",
        "## Bulk insert with real embedding (insert_many, fresh cache)",
        "",
        "| runtime | entries | batch | entries/s (median) | rounds | entries per CPU-second |",
        "|---|---:|---:|---:|---|---:|",
        *bulk_rows,
        "",
        f"## Lookup path at {args.entries:,} entries (ONNX), ms",
        "",
        "Half the probes are stored questions with case and punctuation changed (semantic "
        "hits), half unseen questions (misses). The Chroma rows time the vector query alone on "
        "the engine's reused collection handle.",
        "",
        "| stage | n | p50 | p95 | p50 CPU |",
        "|---|---:|---:|---:|---:|",
        *stage_rows,
        "",
        f"## Cold start and memory of a fresh process ({args.entries:,} entries, median of "
        f"{args.repeat})",
        "",
        "Seconds since the process started its script, RSS at that point; the whole-process "
        "row is the wall time and the peak RSS (`/usr/bin/time -f %M`).",
        "",
        "| runtime | stage | seconds | RSS MiB |",
        "|---|---|---:|---:|",
        *cold_rows,
        "",
        "## CLI commands that need no model",
        "",
        "| command | wall s (median) | peak RSS MiB |",
        "|---|---:|---:|",
        *cli_rows,
        "",
        "## A `modelcache serve` process answering HTTP lookups (/modelcache envelope)",
        "",
        "| runtime | lookups | hits | p50 ms (client) | RSS MiB | peak RSS MiB (VmHWM) | "
        "torch mapped |",
        "|---|---:|---:|---:|---:|---:|---|",
        *serve_rows,
        "",
    ]
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
