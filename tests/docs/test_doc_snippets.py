"""Every ```python block of README.md and docs/*.md runs as written (see ``snippets.py``).

Blocks run in a fresh namespace and an empty working folder, with no ``MODELCACHE_*``
variables, the provider stand-ins of ``snippets.provider_modules`` and the real embedders
loaded once per session. Caches a block opens are closed after it.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.globals import set_llm_cache
from snippets import GIVENS, ServiceClient, Snippet, dump, provider_modules, python_blocks

import modelcache.engine
from modelcache import Cache, Embedder
from modelcache.embedding import MultilingualEmbedder, OnnxSentenceEmbedder
from modelcache_langchain import ModelCache
from modelcache_llamaindex import CachedLLM

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPETS = [
    snippet for path in DOCS for snippet in python_blocks(path, path.relative_to(ROOT).as_posix())
]


@pytest.fixture(scope="session")
def multilingual() -> MultilingualEmbedder:
    """The multilingual USE model, loaded once for the blocks that name it."""
    return MultilingualEmbedder()


@pytest.fixture
def embedders(
    minilm: OnnxSentenceEmbedder, request: pytest.FixtureRequest
) -> Callable[[str], Embedder | None]:
    """``minilm`` and ``multilingual`` by name, each loaded once per session."""

    def by_name(spec: str) -> Embedder | None:
        if spec == "minilm":
            return minilm
        if spec == "multilingual":
            return request.getfixturevalue("multilingual")  # type: ignore[no-any-return]
        return None

    return by_name


@pytest.fixture
def docs_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedders: Callable[[str], Embedder | None]
) -> Iterator[list[Any]]:
    """An empty working folder, provider stand-ins and shared embedders; yields the list of
    objects to close after the block."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("MODELCACHE_")]:
        monkeypatch.delenv(name)
    for name, module in provider_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    build = modelcache.engine.build_embedder

    def shared(spec: str, **kwargs: Any) -> Embedder:
        return embedders(spec) or build(spec, **kwargs)

    monkeypatch.setattr(modelcache.engine, "build_embedder", shared)
    from llama_index.core import Settings

    saved = (Settings._llm, Settings._embed_model)
    opened: list[Any] = []
    yield opened
    set_llm_cache(None)
    Settings._llm, Settings._embed_model = saved
    for obj in reversed(opened):
        obj.close()


def _closers(namespace: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    for value in namespace.values():
        if isinstance(value, Cache | ModelCache):
            found.append(value)
        elif isinstance(value, CachedLLM):
            found.append(value.cache)
    return found


def run_snippet(snippet: Snippet, opened: list[Any]) -> dict[str, Any]:
    """Execute one block (top-level ``await`` / ``async for`` allowed); returns its namespace."""
    namespace: dict[str, Any] = {"__name__": "__doc_snippet__"}
    for name in snippet.given:
        assert name in GIVENS, f"{snippet.id}: `given {name}` is not one of {sorted(GIVENS)}"
        namespace[name] = GIVENS[name][1]()
    opened.extend(_closers(namespace))
    code = compile(
        snippet.code, snippet.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    try:
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            asyncio.run(result)
    finally:
        opened.extend(c for c in _closers(namespace) if c not in opened)
    return namespace


def test_every_block_is_found() -> None:
    """The collector sees indented blocks and every marker is well formed."""
    assert len(SNIPPETS) >= 20
    assert any(s.path.name == "langchain.md" and "support = ModelCache" in s.code for s in SNIPPETS)
    for snippet in SNIPPETS:
        unknown = set(snippet.given) - set(GIVENS)
        assert not unknown, f"{snippet.id}: unknown given names {unknown}"


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_doc_block_runs(snippet: Snippet, docs_world: list[Any], tmp_path: Path) -> None:
    if snippet.skip_reason is not None:
        pytest.skip(f"not run: {snippet.skip_reason}")
    if "requests" in snippet.given:
        pytest.skip("runs in test_server_envelope_example_is_true")
    run_snippet(snippet, docs_world)


def test_server_envelope_example_is_true(
    docs_world: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/server.md's envelope example, on the service configuration it shows (the
    multilingual embedder), answers what its comments say."""
    from modelcache import CacheConfig
    from modelcache.server import ServerSettings, create_app

    [snippet] = [s for s in SNIPPETS if "requests" in s.given]
    cache = Cache(CacheConfig(path="modelcache_data", embedder="multilingual"))
    docs_world.append(cache)
    client = ServiceClient(create_app(cache, ServerSettings()))
    monkeypatch.setitem(sys.modules, "requests", client.module())
    namespace: dict[str, Any] = {"__name__": "__doc_snippet__"}
    for name in snippet.given:
        namespace[name] = sys.modules["requests"] if name == "requests" else GIVENS[name][1]()
    exec(compile(snippet.code, snippet.id, "exec"), namespace)
    insert, query, *rest = client.answers
    assert insert["writeStatus"] == "success", dump(insert)
    assert query["cacheHit"] is True, dump(query)
    assert query["hit_query"] == "你是谁?" and query["hit_kind"] == "semantic", dump(query)
    assert f'"similarity": {query["similarity"]:.2f}' in snippet.code, dump(query)
    assert all(answer["errorCode"] == 0 for answer in rest), dump(rest)
