"""The ``serve`` command: the HTTP service under uvicorn (FastAPI is imported when it runs)."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..engine import Cache
from ._common import UserError, err, friendly, get_state


@friendly
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(help="Bind address; without API keys or open mode only loopback."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port. [default: 8000]")
    ] = None,
    max_body_bytes: Annotated[
        int | None, typer.Option(min=1, help="Largest request body accepted.")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Processes serving one port; more than 1 needs sql_url and chroma_url."
        ),
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the HTTP service (ModelCache /modelcache + REST /v1) with uvicorn.

    API keys: MODELCACHE_API_KEYS="key1:tenantA,key2:tenantB" or \\[server].api_keys in --config.
    Trusted networks: MODELCACHE_OPEN_MODE=1 and MODELCACHE_ALLOWED_CLIENTS="10.0.0.0/8".
    """
    import uvicorn
    from uvicorn.config import LOG_LEVELS

    from ..server import ServerSettings, create_app
    from ..server.factory import ENV_VAR, describe_backends

    if log_level.lower() not in LOG_LEVELS:
        raise UserError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    state = get_state(ctx)
    server_overrides = {"host": host, "port": port, "max_body_bytes": max_body_bytes}
    settings = ServerSettings.load(
        state.config, host=host, port=port, max_body_bytes=max_body_bytes
    )
    settings.check_bind(settings.host)
    cache_overrides = {"path": state.path, "embedder": state.embedder}
    config = state.cache_config()
    if workers > 1 and not (config.sql_url and config.chroma_url):
        raise UserError(
            "--workers > 1 needs a shared database and Chroma server (sql_url and chroma_url): "
            "the embedded SQLite + Chroma folder serves one process only"
        )
    sql, vectors = describe_backends(config)
    if config.sql_url and not config.chroma_url:
        err.print(
            f"[yellow]warning:[/] sql_url is set but vectors are in {escape(vectors)}: other "
            "processes sharing this database cannot see them and will miss paraphrases "
            "(exact hits only). Set chroma_url to share vectors.",
            soft_wrap=True,
        )
    if settings.local_only:
        mode = "local-only: no API keys, loopback clients"
    elif settings.open_mode:
        mode = f"open mode for {', '.join(settings.allowed_clients)}"
        mode += f" + {len(settings.api_keys)} keys" if settings.api_keys else ""
    else:
        mode = f"{len(settings.api_keys)} API keys"
    err.print(
        f"modelcache serve: SQL {escape(sql)} | vectors {escape(vectors)} | "
        f"embedder {escape(config.embedder)} | http://{escape(settings.host)}:{settings.port} | "
        f"{workers} worker{'s' if workers > 1 else ''} | {mode}",
        soft_wrap=True,
    )
    # the service reads X-Forwarded-For itself, from trusted_proxies only
    options: dict[str, Any] = {"log_level": log_level, "proxy_headers": False}
    if workers > 1:
        spec = {
            "config_file": str(state.config) if state.config else None,
            "cache": cache_overrides,
            "server": server_overrides,
        }
        os.environ[ENV_VAR] = json.dumps(spec)
        uvicorn.run(
            "modelcache.server.factory:app_from_env",
            factory=True,
            workers=workers,
            host=settings.host,
            port=settings.port,
            **options,
        )
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with Cache(config) as cache:
        application = create_app(cache, settings)
        uvicorn.run(application, host=settings.host, port=settings.port, **options)
