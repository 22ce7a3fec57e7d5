"""The public surface (names, `Cache` methods, adapters, CLI commands, HTTP routes) is pinned.

Internal moves must not change what a user calls. The pinned description lives in
``public_surface.json`` next to this file; after an intended API change, rewrite it with
``python tests/core/test_public_surface.py --write`` and review the diff.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import typer

_PINNED = Path(__file__).with_name("public_surface.json")


def _signature(func: Any) -> list[str]:
    """Parameter names, kinds and defaults (annotations left out: their spelling may move)."""
    out = []
    for p in inspect.signature(func).parameters.values():
        default = "" if p.default is inspect.Parameter.empty else f"={p.default!r}"
        out.append(f"{p.kind.name}:{p.name}{default}")
    return out


def _methods(cls: type) -> dict[str, Any]:
    """Every public callable and property of a class, with its signature."""
    members: dict[str, Any] = {}
    for name in sorted(dir(cls)):
        if name.startswith("_") and name != "__init__":
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, property):
            members[name] = "property"
        elif callable(getattr(cls, name)):
            kind = "async" if inspect.iscoroutinefunction(getattr(cls, name)) else "sync"
            members[name] = [kind, *_signature(getattr(cls, name))]
    return members


def _cli() -> dict[str, list[str]]:
    """Each command of the `modelcache` CLI with its options and arguments."""
    from modelcache.cli import app

    group = typer.main.get_command(app)
    commands: dict[str, list[str]] = {"": sorted(o for p in group.params for o in p.opts)}
    for name, command in sorted(group.commands.items()):  # type: ignore[attr-defined]
        commands[name] = sorted(o for p in command.params for o in p.opts)
    return commands


def _routes() -> list[str]:
    """Method and path of every HTTP route the service answers."""
    import tempfile

    from modelcache import Cache, CacheConfig, FakeEmbedder
    from modelcache.server import create_app

    with (
        tempfile.TemporaryDirectory() as tmp,
        Cache(CacheConfig(path=tmp), embedder=FakeEmbedder()) as cache,
    ):
        app = create_app(cache)
        return sorted(
            f"{method} {route.path}"
            for route in app.routes
            for method in sorted(getattr(route, "methods", None) or {"WS"})
            if method != "HEAD"
        )


def surface() -> dict[str, Any]:
    """The whole public surface as plain JSON data."""
    import modelcache
    import modelcache_langchain
    import modelcache_llamaindex

    return {
        "modelcache.__all__": sorted(modelcache.__all__),
        "Cache": _methods(modelcache.Cache),
        "Hit": _methods(modelcache.Hit),
        "CacheConfig fields": sorted(modelcache.CacheConfig.model_fields),
        "modelcache_langchain.__all__": sorted(modelcache_langchain.__all__),
        "modelcache_langchain.ModelCache": _methods(modelcache_langchain.ModelCache),
        "modelcache_llamaindex.__all__": sorted(modelcache_llamaindex.__all__),
        "modelcache_llamaindex.wrap_llm": _signature(modelcache_llamaindex.wrap_llm),
        "modelcache_llamaindex.CachedLLM.__init__": _signature(
            modelcache_llamaindex.CachedLLM.__init__
        ),
        "cli": _cli(),
        "http routes": _routes(),
    }


def test_public_surface_is_unchanged() -> None:
    pinned = json.loads(_PINNED.read_text(encoding="utf-8"))
    now = json.loads(json.dumps(surface()))
    for key in sorted(set(pinned) | set(now)):
        assert now.get(key) == pinned.get(key), f"public surface changed: {key}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        _PINNED.write_text(json.dumps(surface(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    else:
        print(json.dumps(surface(), indent=1, sort_keys=True))
