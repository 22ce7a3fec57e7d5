"""Helpers the benchmark scripts share (standard library only: GPTCache's driver imports it too)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DATA = Path(
    os.environ.get("MODELCACHE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """``--data``: the shared evaluation data (``$MODELCACHE_DATA`` or ../shared/data)."""
    parser.add_argument("--data", type=Path, default=DATA)


def write_report(lines: list[str], out: str | Path | None) -> None:
    """Print a benchmark's report and, given ``out``, write it there (folders created)."""
    report = "\n".join(lines)
    print(report)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(report, encoding="utf-8")


def proc_rss() -> dict[str, float]:
    """Current and peak RSS of this process, MiB (Linux ``/proc/self/status``)."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(("VmRSS", "VmHWM")):
                key, kib = line.split(":")
                values[key] = int(kib.split()[0]) / 1024
    return {"rss_mib": values["VmRSS"], "peak_mib": values["VmHWM"]}
