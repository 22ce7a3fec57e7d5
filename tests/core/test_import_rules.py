"""The import rules of docs/concepts.md ("Where things live"), checked on the source.

Every ``import`` of every module counts, also those inside functions and under
``TYPE_CHECKING``: a rule that holds only at run time would not keep the layers apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
_CORE = _ROOT / "core"  # imported as `modelcache`
_ADAPTERS = ("modelcache_langchain", "modelcache_llamaindex")
_FACES = ("modelcache.cli", "modelcache.server", "modelcache.lab", *_ADAPTERS)
_STORES = ("modelcache.storage", "modelcache.vectors", "modelcache.embedding")
# what the stores may import besides each other: the leaves every layer may use
_LEAVES = ("modelcache.errors", "modelcache.redact", "modelcache.request")


def _name(path: Path) -> str:
    """The dotted module name of a source file of core/ or of an adapter."""
    if path.is_relative_to(_CORE):
        parts = ["modelcache", *path.relative_to(_CORE).with_suffix("").parts]
    else:
        parts = list(path.relative_to(_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, *, package: bool = False) -> set[str]:
    """The project modules a module's source imports, relative imports resolved
    (``from . import x`` counts as ``<package>.x``)."""
    here = module.split(".") if package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if node.module is None:
                found.update(f"{target}.{alias.name}" for alias in node.names)
            else:
                found.add(target)
    return {name for name in found if name.split(".")[0] in ("modelcache", *_ADAPTERS)}


def _graph() -> dict[str, set[str]]:
    files = [*_CORE.rglob("*.py")]
    for adapter in _ADAPTERS:
        files += (_ROOT / adapter).rglob("*.py")
    return {
        _name(path): imports_of(
            path.read_text(encoding="utf-8"), _name(path), package=path.name == "__init__.py"
        )
        for path in files
    }


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a documented rule, as 'importer -> imported (rule)'."""
    found = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            rule = _broken_rule(module, target)
            if rule:
                found.append(f"{module} -> {target} ({rule})")
    return found


def _broken_rule(module: str, target: str) -> str | None:
    if _within(module, _ADAPTERS):
        if target.split(".")[0] == "modelcache" and target not in (
            "modelcache",
            "modelcache.request",
            "modelcache._settings_aliases",
        ):
            return "the adapters use the public API"
        return None
    if module == "modelcache.__main__" or _within(module, ("modelcache.cli",)):
        return None  # the command line may run any face
    if _within(module, ("modelcache.server", "modelcache.lab")):
        if _within(target, ("modelcache.cli", *_ADAPTERS)):
            return "the service and the lab never import the command line or an adapter"
        other = "modelcache.lab" if _within(module, ("modelcache.server",)) else "modelcache.server"
        if _within(target, (other,)):
            return "the service and the lab are independent faces"
        return None
    # the runtime: everything else in core/
    if _within(target, _FACES):
        return "the runtime never imports a face (cli, server, lab, adapters)"
    if target == "modelcache.engine" and module != "modelcache":
        return "only the faces and the package's lazy names import the engine"
    if _within(module, _STORES):
        if not _within(target, (*_STORES, *_LEAVES)):
            return "the stores import only each other and errors, redact, request"
        if _within(module, ("modelcache.embedding",)) and _within(target, _STORES[:2]):
            return "embedders know nothing of the stores"
        if _within(module, ("modelcache.vectors",)) and _within(target, ("modelcache.storage",)):
            return "vector stores never import the SQL store"
    return None


def test_the_source_keeps_the_import_rules() -> None:
    graph = _graph()
    assert "modelcache.engine" in graph and "modelcache_langchain" in graph  # the walk found both
    assert violations(graph) == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("modelcache.storage.sql", "from ..engine import Cache"),
        ("modelcache.storage.schema", "from ..acceptance import Acceptor"),
        ("modelcache.vectors.chroma", "def f():\n    from ..storage import SQLStore"),
        ("modelcache.embedding.base", "from ..vectors import VectorStore"),
        ("modelcache.engine", "from .cli import app"),
        ("modelcache.maintenance", "import modelcache.lab.evaluation"),
        ("modelcache.acceptance", "from .engine import Hit"),
        ("modelcache.config", "from modelcache_langchain import ModelCache"),
        ("modelcache.server.app", "from ..lab import latency"),
        ("modelcache.lab.latency", "from ..cli import _common"),
        ("modelcache_llamaindex._llm", "from modelcache.engine import Cache"),
    ],
)
def test_a_forbidden_import_is_caught(module: str, source: str) -> None:
    graph = _graph()
    graph[module] = graph[module] | imports_of(source, module)
    assert violations(graph), f"{module}: {source!r} was not reported"


def test_relative_imports_resolve() -> None:
    assert imports_of("from . import sql\nfrom ..errors import X", "modelcache.storage.schema") == {
        "modelcache.storage.sql",
        "modelcache.errors",
    }
    assert imports_of("from .sql import SQLStore", "modelcache.storage", package=True) == {
        "modelcache.storage.sql"
    }
