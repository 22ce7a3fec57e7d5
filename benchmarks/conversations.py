"""Conversation benchmark: follow-ups through the public adapters, with the real model.

Method: ``benchmarks/data/conversations_dev.jsonl`` holds hand-written conversation pairs
``a`` / ``b`` (3 to 45 messages; support, billing, retail, travel, coding) of six kinds:
negatives ``context_swap`` (the same follow-up after another topic), ``detail_swap`` (one
answer-determining detail differs in an earlier turn), ``intent_flip`` (the follow-up asks the
opposite); positives ``same_context_reworded`` (user turns and replies paraphrased),
``extra_chatter`` (the same context plus small talk), ``irrelevant_history`` (a standalone
question after unrelated turns). For each front end (a LangChain chat model with ``cache=``,
a LlamaIndex ``wrap_llm`` chat model) and configuration, one cache: every ``a`` is sent first
(a miss; the fake model answers ``answer-<id>`` and the adapter stores it), then every ``b``
(the engine's ``insert`` is disabled in this phase, so lookups never add entries). A hit
returning the pair's own answer on a positive is correct; any hit on a negative, or on another
pair's answer, is a false hit. Embeddings are memoised across configurations.

    python benchmarks/conversations.py                       # default configuration
    python benchmarks/conversations.py --grid                # + context / follow-up grid
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modelcache import Cache, CacheConfig
from modelcache.embedding import build_embedder
from modelcache.lab.evaluation import MemoEmbedder

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "conversations_dev.jsonl"
RESULTS = HERE / "results" / "conversations_raw.md"
NEGATIVE = ("context_swap", "detail_swap", "intent_flip")
POSITIVE = ("same_context_reworded", "extra_chatter", "irrelevant_history")
FRESH = "fresh answer"


def load(path: Path) -> list[dict[str, Any]]:
    """The labelled pairs."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class _Answers:
    """What the fake model says: the pair's answer while storing, a fresh one afterwards."""

    def __init__(self) -> None:
        self.current = FRESH


def _langchain(cache: Cache, answers: _Answers) -> Any:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    from modelcache_langchain import ModelCache

    class Model(GenericFakeChatModel):
        """Answers whatever the benchmark says it should."""

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
            from langchain_core.outputs import ChatGeneration, ChatResult

            return ChatResult(generations=[ChatGeneration(message=AIMessage(answers.current))])

    models: dict[str, Any] = {}
    kinds = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}

    def ask(messages: Sequence[dict[str, str]], tenant: str) -> str:
        if tenant not in models:
            models[tenant] = Model(messages=iter(()), cache=ModelCache(cache, tenant=tenant))
        converted = [kinds[m["role"]](m["content"]) for m in messages]
        return str(models[tenant].invoke(converted).content)

    return ask


def _llamaindex(cache: Cache, answers: _Answers) -> Any:
    from llama_index.core.base.llms.types import (
        ChatMessage,
        CompletionResponse,
        CompletionResponseGen,
        LLMMetadata,
    )
    from llama_index.core.llms.callbacks import llm_completion_callback
    from llama_index.core.llms.custom import CustomLLM

    from modelcache_llamaindex import wrap_llm

    class Model(CustomLLM):
        """A chat model answering whatever the benchmark says it should."""

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="bench-chat", is_chat_model=True)

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
            return CompletionResponse(text=answers.current)

        @llm_completion_callback()
        def stream_complete(
            self, prompt: str, formatted: bool = False, **kw: Any
        ) -> CompletionResponseGen:
            yield CompletionResponse(text=answers.current, delta=answers.current)

    llms: dict[str, Any] = {}

    def ask(messages: Sequence[dict[str, str]], tenant: str) -> str:
        if tenant not in llms:
            llms[tenant] = wrap_llm(Model(), cache, tenant=tenant)
        converted = [ChatMessage(role=m["role"], content=m["content"]) for m in messages]
        return str(llms[tenant].chat(converted).message.content)

    return ask


FRONT_ENDS = {"langchain": _langchain, "llamaindex": _llamaindex}


def run(
    front_end: str,
    pairs: Sequence[dict[str, Any]],
    config: CacheConfig,
    embedder: Any,
    shared: bool = False,
) -> dict[str, Counter[str]]:
    """Counts per kind: lookups, hits, correct, false (hits on a negative or a wrong answer).

    Each pair has its own partition (a tenant), unless ``shared``: then every ``a`` shares one
    and a hit is also correct when the entry served was stored for a conversation identical to
    ``b`` (the pairs reuse some conversations).
    """
    counts: dict[str, Counter[str]] = {}
    answers = _Answers()
    with Cache(config, embedder=embedder) as cache:
        ask = FRONT_ENDS[front_end](cache, answers)
        stored = {f"answer-{p['id']}": p["a"] for p in pairs}
        lookup = cache.lookup
        cache.lookup = lambda *a, **k: None  # type: ignore[method-assign]  # store every a

        def tenant(p: dict[str, Any]) -> str:
            return "shared" if shared else p["id"]

        for p in pairs:
            answers.current = f"answer-{p['id']}"
            ask(p["a"], tenant(p))
        cache.lookup = lookup  # type: ignore[method-assign]
        answers.current = FRESH
        cache.insert = lambda *a, **k: ""  # type: ignore[method-assign]  # lookups only
        for p in pairs:
            got = ask(p["b"], tenant(p))
            c = counts.setdefault(p["kind"], Counter())
            c["lookups"] += 1
            if got == FRESH:
                continue
            c["hits"] += 1
            if stored.get(got) == p["b"]:
                c["served_identical"] += 1
            # pairs may share an identical ``a``: any answer stored for that conversation counts
            if (p["same_answer"] and stored.get(got) == p["a"]) or stored.get(got) == p["b"]:
                c["correct"] += 1
            else:
                c["false"] += 1
                c[f"false:{p['id']}"] += 1
        # a lookup cut at its store deadline is a miss: on a loaded machine, count them apart
        counts["lookup deadline"] = Counter(timeouts=cache.stats()["timeouts"])
    return counts


def table(rows: list[tuple[str, str, dict[str, Counter[str]]]]) -> str:
    """Markdown: one line per front end and configuration."""
    head = (
        "| front end | configuration | "
        + " | ".join(f"{k} false hits" for k in NEGATIVE)
        + " | negatives false-hit rate | "
        + " | ".join(f"{k} recall" for k in POSITIVE)
        + " | positives recall | wrong answers on positives |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for fe, label, counts in rows:
        neg = [counts.get(k, Counter()) for k in NEGATIVE]
        pos = [counts.get(k, Counter()) for k in POSITIVE]
        n_neg, n_pos = sum(c["lookups"] for c in neg), sum(c["lookups"] for c in pos)
        false_neg = sum(c["false"] for c in neg)
        correct = sum(c["correct"] for c in pos)
        cells = [f"{c['false']} / {c['lookups']}" for c in neg]
        cells.append(f"{false_neg / max(1, n_neg):.3f}")
        cells += [f"{c['correct'] / max(1, c['lookups']):.3f}" for c in pos]
        cells.append(f"{correct / max(1, n_pos):.3f}")
        cells.append(str(sum(c["false"] for c in pos)))
        lines.append(f"| {fe} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--grid", action="store_true", help="also sweep context / follow-up")
    parser.add_argument("--front-ends", default="langchain,llamaindex")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    pairs = load(Path(args.data))
    embedder = MemoEmbedder(build_embedder("minilm", threads=1))
    settings: list[tuple[str, dict[str, Any]]] = [("defaults", {})]
    if args.grid:
        settings += [
            (f"context>={c:.2f}, follow-up>={f:.2f}", {"context_threshold": c, **fu})
            for c in (0.60, 0.70, 0.80, 0.85)
            for f, fu in ((0.45, {}), (0.55, {"similarity_threshold_followup": 0.55}))
        ]
    rows = []
    failures: list[str] = []
    timeouts: list[str] = []
    started = time.perf_counter()
    runs = [
        (fe, label, values, False)
        for fe in args.front_ends.split(",")
        for label, values in settings
    ]
    runs += [(fe, "defaults, one shared partition", {}, True) for fe in args.front_ends.split(",")]
    for fe, label, values, shared in runs:
        with tempfile.TemporaryDirectory(prefix="mc-conv-") as tmp:
            config = CacheConfig(path=tmp, query_log=False, **values)
            counts = run(fe, pairs, config, embedder, shared)
        rows.append((fe, label, counts))
        if label.startswith("defaults"):
            where = "shared" if shared else "per pair"
            failures += sorted(
                f"{fe} ({where}): {k[6:]}"
                for c in counts.values()
                for k in c
                if k.startswith("false:")
            )
            timeouts.append(f"{fe} ({where}): {counts['lookup deadline']['timeouts']}")
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    kinds = Counter(p["kind"] for p in pairs)
    sizes = sorted(len(p[s]) for p in pairs for s in ("a", "b"))
    text = "\n".join(
        [
            "# Conversation benchmark (raw tables)",
            "",
            f"- date: {time.strftime('%Y-%m-%d %H:%M')}; command: `python "
            f"benchmarks/conversations.py {' '.join(sys.argv[1:])}`",
            f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores; embedder MiniLM "
            "(shipped), guard on; run time "
            f"{time.perf_counter() - started:.0f} s",
            f"- data: {len(pairs)} pairs ({', '.join(f'{k} {n}' for k, n in kinds.items())}); "
            f"messages per conversation {sizes[0]}-{sizes[-1]} (median {sizes[len(sizes) // 2]})",
            "",
            table(rows),
            "",
            "False hits at the defaults (front end: pair id): "
            + (", ".join(failures) if failures else "none"),
            "",
            "Lookups cut at the store deadline (misses; a loaded machine): " + ", ".join(timeouts),
            "",
        ]
    )
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
