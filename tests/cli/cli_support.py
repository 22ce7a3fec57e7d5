"""Checks the CLI tests share: a command's JSON output, and a one-line user error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from typer.testing import Result

Invoke = Callable[..., Result]


def as_json(result: Result) -> Any:
    """The JSON a successful command printed."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_user_error(result: Result, text: str, code: int = 1) -> None:
    """A refused command: its exit code, its message on stderr, and no traceback."""
    assert result.exit_code == code, result.output
    assert text in result.stderr
    assert "Traceback" not in result.output
