"""The ``demo`` command: a scripted LangChain chat app over the cache.

LangChain and the ``modelcache_langchain`` adapter are imported only when the demo runs, so
the core package never depends on its own adapter.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..engine import Cache
from ..request import Request
from ._common import UserError, err, friendly, get_state, out, print_json

_HELPFUL = "You are a helpful assistant."
_PIRATE = "You are a pirate. Answer every question like a pirate."


@dataclass(frozen=True)
class _Step:
    system: str
    question: str
    expect: str  # "miss" | "exact" | "semantic"
    note: str


_SCRIPT: tuple[_Step, ...] = (
    _Step(_HELPFUL, "How do I reset my password?", "miss", "first time: the LLM answers"),
    _Step(_HELPFUL, "How do I reset my password?", "exact", "exact repeat"),
    _Step(_HELPFUL, "how do i reset my password", "semantic", "case and punctuation differ"),
    _Step(_HELPFUL, "How can I reset my password?", "semantic", "paraphrase"),
    _Step(_HELPFUL, "What is the capital of France?", "miss", "new question"),
    _Step(_HELPFUL, "What's the capital city of France?", "semantic", "paraphrase"),
    _Step(_HELPFUL, "What is the capital of Germany?", "miss", "trap: one word differs"),
    _Step(_PIRATE, "What is the capital of France?", "miss", "trap: different system prompt"),
    _Step(_HELPFUL, "How do I enable two-factor authentication?", "miss", "new question"),
    _Step(_HELPFUL, "How do I disable two-factor authentication?", "miss", "trap: enable/disable"),
    _Step(
        _HELPFUL,
        "Write a Python function that finds all numbers divisible by 13 and 23.",
        "miss",
        "new question",
    ),
    _Step(
        _HELPFUL,
        "Write a Java function that finds all numbers divisible by 13 and 23.",
        "miss",
        "trap: programming language",
    ),
    _Step(
        _HELPFUL,
        "Write a Python function that finds all numbers divisible by 13 and 29.",
        "miss",
        "trap: number",
    ),
    _Step(
        _HELPFUL,
        "Write a Python function to find every number divisible by 13 and 23.",
        "semantic",
        "paraphrase",
    ),
    _Step(
        _HELPFUL,
        "How can I reset my password?",
        "semantic",
        "paraphrase again (hits aren't stored)",
    ),
)


def _slow_fake_model(delay: float) -> Any:
    """A langchain-core fake chat model that answers after ``delay`` seconds."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    class SlowFakeChatModel(FakeListChatModel):
        """Answers every question with a canned text, slowly, like a remote LLM."""

        def _call(self, messages: list[Any], *args: Any, **kwargs: Any) -> str:
            if self.sleep:
                time.sleep(self.sleep)
            question = str(messages[-1].content) if messages else ""
            system = next((str(m.content) for m in messages if m.type == "system"), "")
            voice = "Arr, matey! " if "pirate" in system.lower() else ""
            return (
                f"{voice}Here is a detailed answer to {question!r}: step one, step two, and a "
                "short explanation of why it works, with an example you can copy."
            )

    return SlowFakeChatModel(responses=["unused"], sleep=delay)


def _demo_llm(kind: str, delay: float) -> tuple[Any, str]:
    """The chat model of the demo: a slow fake, or an OpenAI-compatible provider."""
    wants_openai = kind == "openai" or (kind == "auto" and os.environ.get("OPENAI_API_KEY"))
    if wants_openai:
        try:
            from langchain_openai import ChatOpenAI  # type: ignore[import-not-found]
        except ImportError:
            message = (
                "langchain-openai is not installed, so the real provider cannot be used: "
                "`pip install langchain-openai`, or run with --llm fake"
            )
            if kind == "openai":
                raise UserError(message) from None
            err.print(f"[yellow]Note:[/] {message}; using the simulated LLM instead.")
        else:
            if not os.environ.get("OPENAI_API_KEY"):
                raise UserError(
                    "--llm openai needs OPENAI_API_KEY (and OPENAI_BASE_URL if not OpenAI)"
                )
            name = os.environ.get("MODELCACHE_DEMO_MODEL", "gpt-4o-mini")
            llm = ChatOpenAI(model=name, temperature=0, base_url=os.environ.get("OPENAI_BASE_URL"))
            return llm, f"{name} via {os.environ.get('OPENAI_BASE_URL', 'api.openai.com')}"
    return _slow_fake_model(delay), f"simulated slow LLM ({delay:g} s per call)"


class _HitRecorder:
    """Wraps the engine so the demo can show each lookup's hit kind and similarity."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self.last: Any = None

    def lookup(self, request: Request, **options: Any) -> Any:
        self.last = self._cache.lookup(request, **options)
        return self.last

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cache, name)


@friendly
def demo(
    ctx: typer.Context,
    llm: Annotated[
        str,
        typer.Option(
            help="auto (OpenAI-compatible if OPENAI_API_KEY is set, else simulated), fake, openai."
        ),
    ] = "auto",
    delay: Annotated[float, typer.Option(min=0.0, help="Seconds per simulated LLM call.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A LangChain chat app with ModelCache: paraphrases hit, look-alike traps miss.

    Uses the embedded default (Chroma folder + SQLite + the shipped MiniLM model) in a fresh
    temporary folder unless --path is given.
    """
    if llm not in ("auto", "fake", "openai"):
        raise UserError(f"--llm must be auto, fake or openai, not {llm!r}")
    try:
        from langchain_core.globals import get_llm_cache, set_llm_cache
        from langchain_core.messages import HumanMessage, SystemMessage

        from modelcache_langchain import ModelCache
    except ImportError as exc:
        raise UserError(f"the demo needs langchain-core and modelcache_langchain: {exc}") from exc
    state = get_state(ctx)
    chat, llm_name = _demo_llm(llm, delay)
    scratch = None if state.path else tempfile.mkdtemp(prefix="modelcache-demo-")
    results: list[dict[str, Any]] = []
    previous = get_llm_cache()
    warnings.filterwarnings("ignore", message=".*`load` is in beta.*")
    try:
        with state.open_cache(create=True, path=state.path or scratch) as cache:
            recorder = _HitRecorder(cache)
            tenant, env = state.scope["tenant"], state.scope["env"]
            set_llm_cache(ModelCache(recorder, tenant=tenant, env=env))  # type: ignore[arg-type]
            if not as_json:
                out.print(
                    f"[bold]ModelCache demo[/]: LangChain + {escape(llm_name)}; cache "
                    f"{escape(str(cache.config.path))} (embedder {escape(cache.embedder.name)})\n"
                )
            for number, step in enumerate(_SCRIPT, 1):
                recorder.last = None
                started = time.perf_counter()
                reply = chat.invoke([SystemMessage(step.system), HumanMessage(step.question)])
                seconds = time.perf_counter() - started
                hit = recorder.last
                got = hit.kind if hit is not None else "miss"
                usage = getattr(reply, "usage_metadata", None) or {}
                tokens = usage.get("output_tokens") or max(1, len(str(reply.content)) // 4)
                results.append(
                    {
                        "n": number,
                        "system": "pirate" if step.system == _PIRATE else "helpful",
                        "question": step.question,
                        "note": step.note,
                        "expected": step.expect,
                        "result": got,
                        "similarity": round(hit.similarity, 4) if hit is not None else None,
                        "seconds": round(seconds, 4),
                        "tokens": tokens,
                        "as_expected": (got == "miss") == (step.expect == "miss"),
                    }
                )
                if not as_json:
                    _print_demo_row(results[-1])
    finally:
        set_llm_cache(previous)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    summary = _demo_summary(results)
    if as_json:
        print_json({"llm": llm_name, "requests": results, "summary": summary})
    else:
        _print_demo_summary(summary)


def _print_demo_row(r: dict[str, Any]) -> None:
    colour = "yellow" if r["result"] == "miss" else "green"
    sim = f"{r['similarity']:.3f}" if r["similarity"] is not None else "  -  "
    mark = "[green]✓[/]" if r["as_expected"] else "[red]✗[/]"
    out.print(
        f"{r['n']:>2} {mark} [{colour}]{r['result']:<8}[/] sim {sim}  "
        f"{r['seconds'] * 1000:7.1f} ms  "
        f"[dim]{r['system']:<7}[/] {r['question']}  [dim]({r['note']})[/]",
        soft_wrap=True,
    )


def _demo_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    hits = [r for r in results if r["result"] != "miss"]
    misses = [r for r in results if r["result"] == "miss"]
    llm_seconds = sum(r["seconds"] for r in misses) / len(misses) if misses else 0.0
    actual = sum(r["seconds"] for r in results)
    without = actual - sum(r["seconds"] for r in hits) + llm_seconds * len(hits)
    return {
        "requests": len(results),
        "hits": len(hits),
        "exact_hits": sum(r["result"] == "exact" for r in hits),
        "semantic_hits": sum(r["result"] == "semantic" for r in hits),
        "misses": len(misses),
        "as_expected": sum(r["as_expected"] for r in results),
        "false_hits": sum(r["result"] != "miss" and r["expected"] == "miss" for r in results),
        "missed_hits": sum(r["result"] == "miss" and r["expected"] != "miss" for r in results),
        "seconds_with_cache": round(actual, 3),
        "seconds_without_cache": round(without, 3),
        "seconds_saved": round(without - actual, 3),
        "tokens_saved": sum(r["tokens"] for r in hits),
    }


def _print_demo_summary(s: dict[str, Any]) -> None:
    table = Table(title="Summary", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    table.add_row("requests", str(s["requests"]))
    table.add_row(
        "hits (exact / semantic)", f"{s['hits']} ({s['exact_hits']} / {s['semantic_hits']})"
    )
    table.add_row("misses (LLM calls)", str(s["misses"]))
    table.add_row("as expected", f"{s['as_expected']} / {s['requests']}")
    table.add_row("false hits / missed hits", f"{s['false_hits']} / {s['missed_hits']}")
    table.add_row("time with cache", f"{s['seconds_with_cache']:.2f} s")
    table.add_row("time without cache (est.)", f"{s['seconds_without_cache']:.2f} s")
    table.add_row("time saved", f"{s['seconds_saved']:.2f} s")
    table.add_row("output tokens saved", str(s["tokens_saved"]))
    out.print()
    out.print(table)
