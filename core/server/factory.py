"""App factory for ``modelcache serve --workers N``: each uvicorn worker opens its own cache.

uvicorn starts workers by import string, so the settings travel in one environment variable
(JSON) written by the CLI; each worker builds its config, cache and app from it and closes the
cache when it shuts down.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from ..config import CacheConfig
from ..engine import Cache
from ..errors import ConfigError
from ..redact import mask_url
from .app import create_app
from .settings import ServerSettings

__all__ = ["ENV_VAR", "app_from_env", "describe_backends"]

ENV_VAR = "MODELCACHE_SERVE_SPEC"


def describe_backends(config: CacheConfig) -> tuple[str, str]:
    """Human names of the SQL and vector backends actually used, passwords masked."""
    sql = config.sql_url or f"sqlite:///{os.path.join(config.path or '.', 'modelcache.db')}"
    if config.chroma_url:
        vectors = f"Chroma server {mask_url(config.chroma_url)}"
    elif config.path:
        vectors = f"embedded Chroma in {os.path.join(config.path, 'chroma')}"
    else:
        vectors = "in-memory Chroma (lost at exit)"
    return mask_url(sql), vectors


def app_from_env() -> FastAPI:
    """Build one worker's app from :data:`ENV_VAR` (called by uvicorn with ``factory=True``)."""
    raw = os.environ.get(ENV_VAR)
    if not raw:
        raise ConfigError(f"{ENV_VAR} is not set; start workers with `modelcache serve`")
    spec = json.loads(raw)
    config = CacheConfig.load(spec.get("config_file"), **spec.get("cache", {}))
    settings = ServerSettings.load(spec.get("config_file"), **spec.get("server", {}))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    cache = Cache(config)
    app = create_app(cache, settings)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        try:
            async with inner(a) as state:
                yield state
        finally:
            cache.close()

    app.router.lifespan_context = lifespan
    return app
