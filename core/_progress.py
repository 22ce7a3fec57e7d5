"""One look for every progress bar of the package: rich bars on stderr.

``TQDM_DISABLE=1`` turns them off, the switch that also silences the tqdm bars of
sentence-transformers and transformers (fine-tuning), so one variable quiets them all.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["bar", "progress"]


def progress(label: str, *, disable: bool = False) -> Progress:
    """A rich progress display on stderr; off when ``disable`` or ``TQDM_DISABLE`` is set."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True, highlight=False),
        disable=disable or bool(os.environ.get("TQDM_DISABLE")),
    )


@contextlib.contextmanager
def bar(label: str, total: int, *, disable: bool = False) -> Iterator[Callable[[int], None]]:
    """One bar of ``total`` steps; yields ``advance(n)``."""
    display = progress(label, disable=disable)
    with display:
        task = display.add_task(label, total=total)

        def advance(steps: int = 1) -> None:
            display.advance(task, steps)

        yield advance
