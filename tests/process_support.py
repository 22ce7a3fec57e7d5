"""Child processes that tests start (servers): a free loopback port, waiting until one answers,
and stopping them."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    """Ask a child this test started to stop, and kill it if it has not within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(
    url: str, proc: subprocess.Popen[bytes], *, timeout: float = 60.0, log: Path | None = None
) -> None:
    """Poll ``url`` until it answers 200; fail with the child's output (``log``, else its stdout
    pipe) if the child exits first, or when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            if log is not None:
                out = log.read_text(errors="replace")[-3000:]
            else:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"{proc.args} exited with {proc.returncode}: {out}")
        time.sleep(0.2)
    raise AssertionError(f"{proc.args} did not start within {timeout} s")
