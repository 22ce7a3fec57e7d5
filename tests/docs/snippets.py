"""What the documentation's Python blocks are run with (a helper module, not a test file).

Each ```python block of README.md and docs/*.md runs as written, in a fresh namespace and an
empty working folder, with the offline stand-ins below. An HTML comment on the line just before
a block says what it needs:

- ``<!-- snippet: given NAME, NAME -->``: the block uses names a reader brings along (their
  LLM call, an index, ...); each NAME must be one of :data:`GIVENS`, documented there.
- ``<!-- snippet: not run: REASON -->``: the block cannot run here (it needs a server or a
  database that is not this machine's); the reason is required.

Provider packages a reader installs for their own model (``langchain_openai``, ``openai``,
``llama_index.llms.openai``) are not dependencies of the project, so :func:`provider_modules`
stands in for them with the frameworks' fake models: ``ChatOpenAI`` is a LangChain
``FakeListChatModel``, LlamaIndex's ``OpenAI`` a ``MockFunctionCallingLLM``, the ``openai``
client answers a fixed text. The embedders named ``minilm`` and ``multilingual`` are the real
models, loaded once per test session.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.runnables import RunnableLambda
from llama_index.core.llms.mock import MockFunctionCallingLLM

from modelcache import Cache, CacheConfig, FakeEmbedder, Request

ANSWER = "A simulated answer."
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")
_MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(?P<body>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Snippet:
    """One ```python block: where it is, its code, and its marker."""

    path: Path
    label: str
    line: int
    code: str
    given: tuple[str, ...] = ()
    skip_reason: str | None = None

    @property
    def id(self) -> str:
        """``docs/langchain.md:23``."""
        return f"{self.label}:{self.line}"


def _marker(lines: list[str], fence: int) -> tuple[tuple[str, ...], str | None]:
    if fence == 0 or not (match := _MARKER.match(lines[fence - 1])):
        return (), None
    body = match["body"]
    if body.startswith("not run:"):
        reason = body.removeprefix("not run:").strip()
        if not reason:
            raise ValueError(f"line {fence}: `not run:` needs a reason")
        return (), reason
    if body.startswith("given "):
        names = tuple(n.strip() for n in body.removeprefix("given ").split(",") if n.strip())
        return names, None
    raise ValueError(f"line {fence}: unknown snippet marker {body!r}")


def python_blocks(path: Path, label: str) -> Iterator[Snippet]:
    """The ```python blocks of a markdown file, indented ones (in lists) included."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None or not match["lang"]:
            index += 1
            continue
        indent, start = match["indent"], index
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if match["lang"] == "python":
            body = [line.removeprefix(indent) for line in lines[start + 1 : end]]
            given, reason = _marker(lines, start)
            yield Snippet(path, label, start + 1, "\n".join(body) + "\n", given, reason)
        index = end + 1


# ---- provider stand-ins -----------------------------------------------------------------------
class ChatOpenAI(FakeListChatModel):
    """``langchain_openai.ChatOpenAI`` offline: model and temperature are in its llm_string."""

    model: str = "gpt-4o"
    temperature: float | None = None
    responses: list[str] = [ANSWER]  # noqa: RUF012 (a pydantic field default)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "temperature": self.temperature}


class OpenAIEmbeddings(Embeddings):
    """``langchain_openai.OpenAIEmbeddings`` offline: the deterministic word-hashing embedder."""

    def __init__(self, **_: Any) -> None:
        self._inner = FakeEmbedder()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._inner.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class LlamaOpenAI(MockFunctionCallingLLM):
    """``llama_index.llms.openai.OpenAI`` offline: a function-calling mock with its settings."""

    model: str = "gpt-4o-mini"
    temperature: float = 0.1


class _Completions:
    def create(self, *, model: str, messages: list[dict[str, Any]], **_: Any) -> Any:
        message = types.SimpleNamespace(content=ANSWER, role="assistant")
        return types.SimpleNamespace(choices=[types.SimpleNamespace(message=message)])


class OpenAIClient:
    """``openai.OpenAI`` offline: ``chat.completions.create`` answers a fixed text."""

    def __init__(self, **_: Any) -> None:
        self.chat = types.SimpleNamespace(completions=_Completions())


def provider_modules() -> dict[str, types.ModuleType]:
    """Stand-in modules for the provider packages the docs import."""
    langchain_openai = types.ModuleType("langchain_openai")
    langchain_openai.ChatOpenAI = ChatOpenAI  # type: ignore[attr-defined]
    langchain_openai.OpenAIEmbeddings = OpenAIEmbeddings  # type: ignore[attr-defined]
    openai = types.ModuleType("openai")
    openai.OpenAI = OpenAIClient  # type: ignore[attr-defined]
    llms = types.ModuleType("llama_index.llms")
    llms.__path__ = []  # a package, so that its submodule imports
    llms_openai = types.ModuleType("llama_index.llms.openai")
    llms_openai.OpenAI = LlamaOpenAI  # type: ignore[attr-defined]
    return {
        "langchain_openai": langchain_openai,
        "openai": openai,
        "llama_index.llms": llms,
        "llama_index.llms.openai": llms_openai,
    }


# ---- what a reader brings along ---------------------------------------------------------------
class ServiceClient:
    """``requests`` for the server examples: posts go to the app in-process (FastAPI's
    ``TestClient``) instead of over the network; every answer is kept in ``answers``."""

    def __init__(self, app: Any) -> None:
        from fastapi.testclient import TestClient

        self._client = TestClient(app)
        self.answers: list[dict[str, Any]] = []

    def post(self, url: str, json: Any = None, **kwargs: Any) -> Any:
        path = "/" + url.split("://", 1)[-1].split("/", 1)[-1]
        response = self._client.post(path, json=json, **kwargs)
        self.answers.append(response.json())
        return response

    def module(self) -> types.ModuleType:
        """A ``requests`` module whose ``post`` is this client's."""
        module = types.ModuleType("requests")
        module.post = self.post  # type: ignore[attr-defined]
        return module


def _index() -> Any:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    documents = [Document(text="A password is reset from the account page.")]
    return VectorStoreIndex.from_documents(documents, embed_model=MockEmbedding(embed_dim=8))


def _tools() -> list[Any]:
    from llama_index.core.tools import FunctionTool

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    return [FunctionTool.from_defaults(fn=multiply)]


def _graph() -> Any:
    model = ChatOpenAI(responses=["Use", "the", "reset", "link."])

    async def node(question: str) -> Any:
        return await model.ainvoke(question)

    return RunnableLambda(node)


def _modelcache_toml() -> str:
    Path("modelcache.toml").write_text(
        '[modelcache]\npath = "modelcache_data"\n\n[server]\nmax_body_bytes = 262144\n',
        encoding="utf-8",
    )
    return "modelcache.toml"


def _service_of_the_page() -> Any:
    raise LookupError("a ServiceClient needs the app of the page's configuration")


# NAME -> (what it stands for, how it is made in the block's working folder)
GIVENS: dict[str, tuple[str, Callable[[], Any]]] = {
    "call_your_llm": ("the application's LLM call", lambda: lambda request: ANSWER),
    "my_llm": ("a LlamaIndex LLM (the OpenAI stand-in)", LlamaOpenAI),
    "llm": ("a LlamaIndex LLM (the OpenAI stand-in)", LlamaOpenAI),
    "cache": (
        "an engine on ./modelcache_data",
        lambda: Cache(CacheConfig(path="modelcache_data")),
    ),
    "request": (
        "a Request",
        lambda: Request.from_text("How do I reset my password?"),
    ),
    "index": ("a LlamaIndex VectorStoreIndex of one document", _index),
    "tools": ("LlamaIndex tools for an agent", _tools),
    "graph": ("a runnable whose node invokes a chat model (as a LangGraph node does)", _graph),
    "inputs": ("the graph's input", lambda: "How do I reset my password?"),
    "render": ("a UI callback", lambda: lambda text: None),
    "modelcache.toml": ("a TOML file with [modelcache] and [server] tables", _modelcache_toml),
    "requests": (
        "`requests`, its posts answered by a service with the configuration the page shows "
        "(ServiceClient, built by the test that checks the example's answers)",
        _service_of_the_page,
    ),
}


def dump(value: Any) -> str:
    """JSON of a value, for assertion messages."""
    return json.dumps(value, ensure_ascii=False, default=str)
