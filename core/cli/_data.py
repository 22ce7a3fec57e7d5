"""Commands on entries: query, insert, import, export, clear and repair."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..engine import _lookup_fields
from ..errors import ModelCacheError
from ..redact import mask_url
from ..request import Request
from ._common import State, UserError, err, friendly, get_state, out, print_json, progress_bar
from ._records import Expired, Row, groups, parse_row, read_records


# ---- single requests ------------------------------------------------------------------------
def _request(state: State, text: str, system: str | None) -> Request:
    scope = state.scope
    return Request.from_text(
        text, system=system, tenant=scope["tenant"], env=scope["env"], model=scope["model"]
    )


def _show_answer(answer: Any) -> str:
    return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False, indent=2)


def _check_ttl(ttl: float | None) -> float | None:
    """``--ttl``: finite (typer's bounds let ``inf`` through, which no database stores)."""
    if ttl is not None and not math.isfinite(ttl):
        raise typer.BadParameter(f"must be a finite number of seconds, not {ttl}")
    return ttl


@friendly
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
    state = get_state(ctx)
    with state.open_cache() as cache:
        started = time.perf_counter()
        hit = cache.lookup(_request(state, text, system), threshold=threshold)
        ms = (time.perf_counter() - started) * 1000
    if as_json:
        fields = _lookup_fields(hit)
        del fields["metadata"]
        print_json({**fields, "latency_ms": round(ms, 3)})
        return
    if hit is None:
        out.print(f"[yellow]miss[/] ({ms:.1f} ms)")
        return
    out.print(
        f"[green]hit[/] {hit.kind}, similarity {hit.similarity:.3f}, {ms:.1f} ms, "
        f"matched: {escape(repr(hit.matched_query))}"
    )
    out.print(_show_answer(hit.answer), markup=False)


@friendly
def insert(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question (user message).")],
    answer: Annotated[str, typer.Argument(help="The answer to store.")],
    system: Annotated[
        str | None, typer.Option(help="System prompt (part of the partition).")
    ] = None,
    ttl: Annotated[
        float | None, typer.Option(min=0.001, callback=_check_ttl, help="Seconds to live.")
    ] = None,
    json_answer: Annotated[
        bool, typer.Option("--json-answer", help="Parse ANSWER as JSON instead of text.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Store an answer for a question (the same question again replaces it)."""
    state = get_state(ctx)
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
        print_json({"id": entry_id, **state.scope})
    else:
        out.print(f"stored [bold]{entry_id}[/]")


@friendly
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
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per write.")] = 512,
    ttl: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            callback=_check_ttl,
            help="Seconds to live of rows without their own (an export's rows keep theirs).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Bulk-load Q/A pairs. The whole file is checked first: one bad row writes nothing.

    Rows already stored with the same answer are skipped: an interrupted import, run again,
    resumes where it stopped. Exported entries keep their expiry and ttl; those expired since
    the export are skipped.
    """
    if fmt not in ("auto", "jsonl", "csv"):
        raise UserError(f"--format must be auto, jsonl or csv, not {fmt!r}")
    state = get_state(ctx)
    config = state.cache_config()
    rows: list[Row] = []
    problems: list[str] = []
    expired = 0
    now = time.time()
    for number, record in read_records(file, fmt):
        try:
            row = parse_row(record, state.scope, now=now)
            config.check_env(row.request.scope.env)
            rows.append(row)
        except Expired:
            expired += 1
        except (UserError, ModelCacheError, ValueError, TypeError) as exc:
            problems.append(f"{file.name}:{number}: {exc}")
    if problems:
        for line in problems[:10]:
            err.print(line, markup=False, soft_wrap=True)
        more = f" (showing 10 of {len(problems)})" if len(problems) > 10 else ""
        raise UserError(f"{len(problems)} invalid row(s){more}; nothing was imported")
    if not rows and not expired:
        raise UserError(f"{file} holds no rows")
    stored = skipped = 0
    started = time.perf_counter()
    with state.open_cache(create=True) as cache:
        progress = progress_bar("importing", disable=as_json)
        with progress:
            task = progress.add_task("import", total=len(rows))
            for group in groups(rows):
                at = time.time()  # rows that expired since they were read are left out
                live = [r for r in group if not r.expired(at)]
                expired += len(group) - len(live)
                progress.advance(task, len(group) - len(live))
                if not live:
                    continue
                lifetime = live[0].lifetime(ttl)
                expiries = {
                    r.request.exact_key: r.expires_at for r in live if r.expires_at is not None
                }
                pairs = [(r.request, r.answer) for r in live]
                meta = live[0].metadata
                known = cache.stored(  # an earlier run's work, or the cache's own export
                    pairs, ttl=lifetime, metadata=meta, _expires_at=expiries
                )
                fresh = [p for p in pairs if p[0].exact_key not in known]
                skipped += len(pairs) - len(fresh)
                progress.advance(task, len(pairs) - len(fresh))
                done = 0

                def advance(count: int, _total: int) -> None:
                    nonlocal done
                    progress.advance(task, count - done)
                    done = count

                cache.insert_many(
                    fresh,
                    ttl=lifetime,
                    metadata=meta,
                    progress=advance,
                    batch_size=batch_size,
                    _expires_at=expiries,
                )
                stored += len(fresh)
    seconds = time.perf_counter() - started
    if as_json:
        print_json(
            {
                "imported": stored,
                "skipped": skipped,
                "expired": expired,
                "seconds": round(seconds, 3),
            }
        )
    else:
        note = f", skipped {skipped:,} already stored" if skipped else ""
        note += f", skipped {expired:,} expired since the export" if expired else ""
        out.print(f"imported [bold]{stored}[/] rows in {seconds:.1f} s{note}")


@friendly
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
    """Write every live entry (of --tenant, if given) as JSON lines, re-importable with `import`.

    An entry whose stored data is corrupt is skipped with a warning naming it.
    """
    state = get_state(ctx)
    count = 0
    with state.open_cache() as cache, _skipped_entries() as skipped:
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
        what = "log rows" if log else "entries"
        err.print(f"exported {count} {what} to {escape(str(output))}", soft_wrap=True)
    if skipped:  # the file is written, but is no complete copy: say so, and exit 1
        raise UserError(
            f"skipped {len(skipped)} entries whose stored data is corrupt (named above); "
            f"the other {count} were exported"
        )


class _SkipCounter(logging.Handler):
    """Prints the warnings of an export (those about skipped corrupt entries among them) and
    collects the ids of the skipped entries."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.ids: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        entry = getattr(record, "modelcache_skipped", None)
        if entry is not None:
            self.ids.append(str(entry))
        message = f"{record.levelname.lower()}: {record.getMessage()}"
        err.print(message, markup=False, soft_wrap=True)


@contextlib.contextmanager
def _skipped_entries() -> Iterator[list[str]]:
    """The ids of the entries an export skips as corrupt, while it runs."""
    logger = logging.getLogger("modelcache")
    counter = _SkipCounter()
    logger.addHandler(counter)
    try:
        yield counter.ids
    finally:
        logger.removeHandler(counter)


# ---- maintenance -----------------------------------------------------------------------------
@friendly
def clear(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete entries: those of --tenant/--env/--model, or ALL of them."""
    state = get_state(ctx)
    filters = {"tenant": state.tenant, "env": state.env, "model": state.model}
    chosen = {k: v for k, v in filters.items() if v is not None}
    what = ", ".join(f"{k}={v}" for k, v in chosen.items()) or "ALL entries"
    with state.open_cache() as cache:
        where = cache.config.path or mask_url(cache.config.sql_url)
        if not yes and not typer.confirm(f"Delete {what} in {where}?", default=False):
            raise UserError("aborted; nothing deleted")
        deleted = cache.clear(tenant=state.tenant, env=state.env, model=state.model)
    if as_json:
        print_json({"deleted": deleted, **chosen})
    else:
        out.print(f"deleted [bold]{deleted}[/] entries ({escape(what)})", soft_wrap=True)


@friendly
def repair(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make SQL and vectors agree: re-embed entries without a vector, drop orphan vectors."""
    state = get_state(ctx)
    with state.open_cache() as cache:
        if cache.degraded:
            raise UserError(f"{cache.degraded}; restore or move the Chroma folder, then repair")
        before = cache.check()
        progress = progress_bar("repairing", disable=as_json)
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
        print_json(result)
    else:
        out.print(
            f"re-embedded [bold]{report.reembedded}[/] entries, dropped "
            f"[bold]{report.orphans_dropped}[/] orphan vectors and "
            f"{report.collections_dropped} orphan collections; "
            + ("stores consistent" if after.ok else "[red]still inconsistent[/]")
        )
    if report.failed or not after.ok:
        raise typer.Exit(1)
