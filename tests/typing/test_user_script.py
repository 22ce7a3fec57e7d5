"""The type-checked user script also runs: its claims hold at runtime."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("user_script.py")


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("user_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_user_script_runs(tmp_path: Path) -> None:
    stats = _script().main(str(tmp_path / "cache"))
    assert stats.entries == 1 and stats.hits == 1


async def test_the_async_part_runs(tmp_path: Path) -> None:
    stats = await _script().amain(str(tmp_path / "cache"))
    assert stats.entries == 1 and stats.hits == 1
