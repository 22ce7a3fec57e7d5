"""Fixtures: a CliRunner and an invoke helper that targets a fresh cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import Invoke
from typer.testing import CliRunner, Result

from modelcache.cli import app


@pytest.fixture
def data_path(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def invoke(data_path: Path) -> Invoke:
    """Run `modelcache --path <tmp> --embedder fake ARGS...`."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None, path: Path | None = None) -> Result:
        base = ["--path", str(path or data_path), "--embedder", "fake"]
        return runner.invoke(app, [*base, *args], input=input)

    return run
