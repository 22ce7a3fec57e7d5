"""Accuracy at the default configuration only: qqp_dev, hard_pairs_dev, multiturn_dev.

The quick before/after check of a change to acceptance: the same protocol as
``benchmarks/accuracy.py`` (``../shared/data/README.md``), one setting (the embedder's
calibrated thresholds and the guard), MiniLM. It uses whichever ``modelcache`` is importable,
so a before/after is two runs with ``PYTHONPATH`` pointing at the two trees.

    python benchmarks/accuracy_defaults.py --limit 2000 --label after
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import DATA, Bench, Setting

from modelcache import Cache
from modelcache.lab.evaluation import (
    insert_conversations,
    load_conversations,
    load_rows,
    markdown_table,
    run_multiturn,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=2000, help="qqp_dev rows")
    parser.add_argument("--label", default="MiniLM")
    args = parser.parse_args(argv)
    bench = Bench("minilm", args.label, None)
    default = [Setting(None, True)]
    results = bench.pairs(load_rows(DATA / "qqp_dev.jsonl", args.limit), default, "qqp")
    results += bench.pairs(load_rows(DATA / "hard_pairs_dev.jsonl"), default, "hard")
    convs = load_conversations(DATA / "multiturn_dev.json")
    bench.memo.warm([t for c in convs for t in (c.u0, c.u0_duplicate, c.u1, c.u1_duplicate)])
    with (
        tempfile.TemporaryDirectory(prefix="mc-mt-") as tmp,
        Cache(bench._config(tmp, default[0]), embedder=bench.memo) as cache,
    ):
        insert_conversations(cache, convs)
        out = run_multiturn(cache, convs, f"{args.label}: multiturn_dev", memo=bench.memo)
        results += list(out.values())
    titles = [f"qqp_dev ({args.limit})", "hard_pairs_dev (24)"]
    for r, t in zip(results, titles, strict=False):
        r.name = f"{r.name} · {t}"
    print(markdown_table(results, title=f"defaults · {args.label}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
