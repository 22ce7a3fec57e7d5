"""One-word-differs pairs: traps served and paraphrases recalled, per kind, at the defaults.

Method (``../shared/data/README.md``): through the public ``Cache`` with the shipped MiniLM and
the default configuration, insert every distinct ``a`` of a set into one partition (answer: that
text), then look up every ``b``. A trap (``same_answer`` false) is *served* when the lookup
returns any answer; a paraphrase is *recalled* when it returns its own ``a``. Sets:
``hard_pairs_dev`` (shared data, English and Chinese) and
``benchmarks/data/hard_pairs_oneword.jsonl`` (written for this project: traps of nine kinds,
near-repeats and rewordings; the rows marked ``"split": "heldout"`` were written after the
guard's rules were tuned on the others and are also reported alone). Each set is run
with the guard and with cosine only, so the guard's share is visible.

    python benchmarks/hard_pairs.py [--out benchmarks/results/hard_pairs.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from _common import DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modelcache import Cache, CacheConfig, Request
from modelcache.embedding import build_embedder
from modelcache.lab.evaluation import EvalRow, MemoEmbedder, insert_rows, load_rows

HERE = Path(__file__).resolve().parent
ONEWORD = HERE / "data" / "hard_pairs_oneword.jsonl"


def served(memo: MemoEmbedder, rows: Sequence[EvalRow], guard: bool) -> list[tuple[EvalRow, bool]]:
    """Per row, whether the lookup of ``b`` was answered (traps) or answered right (paraphrases)."""
    out = []
    with tempfile.TemporaryDirectory(prefix="mc-hard-") as tmp:
        cfg = CacheConfig(path=tmp, guard=guard, query_log=False)
        with Cache(cfg, embedder=memo) as cache:
            insert_rows(cache, rows)
            for row in rows:
                hit = cache.lookup(Request.from_text(row.b))
                ok = hit is not None and (not row.same_answer or hit.answer == row.a)
                out.append((row, ok))
    return out


def table(name: str, memo: MemoEmbedder, rows: Sequence[EvalRow]) -> str:
    """Traps served and paraphrases recalled per kind, guard vs cosine only."""
    with_guard, without = served(memo, rows, True), served(memo, rows, False)
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for (row, g), (_, c) in zip(with_guard, without, strict=True):
        key = f"{'trap' if not row.same_answer else 'paraphrase'}: {row.kind}"
        per_kind[key][0] += 1
        per_kind[key][1] += g
        per_kind[key][2] += c
    lines = [
        f"#### {name} ({len(rows)} pairs)",
        "",
        "| kind | pairs | served, default (guard) | served, cosine only |",
        "|---|---:|---:|---:|",
    ]
    totals = {"trap": [0, 0, 0], "paraphrase": [0, 0, 0]}
    for key in sorted(per_kind):
        n, g, c = per_kind[key]
        lines.append(f"| {key} | {n} | {g} | {c} |")
        for i, v in enumerate((n, g, c)):
            totals[key.split(":")[0]][i] += v
    for label, (n, g, c) in totals.items():
        if n:
            lines.append(f"| **all {label}s** | {n} | **{g} ({g / n:.1%})** | {c} ({c / n:.1%}) |")
    return "\n".join(lines)


def _heldout(row: EvalRow) -> bool:
    """Rows written after the guard rules were tuned (``"split": "heldout"`` in the file)."""
    return row.b in HELDOUT


HELDOUT = {
    json.loads(line)["b"]
    for line in ONEWORD.read_text(encoding="utf-8").splitlines()
    if line.strip() and json.loads(line).get("split") == "heldout"
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    args = parser.parse_args(argv)
    memo = MemoEmbedder(build_embedder("minilm", threads=1))
    shared = load_rows(DATA / "hard_pairs_dev.jsonl")
    sets = [
        ("hard_pairs_dev en", [r for r in shared if r.lang == "en"]),
        ("hard_pairs_dev zh", [r for r in shared if r.lang == "zh"]),
        ("hard_pairs_oneword", load_rows(ONEWORD)),
        ("hard_pairs_oneword, held-out split only", [r for r in load_rows(ONEWORD) if _heldout(r)]),
    ]
    out = []
    for name, rows in sets:
        memo.warm([r.a for r in rows] + [r.b for r in rows])
        out.append(table(name, memo, rows))
        print(out[-1] + "\n", flush=True)
    if args.out:
        Path(args.out).write_text("\n\n".join(out) + "\n", encoding="utf-8")
        print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
