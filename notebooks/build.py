"""Build the notebooks from their sources in ``notebooks/src`` and execute them in place.

Each source is a percent-format script (``# %%`` starts a code cell, ``# %% [markdown]`` a
markdown cell whose lines start with ``# ``), so the notebooks are reviewed as plain Python and
committed with the outputs of a real run::

    .venv/bin/python notebooks/build.py            # every notebook
    .venv/bin/python notebooks/build.py 03 04      # the ones whose name starts with 03 or 04
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
TIMEOUT_S = 120  # per cell; a notebook is meant to finish well under a minute


def kernel_name() -> str:
    """The installed kernel that runs this interpreter (the venv's ``python3``)."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().get_all_specs()
    for name, spec in specs.items():
        argv = spec.get("spec", {}).get("argv", [])
        if argv and Path(argv[0]).resolve() == Path(sys.executable).resolve():
            return name
    return "python3"


def parse(source: str) -> list[nbformat.NotebookNode]:
    """Cells of a percent-format script; ``# ruff:`` directives are dropped."""
    cells: list[nbformat.NotebookNode] = []
    kind, lines = None, []

    def flush() -> None:
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            text = "\n".join(
                line[2:] if line.startswith("# ") else line.lstrip("#") for line in text.split("\n")
            )
            cells.append(nbformat.v4.new_markdown_cell(text))
        elif kind == "code" and text.strip():
            cells.append(nbformat.v4.new_code_cell(text))

    for line in source.splitlines():
        if line.startswith("# ruff:"):
            continue
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def build(source: Path, *, execute: bool = True) -> tuple[Path, float]:
    """Write ``notebooks/<name>.ipynb`` from its source, executed; returns path and seconds."""
    nb = nbformat.v4.new_notebook(cells=parse(source.read_text(encoding="utf-8")))
    name = kernel_name()
    nb.metadata["kernelspec"] = {"name": name, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    started = time.perf_counter()
    if execute:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        client = NotebookClient(
            nb,
            timeout=TIMEOUT_S,
            kernel_name=name,
            resources={"metadata": {"path": str(HERE)}},
        )
        client.execute()
    seconds = time.perf_counter() - started
    target = HERE / f"{source.stem}.ipynb"
    nbformat.write(nb, target)
    return target, seconds


def main(argv: list[str]) -> int:
    """Build the notebooks named by prefix (all when none is given)."""
    sources = sorted(SOURCES.glob("*.py"))
    if argv:
        sources = [s for s in sources if any(s.stem.startswith(a) for a in argv)]
    for source in sources:
        target, seconds = build(source)
        print(f"{target.name}: executed in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
