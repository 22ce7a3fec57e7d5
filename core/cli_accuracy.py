"""Accuracy commands of the CLI (eval, calibrate, finetune); filled in by the accuracy work."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the accuracy commands to the ``modelcache`` application."""
