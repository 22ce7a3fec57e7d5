"""What every command shares: global options, user errors in one line, output, opening the cache."""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from ..config import CacheConfig
from ..engine import Cache
from ..errors import ConfigError, ModelCacheError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit code 1."""


@dataclass
class State:
    """Global options, shared by every command."""

    path: str | None = None
    config: Path | None = None
    embedder: str | None = None
    tenant: str | None = None
    env: str | None = None
    model: str | None = None

    @property
    def scope(self) -> dict[str, str]:
        """Scope of single requests: the global options or the defaults."""
        return {
            "tenant": self.tenant or "default",
            "env": self.env or "prod",
            "model": self.model or "default",
        }

    def cache_config(self, **overrides: Any) -> CacheConfig:
        """The config: TOML file < ``MODELCACHE_*`` variables < options."""
        options = {"path": self.path, "embedder": self.embedder, **overrides}
        config = CacheConfig.load(self.config, **options)
        if self.env is not None:
            try:
                config.check_env(self.env, "--env")
            except ConfigError as exc:
                raise UserError(f"{exc} (the `environments` setting)") from None
        return config

    @contextlib.contextmanager
    def open_cache(self, *, create: bool = False, **overrides: Any) -> Iterator[Cache]:
        """Open the cache (and close it on the way out); only ``create`` makes a new one."""
        config = self.cache_config(**overrides)
        if not create:
            _require_existing(config)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no bar while loading a model
        cache = Cache(config)
        try:
            yield cache
        finally:
            cache.close()


def _require_existing(config: CacheConfig) -> None:
    """Refuse an embedded cache folder that holds no cache (a mistyped --path, say)."""
    if config.sql_url is None and config.path is not None:
        database = Path(config.path) / "modelcache.db"
        if not database.is_file():
            raise UserError(
                f"no cache in {config.path} ({database.name} not found): check --path, or "
                "create one with `modelcache insert` or `modelcache import`"
            )


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def friendly(func: F, *, inputs: tuple[type[Exception], ...] = ()) -> F:
    """Turn user-facing errors into a one-line message and exit code 1.

    ``inputs``: more exception types that, in this command, only come from bad input files.
    """
    user_errors: tuple[type[Exception], ...] = (UserError, ModelCacheError, OSError, *inputs)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except user_errors as exc:
            raise _fail(str(exc)) from None
        except typer.Abort:
            raise _fail("aborted; nothing changed") from None
        except KeyboardInterrupt:
            raise _fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def get_state(ctx: typer.Context) -> State:
    """The global options of this invocation (the defaults when a command runs on its own)."""
    state = ctx.find_object(State)
    return state if state is not None else State()


def print_json(value: Any) -> None:
    """``--json`` output: indented, non-ASCII kept, anything else as its string."""
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def progress_bar(label: str, *, disable: bool) -> Progress:
    """A progress bar on stderr for long work (off for --json output), the package's one look."""
    from .._progress import progress

    return progress(label, disable=disable)
