"""Every notebook in notebooks/ runs offline, top to bottom, without an error, in under 2 min.

The notebooks are executed the way a reader runs them (cwd ``notebooks/``), on a kernel that
is this interpreter, with provider API keys removed so they use the simulated LLM.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
LIMIT_S = 120
KERNEL = "modelcache-tests"
PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY")
EVAL_DATA = Path(os.environ.get("MODELCACHE_DATA", ROOT.parent / "shared" / "data"))

sys.path.insert(0, str(NOTEBOOK_DIR))
import build  # noqa: E402  (notebooks/build.py: the percent-format parser)


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec for this very interpreter, offline switches on, provider keys off."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "modelcache tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        "TQDM_DISABLE": "1",
        "MPLBACKEND": "Agg",
    }.items():
        monkeypatch.setenv(name, value)
    for name in PROVIDER_KEYS:
        monkeypatch.delenv(name, raising=False)
    return KERNEL


def test_every_source_has_its_notebook() -> None:
    sources = {p.stem for p in (NOTEBOOK_DIR / "src").glob("*.py")}
    assert sources, "no notebook sources in notebooks/src"
    assert sources == {p.stem for p in NOTEBOOKS}, "run `.venv/bin/python notebooks/build.py`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_matches_its_source(path: Path) -> None:
    source = NOTEBOOK_DIR / "src" / f"{path.stem}.py"
    assert source.exists(), f"{path.name} has no source in notebooks/src"
    expected = [(c.cell_type, c.source) for c in build.parse(source.read_text(encoding="utf-8"))]
    committed = nbformat.read(path, as_version=4)
    assert [(c.cell_type, c.source) for c in committed.cells] == expected, (
        f"{path.name} is stale: run `.venv/bin/python notebooks/build.py {path.stem[:2]}`"
    )
    assert any(c.get("outputs") for c in committed.cells if c.cell_type == "code"), (
        f"{path.name} was committed without its outputs"
    )


@pytest.mark.model
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, kernel_env: str) -> None:
    if "accuracy" in path.stem and not (EVAL_DATA / "hard_pairs_dev.jsonl").exists():
        pytest.skip(f"evaluation data not found in {EVAL_DATA} (set MODELCACHE_DATA)")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=LIMIT_S,
        kernel_name=kernel_env,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    elapsed = time.perf_counter() - started
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    assert elapsed < LIMIT_S, f"{path.name} took {elapsed:.0f} s (limit {LIMIT_S} s)"
