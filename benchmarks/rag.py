"""RAG benchmark: long prompts (retrieved context + question) through both public adapters.

Method: ``benchmarks/data/rag_pairs.jsonl`` (hand-written, see ``make_rag_pairs.py``). For each
pair, in a tenant of its own on one cache with the shipped MiniLM model and the default
configuration: prompt ``a`` goes through the adapter (a miss: the fake model answers and the
adapter stores it), then prompt ``b``; ``b`` is a hit when the fake model is not called again.
LangChain: ``ChatPromptTemplate`` (system + a human turn with ``{context}`` and ``{question}``)
piped into a fake chat model with ``cache=ModelCache(...)``. LlamaIndex: a
``RetrieverQueryEngine`` whose retriever returns the pair's chunks, answering through
``wrap_llm(fake LLM, cache)`` with the default text-QA template. A hit on a pair labelled
``same_answer: false`` is a false hit.

Latency: semantic-hit lookups through ``Cache.lookup`` of a short question vs a ~2,000-token
prompt (the question reworded, same context), p50/p90 over repeated lookups. "context seen":
the embedder's chunk memo holds the stored prompt's chunks (as after inserting it in this
process: what inserting it leaves memoised) but none of the asked prompt's own; "cold": the
process's memos are emptied before each lookup, as in another worker process or after a
restart (the chunk vectors the insert kept in the SQL store are read back).

No regression elsewhere: the check only runs where a text has ``long_query_tokens`` tokens or
more, so the script replays the ``qqp_dev`` pairs with such a side (``MODELCACHE_DATA``, default
``../shared/data``), each pair alone in a partition, with the check off and on.

    python benchmarks/rag.py                # full run, writes benchmarks/results/rag.md
    python benchmarks/rag.py --limit 10     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from modelcache import Cache, CacheConfig, Request

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "rag_pairs.jsonl"
RESULTS = HERE / "results" / "rag.md"
SYSTEM = "You are a helpful assistant. Answer from the context only."
HUMAN = (
    "Answer the question using only the context below.\n\nContext:\n{context}\n\n"
    "Question: {question}\nAnswer:"
)


def load(limit: int | None) -> list[dict[str, Any]]:
    """The labelled pairs, optionally the first ``limit`` of each kind."""
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line]
    if limit is None:
        return rows
    seen: Counter[str] = Counter()
    out = []
    for row in rows:
        if seen[row["kind"]] < limit:
            seen[row["kind"]] += 1
            out.append(row)
    return out


def run_langchain(engine: Cache, rows: list[dict[str, Any]]) -> list[bool]:
    """Whether ``b`` hit, per pair, through the LangChain adapter."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate

    from modelcache_langchain import ModelCache

    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", HUMAN)])
    hits = []
    for row in rows:
        cache = ModelCache(engine, tenant=f"lc-{uuid.uuid4().hex[:10]}")
        model = FakeListChatModel(responses=["answer a", "answer b"], cache=cache)
        chain = prompt | model
        for side in ("a", "b"):
            part = row[side]
            chain.invoke({"context": "\n\n".join(part["context"]), "question": part["question"]})
        hits.append(model.i == 1)  # the model answered only ``a``: ``b`` came from the cache
    return hits


def run_llamaindex(engine: Cache, rows: list[dict[str, Any]]) -> list[bool]:
    """Whether ``b`` hit, per pair, through a LlamaIndex query engine over a wrapped LLM."""
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.bridge.pydantic import Field
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from modelcache_llamaindex import wrap_llm

    class Fixed(BaseRetriever):
        """Returns the given chunks, as a vector retriever would for this question."""

        def __init__(self, chunks: list[str]) -> None:
            super().__init__()
            self._nodes = [NodeWithScore(node=TextNode(text=c), score=1.0) for c in chunks]

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            return self._nodes

    class Counting(MockLLM):
        """MockLLM that counts the calls reaching it."""

        calls: int = Field(default=0, exclude=True)  # not a setting: outside the partition

        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            self.calls += 1
            return super().complete(prompt, formatted=formatted, **kwargs)

    hits = []
    for row in rows:
        inner = Counting(max_tokens=8)
        inner.calls = 0
        llm = wrap_llm(inner, engine, tenant=f"li-{uuid.uuid4().hex[:10]}")
        for side in ("a", "b"):
            part = row[side]
            qe = RetrieverQueryEngine.from_args(Fixed(part["context"]), llm=llm)
            qe.query(part["question"])
        hits.append(inner.calls == 1)
    return hits


def table(rows: list[dict[str, Any]], results: dict[str, list[bool]]) -> str:
    """Hits per kind and adapter, false hits and recall."""
    kinds = sorted({r["kind"] for r in rows})
    lines = [
        "| adapter | kind | pairs | label | hits | rate |",
        "|---|---|---:|---|---:|---:|",
    ]
    for adapter, hits in results.items():
        for kind in kinds:
            idx = [i for i, r in enumerate(rows) if r["kind"] == kind]
            label = "hit" if rows[idx[0]]["same_answer"] else "miss"
            n = sum(hits[i] for i in idx)
            lines.append(
                f"| {adapter} | {kind} | {len(idx)} | {label} | {n} | {n / len(idx):.2f} |"
            )
        pos = [i for i, r in enumerate(rows) if r["same_answer"]]
        neg = [i for i, r in enumerate(rows) if not r["same_answer"]]
        false_hits = sum(hits[i] for i in neg)
        recall = sum(hits[i] for i in pos) / len(pos)
        lines.append(
            f"| {adapter} | **all** | {len(rows)} | | false hits {false_hits}/{len(neg)} "
            f"| recall {recall:.2f} |"
        )
    return "\n".join(lines)


def latency(engine: Cache, rows: list[dict[str, Any]], repeats: int) -> str:
    """p50/p90 of semantic-hit lookups: short question vs ~2,000-token prompt, alternating
    (one lookup of each kind in turn, so a busy machine slows them alike)."""
    from modelcache import longtext
    from modelcache.embedding import base as embedding_base

    same = [r for r in rows if r["kind"] == "same_q_same_ctx"]

    def prompt(part: dict[str, Any]) -> str:
        return HUMAN.format(context="\n\n".join(part["context"]), question=part["question"])

    short = [(r["a"]["question"], r["b"]["question"]) for r in same]
    long = [(prompt(r["a"]), prompt(r["b"])) for r in same if len(r["a"]["context"]) > 8]
    cases = {
        "short question": short,
        "~2,000-token prompt, context seen": long,
        "~2,000-token prompt, cold": long,
    }
    embedder = engine.embedder
    clear = getattr(embedder, "clear_memo", lambda: None)
    check = engine._acceptor._longtext  # private: only to measure a first lookup

    def forget() -> None:
        clear()  # no chunk or sentence of the asked prompt is memoised ...
        with check._lock:
            check._memo.clear()  # ... nor any compared part or diff ...
            getattr(check, "_reads", {}).clear()
        # ... nor any split prompt or sentence (older commits keep fewer of these memos: the
        # script also measures them)
        for module, name in (
            (longtext, "_parse"),
            (longtext, "_sentence_facts"),
            (embedding_base, "_sentence_spans"),
        ):
            memo = getattr(module, name, None)
            if memo is not None and hasattr(memo, "cache_clear"):
                memo.cache_clear()

    tenants = {label: f"lat-{uuid.uuid4().hex[:8]}" for label in cases}
    for label, pairs in cases.items():
        for stored, _ in pairs:
            engine.insert(Request.from_text(stored, tenant=tenants[label], system=SYSTEM), "x")
    times: dict[str, list[float]] = {label: [] for label in cases}
    cpu: dict[str, list[float]] = {label: [] for label in cases}
    hits: Counter[str] = Counter()
    for _ in range(repeats):
        for i in range(max(len(p) for p in cases.values())):
            for label, pairs in cases.items():
                if i >= len(pairs):
                    continue
                stored, asked = pairs[i]
                request = Request.from_text(asked, tenant=tenants[label], system=SYSTEM)
                forget()
                if label.endswith("context seen"):
                    # ... but the stored prompt's are, as inserting it leaves them (untimed;
                    # older commits' inserts only embed it)
                    text = Request.from_text(stored, system=SYSTEM).query_text
                    getattr(engine._acceptor, "embed_stored", embedder.embed)([text])
                started, cpu_started = time.perf_counter(), time.process_time()
                hit = engine.lookup(request)
                times[label].append((time.perf_counter() - started) * 1000)
                cpu[label].append((time.process_time() - cpu_started) * 1000)
                hits[label] += hit is not None and hit.kind == "semantic"
    out = [
        "| lookup | tokens (median) | lookups | semantic hits | p50 ms | p90 ms | CPU p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    p50 = {label: statistics.median(t) for label, t in times.items()}
    cpu50 = {label: statistics.median(c) for label, c in cpu.items()}
    for label, pairs in cases.items():
        tokens = statistics.median(embedder.count_tokens(a) for _, a in pairs)
        p90 = sorted(times[label])[int(0.9 * (len(times[label]) - 1))]
        out.append(
            f"| {label} | {tokens:.0f} | {len(times[label])} | {hits[label]} "
            f"| {p50[label]:.1f} | {p90:.1f} | {cpu50[label]:.1f} |"
        )
    out.append("")
    for name, values in (("p50", p50), ("CPU p50", cpu50)):
        base = values["short question"]
        out.append(
            f"{name} relative to the short question: "
            + ", ".join(f"{k} {v / base:.2f}x" for k, v in values.items() if k != "short question")
            + "  "
        )
    return "\n".join(out)


def qqp_long(engine: Cache) -> str:
    """qqp_dev pairs with a side of at least ``long_query_tokens`` tokens, alone in a partition:
    the only ones the long-text check can change; decisions with and without it."""
    from modelcache.acceptance import Acceptor

    shared = os.environ.get("MODELCACHE_DATA", HERE.parents[1] / "shared" / "data")
    path = Path(shared) / "qqp_dev.jsonl"
    if not path.exists():
        return f"(skipped: {path} not found)"
    long_tokens = engine.config.long_query_tokens
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    rows = [
        r
        for r in rows
        if max(engine.embedder.count_tokens(r["a"]), engine.embedder.count_tokens(r["b"]))
        >= long_tokens
    ]
    original = Acceptor._long_parts_differ
    out = [
        "| long-text check | pairs | same-answer served | different-answer served |",
        "|---|---:|---:|---:|",
    ]
    for label in ("off", "on"):
        if label == "off":
            Acceptor._long_parts_differ = lambda self, query, row: False  # type: ignore[method-assign]
        tenant = f"qqp-{uuid.uuid4().hex[:8]}"
        good = bad = 0
        for index, row in enumerate(rows):
            params = {"pair": index}
            engine.insert(Request.from_text(row["a"], tenant=tenant, params=params), "a")
            hit = engine.lookup(Request.from_text(row["b"], tenant=tenant, params=params))
            good += hit is not None and row["same_answer"]
            bad += hit is not None and not row["same_answer"]
        Acceptor._long_parts_differ = original  # type: ignore[method-assign]
        positives = sum(r["same_answer"] for r in rows)
        out.append(
            f"| {label} | {len(rows)} | {good}/{positives} | {bad}/{len(rows) - positives} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="pairs per kind (quick look)")
    parser.add_argument("--repeats", type=int, default=3, help="latency rounds over the pairs")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--accuracy-only", action="store_true", help="skip latency and qqp")
    parser.add_argument("--latency-only", action="store_true", help="skip the adapter pass")
    parser.add_argument(
        "--before", action="store_true", help="without the long-text check (the old behaviour)"
    )
    args = parser.parse_args()
    if args.before:
        from modelcache.acceptance import Acceptor

        Acceptor._long_parts_differ = lambda self, query, row: False  # type: ignore[method-assign]
    rows = load(args.limit)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Cache(CacheConfig(path=tmp, embedder="minilm")) as engine,
    ):
        started = time.perf_counter()
        adapters = {"LangChain": run_langchain, "LlamaIndex": run_llamaindex}
        results = {
            name: [False] * len(rows) if args.latency_only else run(engine, rows)
            for name, run in adapters.items()
        }
        elapsed = time.perf_counter() - started
        tokens = [engine.embedder.count_tokens("\n\n".join(r["a"]["context"])) for r in rows]
        accuracy = table(rows, results)
        print(accuracy, flush=True)
        skipped = "(skipped)"
        lat = skipped if args.accuracy_only else latency(engine, rows, args.repeats)
        qqp = skipped if args.accuracy_only else qqp_long(engine)
    header = (
        f"# RAG prompts through the adapters\n\n{len(rows)} pairs "
        f"(context {min(tokens)}-{max(tokens)} MiniLM tokens), default configuration, "
        f"shipped MiniLM; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; accuracy pass {elapsed:.0f} s.\n"
    )
    report = (
        f"{header}\n## Accuracy\n\n{accuracy}\n\n## Semantic lookup latency\n\n{lat}\n\n"
        f"## Long qqp_dev pairs (one pair per partition, so only the check differs)\n\n{qqp}\n"
    )
    print(report)
    wrong = [
        (adapter, rows[i]["id"], rows[i]["kind"])
        for adapter, hits in results.items()
        for i, hit in enumerate(hits)
        if hit != rows[i]["same_answer"]
    ]
    if wrong and not args.latency_only:
        print("wrong decisions:", *wrong, sep="\n  ")
    partial = args.before or args.accuracy_only or args.latency_only
    if not (args.no_write or partial) and args.limit is None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
