"""Commands that observe the cache: ``stats`` (entries and hits) and ``report`` (query log)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..report import LogSummary, parse_since, summarize
from ._common import UserError, err, friendly, get_state, out, print_json


@friendly
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
    state = get_state(ctx)
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
        print_json({**data, "partitions": parts, "since": start})
        return
    table = Table(
        title=f"ModelCache: {data.get('entries', 0)} entries ({escape(str(data.get('embedder')))})"
    )
    numeric: tuple[str, ...] = ("entries", "hits", "tokens saved")
    if recent is not None:
        numeric = (*numeric, "lookups", "hit rate")
    for column in ("tenant", "env", "model", "params", *numeric):
        table.add_column(column, justify="right" if column in numeric else "left")
    for p in parts:
        cells = [  # names and params are user text: never markup
            escape(p["tenant"]),
            escape(p["env"]),
            escape(p["model"]),
            escape(json.dumps(p.get("params") or {}, ensure_ascii=False)[:60]),
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


@friendly
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
    state = get_state(ctx)
    start = _since(since)
    if log_file is not None:
        with log_file.open(encoding="utf-8") as fh:
            summary = summarize(_log_lines(fh, log_file), since=start)
    else:
        with state.open_cache() as cache:
            summary = summarize(cache.export_log(since=start))
    if as_json:
        print_json(summary.to_dict())
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
        problem = _log_row_problem(row)
        if problem:
            raise UserError(f"{path}:{number}: {problem}")
        yield row


_LATEST = datetime(9999, 12, 31, tzinfo=timezone.utc).timestamp()  # the last printable time


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _log_row_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with the fields the report reads from a query-log row, if anything."""
    if not _number(row["at"]) or not 0 <= row["at"] <= _LATEST:
        return "'at' must be a time in epoch seconds"
    latency = row.get("latency_ms")
    if latency is not None and (not _number(latency) or latency < 0):
        return "'latency_ms' must be a non-negative number"
    tokens = row.get("answer_tokens")
    if tokens is not None and (not _number(tokens) or tokens < 0):
        return "'answer_tokens' must be a non-negative number"
    return None


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
