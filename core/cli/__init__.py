"""The ``modelcache`` command: demo, serve, query, insert, import, export, stats, report, etc.

A thin shell over the engine: options and files are read here, every cache decision is made by
:class:`modelcache.Cache`. User mistakes end with a one-line error and a non-zero exit code,
never a traceback; ``--json`` prints machine-readable output for scripts.

Modules: ``_common`` (global options, errors, output, opening the cache), ``_records`` (import
files), ``_data`` (entry commands), ``_report`` (stats, report), ``_serve``, ``_bench``,
``_demo`` (LangChain, imported when the demo runs) and ``_accuracy`` (eval, calibrate and
finetune over :mod:`modelcache.lab`, imported when they run).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from . import _accuracy, _bench, _data, _demo, _report, _serve
from ._common import State

__all__ = ["app", "main"]

app = typer.Typer(
    name="modelcache",
    help="ModelCache: a semantic cache for LLM apps (exact and paraphrase hits, isolation).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


@app.callback()
def _global(
    ctx: typer.Context,
    path: Annotated[
        str | None,
        typer.Option(
            "--path", "-p", help="Cache folder (Chroma + SQLite). [default: modelcache_data]"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML file: \\[modelcache] cache settings, \\[server] keys and limits.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    embedder: Annotated[
        str | None,
        typer.Option(help="'minilm' (shipped), 'multilingual', a model folder, or 'fake' (tests)."),
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="Tenant of requests. [default: default]")
    ] = None,
    env: Annotated[str | None, typer.Option(help="Environment (dev/test/staging/prod).")] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name of requests. [default: default]")
    ] = None,
) -> None:
    """ModelCache: a semantic cache for LLM apps.

    Global options go before the command, e.g. [bold]modelcache --path ./data stats[/].
    Settings also come from MODELCACHE_* environment variables or --config.
    """
    ctx.obj = State(path, config, embedder, tenant, env, model)


app.command()(_data.query)
app.command()(_data.insert)
app.command("import")(_data.import_)
app.command()(_data.export)
app.command()(_report.stats)
app.command()(_report.report)
app.command()(_data.clear)
app.command()(_data.repair)
app.command()(_serve.serve)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    _bench.bench
)
app.command()(_demo.demo)
# models are local (shipped or a folder): no command asks the Hugging Face hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
app.command("eval")(_accuracy.eval_command)
app.command("calibrate")(_accuracy.calibrate_command)
app.command("finetune")(_accuracy.finetune_command)


def main() -> None:
    """Entry point of the ``modelcache`` console script."""
    app()
