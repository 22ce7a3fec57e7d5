"""The accuracy commands ``eval``, ``calibrate`` and ``finetune``, over :mod:`modelcache.lab`.

The lab (and numpy, torch, sentence-transformers behind it) is imported only when one runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..config import CacheConfig
from ._common import UserError, friendly, get_state

F = TypeVar("F", bound=Callable[..., Any])


def _reads_files(func: F) -> F:
    """:func:`friendly`, and a ValueError is a user error: the lab's file readers report
    malformed rows with it ("pairs.jsonl:3: ...")."""
    return friendly(func, inputs=(ValueError,))


def _config(ctx: typer.Context, **overrides: Any) -> CacheConfig:
    """The config from the global options (--config, --embedder, …), then this command's."""
    return get_state(ctx).cache_config(**overrides)


@_reads_files
def eval_command(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="Labelled pairs (JSONL), origin/similar JSON, or conversations JSON.",
            exists=True,
            dir_okay=False,
        ),
    ],
    threshold: Annotated[
        list[float] | None,
        typer.Option(
            "--threshold", "-t", help="Cosine threshold(s) to sweep; default: the config's."
        ),
    ] = None,
    guard: Annotated[
        bool | None, typer.Option("--guard/--no-guard", help="Answer-determining-token guard.")
    ] = None,
    verifier: Annotated[
        str | None, typer.Option(help="Cross-encoder directory used as verifier.")
    ] = None,
    verifier_threshold: Annotated[float | None, typer.Option(help="Verifier score needed.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N rows.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the table (markdown) here.")
    ] = None,
) -> None:
    """Precision, recall, F1, false-hit rate and lookup p50 of the cache on a labelled file."""
    from ..lab.evaluation import evaluate_file, markdown_table

    cfg = _config(
        ctx,
        guard=guard,
        verifier=verifier,
        verifier_threshold=verifier_threshold,
    )
    thresholds = list(threshold) if threshold else [None]
    results = evaluate_file(file, cfg, limit=limit, thresholds=thresholds)
    table = markdown_table(results, title=f"{file.name} · embedder {cfg.embedder}")
    typer.echo(table)
    if output is not None:
        output.write_text(table + "\n", encoding="utf-8")


@_reads_files
def calibrate_command(
    ctx: typer.Context,
    pairs: Annotated[
        Path, typer.Argument(help="JSONL of {a, b, same_answer}.", exists=True, dir_okay=False)
    ],
    target_precision: Annotated[
        float, typer.Option(help="Precision the thresholds must reach.")
    ] = 0.95,
    guard: Annotated[
        bool | None, typer.Option("--guard/--no-guard", help="Count the guard's rejections.")
    ] = None,
    verifier: Annotated[
        str | None, typer.Option(help="Cross-encoder dir: calibrate its threshold too.")
    ] = None,
    contexts: Annotated[
        Path | None,
        typer.Option(
            help="Conversations JSON (multiturn_dev format) for the context and follow-up "
            "thresholds.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="A random sample of N pairs.")] = None,
    save: Annotated[
        Path | None, typer.Option(help="Write the thresholds into this TOML config.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="--save even when a target was not reached.")
    ] = False,
) -> None:
    """Pick thresholds (short, long, context, follow-up, verifier) reaching a target precision."""
    from ..embedding import build_embedder
    from ..lab.calibration import (
        calibrate,
        context_pairs_from_conversations,
        followup_pairs_from_conversations,
        save_toml,
    )
    from ..lab.finetune import load_pairs

    cfg = _config(ctx, guard=guard, verifier=verifier)
    rows = load_pairs(pairs, limit=limit)
    emb = build_embedder(
        cfg.embedder,
        threads=None,
        backend=cfg.embedder_backend,
        onnx_cache_dir=cfg.onnx_cache_dir,
    )
    guard_obj = None
    if cfg.guard:
        from ..guard import Guard

        guard_obj = Guard()
    verifier_obj = None
    if cfg.verifier:
        from ..verifier import load_verifier

        verifier_obj = load_verifier(cfg.verifier)
    context_pairs = followup_pairs = None
    if contexts is not None:
        from ..lab.evaluation import load_conversations

        conversations = load_conversations(contexts)
        context_pairs = context_pairs_from_conversations(conversations)
        followup_pairs = followup_pairs_from_conversations(conversations)
    cal = calibrate(
        rows,
        emb,
        target_precision,
        guard=guard_obj,
        verifier=verifier_obj,
        long_query_tokens=cfg.long_query_tokens,
        context_pairs=context_pairs,
        followup_pairs=followup_pairs,
    )
    typer.echo(f"calibrated on {cal.pairs} pairs · embedder {cfg.embedder} · guard {cfg.guard}")
    typer.echo("| setting | value | precision | recall | predicted | target reached |")
    typer.echo("|---|---:|---:|---:|---:|---|")
    names = {
        "short": "similarity_threshold",
        "long": "similarity_threshold_long",
        "verifier": "verifier_threshold",
        "context": "context_threshold",
        "followup": "similarity_threshold_followup",
    }
    for attr, key in names.items():
        op = getattr(cal, attr)
        if op is not None:
            typer.echo(
                f"| {key} | {op.threshold:.3f} | {op.precision:.3f} | {op.recall:.3f} | "
                f"{op.predicted} | {'yes' if op.reached else 'NO'} |"
            )
    typer.echo(
        f"overall: precision {cal.overall_precision:.3f}, recall {cal.overall_recall:.3f} "
        f"(the recall it costs: {1 - cal.overall_recall:.3f})"
    )
    for note in cal.notes:
        typer.echo(f"note: {note}")
    missed = [key for attr, key in names.items() if (op := getattr(cal, attr)) and not op.reached]
    if save is not None and missed and not force:
        raise UserError(
            f"not saved: {', '.join(missed)} did not reach precision {target_precision}; "
            "label more pairs, lower --target-precision, or pass --force to save anyway"
        )
    if save is not None:
        save_toml(save, cal.config_values())
        typer.echo(f"saved {json.dumps(cal.config_values())} to {save}")


@_reads_files
def finetune_command(
    pairs: Annotated[
        Path,
        typer.Argument(
            help="JSONL of {a, b, same_answer} (labelled or mined from the query log).",
            exists=True,
            dir_okay=False,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output folder: OUT/embedder and OUT/verifier.")],
    train_verifier: Annotated[
        bool,
        typer.Option(
            "--train-verifier/--no-train-verifier", help="Also train a cross-encoder verifier."
        ),
    ] = False,
    train_embedder: Annotated[
        bool, typer.Option("--train-embedder/--no-train-embedder", help="Train the bi-encoder.")
    ] = True,
    base: Annotated[
        str | None, typer.Option(help="Start from this model dir (default: shipped MiniLM).")
    ] = None,
    max_pairs: Annotated[
        int | None, typer.Option(help="Train on a random sample of N pairs.")
    ] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the data.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 32,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    mine: Annotated[
        str, typer.Option(help="Hard-negative mining: tfidf, model or none.")
    ] = "tfidf",
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
) -> None:
    """Fine-tune the embedder (and optionally a verifier) on same-answer pairs, on CPU."""
    from ..lab import finetune

    if not (train_embedder or train_verifier):
        raise UserError("nothing to train: use --train-embedder and/or --train-verifier")
    rows = finetune.load_pairs(pairs, limit=max_pairs)
    positives = sum(p.same_answer for p in rows)
    typer.echo(f"{len(rows)} pairs ({positives} same-answer) from {pairs}")
    if positives == 0:
        raise UserError(f"{pairs} has no same_answer pairs")
    mined: dict[str, str] = {}
    if mine != "none":
        mined = finetune.mine_hard_negatives(rows, base, method=mine)
        typer.echo(f"mined {len(mined)} hard negatives ({mine})")
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    trainers: dict[str, Callable[..., finetune.TrainReport]] = {}
    if train_embedder:
        trainers["embedder"] = finetune.train_embedder
    if train_verifier:
        trainers["verifier"] = finetune.train_verifier
    for kind, train in trainers.items():  # the setting and the output folder share the name
        rep = train(
            rows,
            out / kind,
            base=base,
            epochs=epochs,
            batch_size=batch_size,
            mined=mined,
            max_steps=max_steps,
            threads=threads,
        )
        typer.echo(f"{kind}: {rep.steps} steps in {rep.seconds:.0f}s, loss {rep.final_loss:.4f}")
        lines.append(f'{kind} = "{(out / kind).resolve()}"')
    typer.echo("config (TOML) — calibrate the thresholds for the new model next:")
    for line in lines:
        typer.echo("  " + line)
