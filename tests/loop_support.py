"""Helpers of the tests that check an async call leaves the event loop running (engine and
adapters): a model that blocks its thread, and a ticker that counts how often the loop ran."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import numpy as np

from modelcache import FakeEmbedder

T = TypeVar("T")


class SlowEmbedder(FakeEmbedder):
    """FakeEmbedder that blocks its thread for ``delay`` seconds per call (a CPU-bound model)."""

    def __init__(self, delay: float = 0.3) -> None:
        super().__init__()
        self.delay = delay

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Sleep (blocking), then embed."""
        time.sleep(self.delay)
        return super().embed(texts)


async def ticks_during(work: Awaitable[T], period: float = 0.01) -> tuple[T, int, float]:
    """Await ``work`` while a coroutine ticks every ``period``; return result, ticks, seconds."""
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(period)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    try:
        result = await work
    finally:
        done.set()
        await task
    return result, ticks, time.perf_counter() - started
