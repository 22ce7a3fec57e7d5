"""The ``modelcache`` command: demo, serve, query, insert, import, export, stats, report, etc.

A thin shell over the engine: options and files are read here, every cache decision is made by
:class:`modelcache.Cache`. User mistakes end with a one-line error and a non-zero exit code,
never a traceback; ``--json`` prints machine-readable output for scripts.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from ..config import CacheConfig
from ..engine import Cache
from ..errors import ModelCacheError
from ..report import LogSummary, parse_since, summarize
from ..request import Message, Request

__all__ = ["app", "main"]

app = typer.Typer(
    name="modelcache",
    help="ModelCache: a semantic cache for LLM apps (exact and paraphrase hits, isolation).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit code 1."""


@dataclass
class _State:
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
        if self.env is not None and self.env not in config.environments:
            raise UserError(
                f"unknown env {self.env!r} (--env); allowed: {', '.join(config.environments)} "
                "(the `environments` setting)"
            )
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


def _friendly(func: F, *, inputs: tuple[type[Exception], ...] = ()) -> F:
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


def _state(ctx: typer.Context) -> _State:
    state = ctx.find_object(_State)
    return state if state is not None else _State()


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


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
    ctx.obj = _State(path, config, embedder, tenant, env, model)


# ---- single requests ------------------------------------------------------------------------
def _request(state: _State, text: str, system: str | None) -> Request:
    scope = state.scope
    return Request.from_text(
        text, system=system, tenant=scope["tenant"], env=scope["env"], model=scope["model"]
    )


def _show_answer(answer: Any) -> str:
    return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False, indent=2)


@app.command()
@_friendly
def query(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="The question to look up.")],
    system: Annotated[
        str | None, typer.Option(help="System prompt (part of the partition).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(min=-1.0, max=1.0, help="Similarity needed (cosine).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Look a question up: prints the cached answer, or 'miss'."""
    state = _state(ctx)
    with state.open_cache() as cache:
        started = time.perf_counter()
        hit = cache.lookup(_request(state, text, system), threshold=threshold)
        ms = (time.perf_counter() - started) * 1000
    if as_json:
        _print_json(
            {
                "hit": hit is not None,
                "kind": hit.kind if hit else None,
                "similarity": hit.similarity if hit else None,
                "answer": hit.answer if hit else None,
                "entry_id": hit.entry_id if hit else None,
                "matched_query": hit.matched_query if hit else None,
                "latency_ms": round(ms, 3),
            }
        )
        return
    if hit is None:
        out.print(f"[yellow]miss[/] ({ms:.1f} ms)")
        return
    out.print(
        f"[green]hit[/] {hit.kind}, similarity {hit.similarity:.3f}, {ms:.1f} ms, "
        f"matched: {hit.matched_query!r}"
    )
    out.print(_show_answer(hit.answer), markup=False)


@app.command()
@_friendly
def insert(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question (user message).")],
    answer: Annotated[str, typer.Argument(help="The answer to store.")],
    system: Annotated[
        str | None, typer.Option(help="System prompt (part of the partition).")
    ] = None,
    ttl: Annotated[float | None, typer.Option(min=0.001, help="Seconds to live.")] = None,
    json_answer: Annotated[
        bool, typer.Option("--json-answer", help="Parse ANSWER as JSON instead of text.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Store an answer for a question (the same question again replaces it)."""
    state = _state(ctx)
    value: Any = answer
    if json_answer:
        try:
            value = json.loads(answer)
        except ValueError as exc:
            raise UserError(f"--json-answer: ANSWER is not valid JSON: {exc}") from exc
    request = _request(state, question, system)
    with state.open_cache(create=True) as cache:
        entry_id = cache.insert(request, value, ttl=ttl)
    if as_json:
        _print_json({"id": entry_id, **state.scope})
    else:
        out.print(f"stored [bold]{entry_id}[/]")


# ---- bulk load and export -------------------------------------------------------------------
_QUERY_KEYS = ("query", "question", "prompt", "input")
_ANSWER_KEYS = ("answer", "response", "completion", "output")


@dataclass
class _Row:
    request: Request
    answer: Any
    metadata: dict[str, Any] | None


def _read_records(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    """(line number, record) pairs of a JSONL or CSV file."""
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() in (".csv", ".tsv") else "jsonl"
    with path.open(encoding="utf-8", newline="") as fh:
        if fmt == "csv":
            dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
            reader = csv.DictReader(fh, dialect=dialect)
            if not reader.fieldnames:
                raise UserError(f"{path}: empty CSV file (a header row is needed)")
            for record in reader:
                yield reader.line_num, record
            return
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except ValueError as exc:
                yield number, UserError(f"not valid JSON: {exc}")


def _field(record: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if record.get(key) not in (None, ""):
            return record[key]
    return None


def _maybe_json(value: Any, what: str) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise UserError(f"{what} is not valid JSON: {exc}") from exc
    return value


def _history(value: Any) -> tuple[Message, ...]:
    """History as exported ([[role, content], ...]) or as [{'role', 'content'}, ...]."""
    value = _maybe_json(value, "history")
    if value in (None, ""):
        return ()
    if not isinstance(value, list):
        raise UserError("history must be a list of messages")
    turns = []
    for item in value:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            turns.append(Message(str(item[0]), str(item[1])))
        else:
            turns.append(Message.from_any(item))
    return tuple(turns)


def _parse_row(record: Any, state: _State) -> _Row:
    """One Q/A record -> a request and its answer (global options fill missing scope)."""
    if isinstance(record, Exception):
        raise record
    if not isinstance(record, dict):
        raise UserError("each record must be an object")
    scope = {
        "tenant": record.get("tenant") or state.scope["tenant"],
        "env": record.get("env") or state.scope["env"],
        "model": record.get("model") or state.scope["model"],
    }
    params = _maybe_json(record.get("params") or {}, "params")
    if not isinstance(params, dict):
        raise UserError("params must be an object")
    answer = _field(record, _ANSWER_KEYS)  # CSV answers stay text, JSONL keeps JSON
    if answer is None:
        raise UserError(f"missing answer (one of: {', '.join(_ANSWER_KEYS)})")
    metadata = _maybe_json(record.get("metadata") or None, "metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise UserError("metadata must be an object")
    messages = _maybe_json(record.get("messages"), "messages")
    if messages:
        request = Request.from_messages(messages, params=params, **scope)
    else:
        text = _field(record, _QUERY_KEYS)
        if not isinstance(text, str):
            raise UserError(f"missing question (one of: {', '.join(_QUERY_KEYS)}, messages)")
        request = Request(
            query=text,
            scope=Request.from_text(text, params=params, **scope).scope,
            system=record.get("system") or None,
            history=_history(record.get("history")),
        )
    return _Row(request, answer, metadata)


def _progress(label: str, *, disable: bool) -> Progress:
    """A progress bar on stderr for long work (off for --json output), the package's one look."""
    from .._progress import progress

    return progress(label, disable=disable)


def _groups(rows: list[_Row]) -> Iterator[list[_Row]]:
    """Runs of consecutive rows with equal metadata (one ``insert_many`` each)."""
    group: list[_Row] = []
    for row in rows:
        if group and row.metadata != group[0].metadata:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


@app.command("import")
@_friendly
def import_(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="JSONL or CSV of Q/A pairs: query|question|prompt, answer|response; optional "
            "system, history, messages, tenant, env, model, params, metadata.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="auto (by extension), jsonl or csv.")
    ] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per write.")] = 256,
    ttl: Annotated[float | None, typer.Option(min=0.001, help="Seconds to live.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Bulk-load Q/A pairs. The whole file is checked first: one bad row writes nothing.

    Rows already stored with the same answer are skipped: an interrupted import, run again,
    resumes where it stopped.
    """
    if fmt not in ("auto", "jsonl", "csv"):
        raise UserError(f"--format must be auto, jsonl or csv, not {fmt!r}")
    state = _state(ctx)
    environments = state.cache_config().environments
    rows: list[_Row] = []
    problems: list[str] = []
    for number, record in _read_records(file, fmt):
        try:
            row = _parse_row(record, state)
            if row.request.scope.env not in environments:
                raise UserError(
                    f"unknown env {row.request.scope.env!r}; allowed: {', '.join(environments)}"
                )
            rows.append(row)
        except (UserError, ModelCacheError, ValueError, TypeError) as exc:
            problems.append(f"{file.name}:{number}: {exc}")
    if problems:
        for line in problems[:10]:
            err.print(line, markup=False, soft_wrap=True)
        more = f" (showing 10 of {len(problems)})" if len(problems) > 10 else ""
        raise UserError(f"{len(problems)} invalid row(s){more}; nothing was imported")
    if not rows:
        raise UserError(f"{file} holds no rows")
    stored = skipped = 0
    started = time.perf_counter()
    with state.open_cache(create=True) as cache:
        progress = _progress("importing", disable=as_json)
        with progress:
            task = progress.add_task("import", total=len(rows))
            for group in _groups(rows):
                pairs = [(r.request, r.answer) for r in group]
                meta = group[0].metadata
                known = cache.stored(pairs, ttl=ttl, metadata=meta)  # an earlier run's work
                fresh = [p for p in pairs if p[0].exact_key not in known]
                skipped += len(pairs) - len(fresh)
                progress.advance(task, len(pairs) - len(fresh))
                done = 0

                def advance(count: int, _total: int) -> None:
                    nonlocal done
                    progress.advance(task, count - done)
                    done = count

                cache.insert_many(
                    fresh, ttl=ttl, metadata=meta, progress=advance, batch_size=batch_size
                )
                stored += len(fresh)
    seconds = time.perf_counter() - started
    if as_json:
        _print_json({"imported": stored, "skipped": skipped, "seconds": round(seconds, 3)})
    else:
        note = f", skipped {skipped:,} already stored" if skipped else ""
        out.print(f"imported [bold]{stored}[/] rows in {seconds:.1f} s{note}")


@app.command()
@_friendly
def export(
    ctx: typer.Context,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    log: Annotated[
        bool,
        typer.Option(
            "--log",
            help="Export the query log (lookups and inserts, with hit kind, similarity and "
            "matched query) instead of the entries: mine it for labelled pairs.",
        ),
    ] = False,
) -> None:
    """Write every entry (of --tenant, if given) as JSON lines, re-importable with `import`."""
    state = _state(ctx)
    count = 0
    with state.open_cache() as cache:
        sink = output.open("w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout)
        rows = cache.export_log() if log else cache.export(tenant=state.tenant)
        with sink as fh:
            for row in rows:
                if log and state.tenant and row.get("tenant") != state.tenant:
                    continue
                if not log and state.env and row.get("env") != state.env:
                    continue
                if state.model and row.get("model") != state.model:
                    continue
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                count += 1
    if output:
        err.print(f"exported {count} {'log rows' if log else 'entries'} to {output}")


# ---- observation and maintenance ------------------------------------------------------------
@app.command()
@_friendly
def stats(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="Also count lookups and hits per partition from the query log since then: "
            "24h, 30m, 7d, an ISO time (UTC) or epoch seconds."
        ),
    ] = None,
) -> None:
    """Entries and hits per partition (tenant / env / model / params)."""
    state = _state(ctx)
    start = _since(since)
    with state.open_cache() as cache:
        data = cache.stats()
        recent = summarize(cache.export_log(since=start)) if start is not None else None
    parts = [
        p
        for p in data.get("partitions", [])
        if (state.tenant is None or p["tenant"] == state.tenant)
        and (state.env is None or p["env"] == state.env)
        and (state.model is None or p["model"] == state.model)
    ]
    if recent is not None:
        for p in parts:
            seen = recent.partitions.get(p["id"])
            p["since"] = {"lookups": seen.lookups if seen else 0, "hits": seen.hits if seen else 0}
    if as_json:
        _print_json({**data, "partitions": parts, "since": start})
        return
    table = Table(title=f"ModelCache: {data.get('entries', 0)} entries ({data.get('embedder')})")
    numeric = ("entries", "hits", "tokens saved")
    if recent is not None:
        numeric = (*numeric, "lookups", "hit rate")
    for column in ("tenant", "env", "model", "params", *numeric):
        table.add_column(column, justify="right" if column in numeric else "left")
    for p in parts:
        cells = [
            p["tenant"],
            p["env"],
            p["model"],
            json.dumps(p.get("params") or {}, ensure_ascii=False)[:60],
            str(p.get("entries", 0)),
            str(p.get("stored_hits", p.get("hits", 0))),
            str(p.get("tokens_saved", 0)),
        ]
        if "since" in p:
            n, h = p["since"]["lookups"], p["since"]["hits"]
            cells += [str(n), f"{h / n:.0%}" if n else "-"]
        table.add_row(*cells)
    out.print(table)
    if recent is not None:
        out.print(f"lookups and hit rate: query log since {_utc(start)} UTC", soft_wrap=True)
        if recent.lookups == 0:
            err.print("no lookups in the query log since then (is query_log on?)")


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_since(text, now=time.time())
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _utc(at: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, tz=timezone.utc).strftime(fmt)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@app.command()
@_friendly
def report(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(help="Only traffic since then: 24h, 30m, 7d, an ISO time (UTC) or epoch."),
    ] = None,
    log_file: Annotated[
        Path | None,
        typer.Option(
            "--log-file",
            help="Read a log exported with `export --log` instead of the cache's query log.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What the cache did, from the query log: hit rate by hour, latency, tokens and time saved."""
    state = _state(ctx)
    start = _since(since)
    if log_file is not None:
        with log_file.open(encoding="utf-8") as fh:
            summary = summarize(_log_lines(fh, log_file), since=start)
    else:
        with state.open_cache() as cache:
            summary = summarize(cache.export_log(since=start))
    if as_json:
        _print_json(summary.to_dict())
        return
    if summary.lookups == 0:
        err.print("no lookups in the query log (turn it on with query_log = true)")
        return
    _print_report(summary)


def _log_lines(fh: Any, path: Path) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UserError(f"{path}:{number}: not a JSON line") from None
        if not isinstance(row, dict) or "at" not in row:
            raise UserError(f"{path}:{number}: not a query-log row (export it with --log)")
        yield row


def _print_report(s: LogSummary) -> None:
    out.print(
        f"[bold]{s.lookups}[/] lookups from {_utc(s.first_at)} to {_utc(s.last_at)} UTC: "
        f"[bold]{s.hit_rate:.0%}[/] hits ({s.exact_hits} exact, {s.semantic_hits} semantic), "
        f"{s.inserts} inserts",
        soft_wrap=True,
    )
    hours = Table(title="Hit rate by hour (UTC)")
    for column in ("hour", "lookups", "hits", "hit rate", "tokens saved"):
        hours.add_column(column, justify="left" if column == "hour" else "right")
    for h in s.hours:
        hours.add_row(
            _utc(h.start), str(h.lookups), str(h.hits), f"{h.hit_rate:.0%}", str(h.tokens_saved)
        )
    out.print(hours)
    latency = Table(title="Lookup latency (ms)")
    for column in ("outcome", "count", "p50", "p95"):
        latency.add_column(column, justify="left" if column == "outcome" else "right")
    for kind, lat in s.latency.items():
        latency.add_row(kind, str(lat.count), _ms(lat.p50_ms), _ms(lat.p95_ms))
    out.print(latency)
    unknown = f" ({s.hits_without_tokens} hits of entries gone)" if s.hits_without_tokens else ""
    out.print(f"tokens saved: [bold]{s.tokens_saved}[/]{unknown}")
    if s.llm_seconds is None or s.time_saved_s is None:
        out.print(
            "time saved: unknown (no miss followed by the insert of its answer)", soft_wrap=True
        )
    else:
        out.print(
            f"time saved: [bold]{s.time_saved_s:.1f} s[/] "
            f"(an LLM call took {s.llm_seconds:.2f} s, median miss-to-insert)",
            soft_wrap=True,
        )


@app.command()
@_friendly
def clear(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete entries: those of --tenant/--env/--model, or ALL of them."""
    state = _state(ctx)
    filters = {"tenant": state.tenant, "env": state.env, "model": state.model}
    chosen = {k: v for k, v in filters.items() if v is not None}
    what = ", ".join(f"{k}={v}" for k, v in chosen.items()) or "ALL entries"
    with state.open_cache() as cache:
        where = cache.config.path or cache.config.sql_url
        if not yes and not typer.confirm(f"Delete {what} in {where}?", default=False):
            raise UserError("aborted; nothing deleted")
        deleted = cache.clear(tenant=state.tenant, env=state.env, model=state.model)
    if as_json:
        _print_json({"deleted": deleted, **chosen})
    else:
        out.print(f"deleted [bold]{deleted}[/] entries ({what})")


@app.command()
@_friendly
def repair(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make SQL and vectors agree: re-embed entries without a vector, drop orphan vectors."""
    state = _state(ctx)
    with state.open_cache() as cache:
        if cache.degraded:
            raise UserError(f"{cache.degraded}; restore or move the Chroma folder, then repair")
        before = cache.check()
        progress = _progress("repairing", disable=as_json)
        with progress:
            task = progress.add_task("repair", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            report = cache.repair(progress=advance)
        after = cache.check()
    result = {
        "rows_without_vector_before": len(before.rows_without_vector),
        "vectors_without_row_before": len(before.vectors_without_row),
        "reembedded": report.reembedded,
        "orphans_dropped": report.orphans_dropped,
        "collections_dropped": report.collections_dropped,
        "failed": report.failed,
        "consistent": after.ok,
    }
    if as_json:
        _print_json(result)
    else:
        out.print(
            f"re-embedded [bold]{report.reembedded}[/] entries, dropped "
            f"[bold]{report.orphans_dropped}[/] orphan vectors and "
            f"{report.collections_dropped} orphan collections; "
            + ("stores consistent" if after.ok else "[red]still inconsistent[/]")
        )
    if report.failed or not after.ok:
        raise typer.Exit(1)


@app.command()
@_friendly
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

    from ..server import ServerSettings, create_app
    from ..server.factory import ENV_VAR, describe_backends

    state = _state(ctx)
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
        f"embedder {escape(config.embedder)} | http://{settings.host}:{settings.port} | "
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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_friendly
def bench(ctx: typer.Context) -> None:
    """Run the latency benchmark (benchmarks/latency.py); extra arguments are passed on."""
    candidates = [
        Path.cwd() / "benchmarks" / "latency.py",
        Path(__file__).resolve().parents[2] / "benchmarks" / "latency.py",
    ]
    script = next((p for p in candidates if p.is_file()), None)
    if script is None:
        raise UserError("benchmarks/latency.py not found (run from a ModelCache source checkout)")
    spec = importlib.util.spec_from_file_location("modelcache_bench_latency", script)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    # dataclasses (and typing) look the module up in sys.modules while it executes
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    entry = getattr(module, "main", None)
    if not callable(entry):
        raise UserError(f"{script} has no main()")
    args = list(ctx.args)
    if inspect.signature(entry).parameters:
        result = entry(args)
    else:
        saved, sys.argv = sys.argv, [str(script), *args]
        try:
            result = entry()
        finally:
            sys.argv = saved
    if isinstance(result, int) and result:
        raise typer.Exit(result)


# ---- demo -----------------------------------------------------------------------------------
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


@app.command()
@_friendly
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
    state = _state(ctx)
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
                    f"[bold]ModelCache demo[/]: LangChain + {llm_name}; cache "
                    f"{cache.config.path} (embedder {cache.embedder.name})\n"
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
        _print_json({"llm": llm_name, "requests": results, "summary": summary})
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


def _register_accuracy_commands() -> None:
    from ._accuracy import register

    register(app)


_register_accuracy_commands()


def main() -> None:
    """Entry point of the ``modelcache`` console script."""
    app()
