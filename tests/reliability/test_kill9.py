"""kill -9 while inserting (issue 13, proof b): every acknowledged insert is found after the
folder is reopened, and no row lacks its vector (an insert writes its vector first)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from chromadb.api.client import SharedSystemClient

from modelcache import Cache, CacheConfig, FakeEmbedder, Request

ROUNDS = 10

# Started ahead (the import is the slow part), then told to open the folder and insert until
# killed; "ack" is printed only after insert() returned.
CHILD = textwrap.dedent(
    """
    import sys
    from modelcache import Cache, CacheConfig, FakeEmbedder, Request

    print("ready", flush=True)
    sys.stdin.readline()
    round_ = sys.argv[2]
    cache = Cache(CacheConfig(path=sys.argv[1]), embedder=FakeEmbedder())
    cache.insert(Request.from_text(f"round {round_} warm-up"), -1)  # opens Chroma (lazy)
    print("open", flush=True)
    i = 0
    while True:
        cache.insert(Request.from_text(f"round {round_} question {i}"), i)
        print(f"ack {i}", flush=True)
        i += 1
    """
)


def test_kill_9_while_inserting_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = random.Random(13)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(folder), str(r)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for r in range(ROUNDS)
    ]
    acked: list[str] = []
    try:
        for r, child in enumerate(children):
            assert child.stdin is not None and child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "open", f"round {r} could not reopen"
            lines: list[str] = []
            reader = threading.Thread(target=lines.extend, args=(child.stdout,))
            reader.start()
            time.sleep(rng.uniform(0.05, 0.6))
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            reader.join(timeout=30)
            acked += [
                f"round {r} question {line.split()[1]}" for line in lines if line.startswith("ack")
            ]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)
    assert len(acked) >= ROUNDS, "too few inserts were acknowledged to prove anything"
    SharedSystemClient.clear_system_cache()
    with Cache(CacheConfig(path=str(folder)), embedder=FakeEmbedder()) as cache:
        missing = [q for q in acked if cache.lookup(Request.from_text(q), exact_only=True) is None]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged inserts lost"
        report = cache.check()
        assert not report.rows_without_vector, report
        assert len(report.vectors_without_row) <= ROUNDS  # at most the insert each kill cut
        cache.repair()
        assert cache.check().ok
