"""Bulk loads with real embedding: ``Cache.insert_many`` and ``modelcache import``, before/after.

Method (printed with the results): distinct Quora questions from ``../shared/data/qqp_train.jsonl``
(read by path, never copied), the shipped all-MiniLM-L6-v2 under ONNX Runtime, a fresh cache
folder per run (SQLite + embedded Chroma). "before" is the engine at ``--before`` (a git ref,
extracted with ``git archive``), "after" the working tree; each run is a fresh process and the
systems alternate, round by round, in the same run.

* ``insert_many``: one call with ``--entries`` entries after a warm-up (the model loaded and
  Chroma opened by one insert); wall (``perf_counter``) and CPU (``process_time``, all threads).
* ``modelcache import``: the CLI on a JSONL file of the same entries, timed from outside
  (process start, model load and all); CPU from the child's rusage. Then the same import again
  (after only): every row is skipped as already stored.
* stages (after only, in-process, one thread per stage, the same entries): where the CPU of a
  bulk load goes.

Usage: ``python benchmarks/bulk.py [--entries 2000] [--rounds 2] [--before b8c3e0b]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import DATA, write_report

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BEFORE = "b8c3e0b"  # the engine before batched, pipelined bulk loads


def questions(count: int, skip: int = 0) -> list[str]:
    """Distinct Quora questions, in file order."""
    seen: dict[str, None] = {}
    with (DATA / "qqp_train.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            for text in (row["a"], row["b"]):
                seen.setdefault(text.strip(), None)
            if len(seen) >= skip + count:
                break
    return [t for t in list(seen)[skip : skip + count] if t]


# ---- children (run in a fresh process with the tree under test on PYTHONPATH) ----------------
def child_api(entries: int, backend: str) -> dict[str, float]:
    from modelcache import Cache, CacheConfig, Request

    texts = questions(entries + 1)
    with tempfile.TemporaryDirectory() as tmp:
        config = CacheConfig(path=tmp, embedder_backend=backend)  # type: ignore[arg-type]
        with Cache(config) as cache:
            cache.insert(Request.from_text(texts[0]), "warm-up")  # model and Chroma loaded
            items = [(Request.from_text(t), {"answer": t}) for t in texts[1:]]
            t0, c0 = time.perf_counter(), time.process_time()
            cache.insert_many(items)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            stored = cache.stats()["entries"]
    return {"wall": wall, "cpu": cpu, "entries": stored - 1}


def child_stages(entries: int) -> dict[str, float]:
    import numpy as np

    from modelcache import Cache, CacheConfig, Request
    from modelcache.embedding import OnnxSentenceEmbedder

    texts = questions(entries + 1)
    out: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        c0 = time.process_time()
        value = fn()
        out[name] = time.process_time() - c0
        return value

    emb = OnnxSentenceEmbedder(workers=1)
    emb.embed(["warm-up"])
    runtime = emb._runtime
    assert runtime is not None
    requests = timed("requests (Request.from_text)", lambda: [
        (Request.from_text(t), {"answer": t}) for t in texts[1:]
    ])  # fmt: skip
    timed("exact keys (hashing)", lambda: [r.exact_key for r, _ in requests])
    timed("window checks (token counts)", lambda: [emb._windows(t) for t in texts[1:]])
    encodings = timed("tokenising", lambda: runtime.encodings(texts[1:]))
    order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
    batches = [order[s : s + emb.batch_size] for s in range(0, len(order), emb.batch_size)]
    timed("ONNX run, sorted batches of 16", lambda: [
        runtime.run([encodings[i] for i in b]) for b in batches
    ])  # fmt: skip
    unsorted = [list(range(s, min(s + 32, len(encodings)))) for s in range(0, len(encodings), 32)]
    timed("(ONNX run, unsorted batches of 32)", lambda: [
        runtime.run([encodings[i] for i in b]) for b in unsorted
    ])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, Cache(CacheConfig(path=tmp), embedder=emb) as cache:
        cache.insert(Request.from_text(texts[0]), "warm-up")
        now = time.time()
        unique = [(r, json.dumps(a)) for r, a in requests]
        rows, vectors, partitions, *_ = timed(
            "insert_many: embedding and row building",
            lambda: cache._prepare_rows(unique, now, None, "{}"),
        )
        ids = [row.id for row in rows]
        pid = rows[0].partition_id
        timed("Chroma upsert", lambda: cache._vectors.upsert(pid, ids, np.asarray(vectors)))
        timed("SQL upsert (one transaction, executemany)", lambda: cache._sql.upsert(
            rows, partitions, now
        ))  # fmt: skip
        timed("eviction check", lambda: cache._maintenance.evict([pid], ids))
    return out


def child(argv: list[str]) -> int:
    mode, entries = argv[0], int(argv[1])
    result = child_api(entries, argv[2]) if mode == "api" else child_stages(entries)
    print(json.dumps(result))
    return 0


# ---- parent ----------------------------------------------------------------------------------
def extract(ref: str, into: Path) -> Path:
    """A PYTHONPATH folder holding ``modelcache`` as it was at ``ref``."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "core"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    pp = into / "pp"
    pp.mkdir()
    (pp / "modelcache").symlink_to(into / "core")
    return pp


def env_for(pp: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(pp), str(ROOT)])
    return env


def run_child(pp: Path, *args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        env=env_for(pp),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_import(pp: Path, file: Path, folder: Path) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "modelcache", "--path", str(folder), "import", str(file), "--json"],
        env=env_for(pp),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = json.loads(done.stdout)
    return {"wall": wall, "cpu": cpu, **result}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git ref of the 'before' engine")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bulk.md"))
    args = parser.parse_args(argv)
    n = args.entries
    tmp = Path(tempfile.mkdtemp(prefix="mc-bulk-"))
    try:
        trees = {"before": extract(args.before, tmp / "before"), "after": ROOT / ".pp"}
        if not (trees["after"] / "modelcache").exists():  # a plain checkout: build the link
            trees["after"] = tmp / "after-pp"
            trees["after"].mkdir()
            (trees["after"] / "modelcache").symlink_to(ROOT / "core")
        jsonl = tmp / "qa.jsonl"
        jsonl.write_text(
            "".join(json.dumps({"question": t, "answer": t}) + "\n" for t in questions(n)),
            encoding="utf-8",
        )
        api: dict[str, list[dict[str, float]]] = {}
        cli: dict[str, list[dict[str, Any]]] = {}
        again: list[dict[str, Any]] = []
        systems = [("before", "onnx"), ("after", "onnx"), ("after", "onnx-int8")]
        for r in range(args.rounds):
            for tree, backend in systems if r % 2 == 0 else systems[::-1]:
                label = f"{tree} ({backend})"
                print(f"round {r + 1}: insert_many {label}", file=sys.stderr)
                api.setdefault(label, []).append(run_child(trees[tree], "api", str(n), backend))
                print(f"  {api[label][-1]}", file=sys.stderr)
            for tree in ("before", "after") if r % 2 == 0 else ("after", "before"):
                print(f"round {r + 1}: import {tree}", file=sys.stderr)
                folder = tmp / f"import-{tree}-{r}"
                cli.setdefault(tree, []).append(run_import(trees[tree], jsonl, folder))
                if tree == "after":
                    again.append(run_import(trees[tree], jsonl, folder))
                shutil.rmtree(folder, ignore_errors=True)
        print("stages", file=sys.stderr)
        stages = run_child(trees["after"], "stages", str(n))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    def rates(runs: list[dict[str, Any]], count: int) -> tuple[float, float, str]:
        walls = [count / run["wall"] for run in runs]
        return (
            statistics.median(walls),
            count / med(runs, "cpu"),
            ", ".join(f"{w:.0f}" for w in walls),
        )

    lines = [
        "# Bulk loads with real embedding: insert_many and `modelcache import`",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores shared with other work (load average at the end: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}), Python {platform.python_version()}. "
        f"{n:,} distinct Quora questions, {args.rounds} rounds, systems alternating; before = "
        f"`{args.before}`. Method: see the docstring of `benchmarks/bulk.py`. Wall rates on a "
        "loaded machine mostly measure the other work: compare entries per CPU-second.",
        "",
        "## insert_many (one call, warm model and Chroma)",
        "",
        "| system | entries/s wall (median) | rounds | entries per CPU-second |",
        "|---|---:|---|---:|",
    ]
    base_cpu = None
    for label, runs in api.items():
        wall, per_cpu, each = rates(runs, n)
        base_cpu = per_cpu if label.startswith("before") else base_cpu
        lines.append(f"| {label} | {wall:.0f} | {each} | {per_cpu:.0f} |")
    lines += [
        "",
        "## `modelcache import` (a fresh process: start-up and model load included)",
        "",
        "| system | entries/s wall (median) | rounds | entries per CPU-second | imported "
        "| skipped |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for label, runs in cli.items():
        wall, per_cpu, each = rates(runs, n)
        lines.append(
            f"| {label} | {wall:.0f} | {each} | {per_cpu:.0f} | {runs[0]['imported']:,} | "
            f"{runs[0].get('skipped', 0):,} |"
        )
    wall, per_cpu, each = rates(again, n)
    lines.append(
        f"| after, the same file again (resume) | {wall:.0f} | {each} | {per_cpu:.0f} | "
        f"{again[0]['imported']:,} | {again[0]['skipped']:,} |"
    )
    lines += [
        "",
        f"## Where the CPU goes (after, {n:,} entries, one thread, in-process)",
        "",
        "| stage | CPU s | ms per entry |",
        "|---|---:|---:|",
        *(f"| {k} | {v:.2f} | {v * 1000 / n:.2f} |" for k, v in stages.items()),
        "",
        "Tokenising and the ONNX run are measured alone, then again inside insert_many's "
        "embedding and row building; the row in brackets is the unsorted layout, for scale.",
        "",
    ]
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
