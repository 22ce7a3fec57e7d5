"""Start-up faults (issue 13, item 6): a corrupt Chroma file starts the cache degraded, a
corrupt or emptied SQLite file is refused loudly, and one embedded folder is one process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from chromadb.api.client import SharedSystemClient

from modelcache import BackendError, Cache, CacheConfig, FakeEmbedder, Request
from modelcache.storage.folder_lock import FolderInUseError

Q = "How do I reset my password?"
PARAPHRASE = "How do I reset my password please?"


def filled(make_cache: Callable[..., Cache], folder: Path) -> None:
    cache = make_cache(folder)
    cache.insert(Request.from_text(Q), "answer")
    cache.close()
    SharedSystemClient.clear_system_cache()  # the next open reads the folder, as a new process


def test_a_corrupt_chroma_file_starts_the_cache_exact_only(
    make_cache: Callable[..., Cache], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "cache"
    filled(make_cache, folder)
    with open(folder / "chroma" / "chroma.sqlite3", "r+b") as fh:
        fh.write(os.urandom(4096))
    with caplog.at_level(logging.ERROR, logger="modelcache"):
        cache = make_cache(folder, embedder=FakeEmbedder())
    assert cache.degraded is not None
    assert any("DEGRADED" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    hit = cache.lookup(Request.from_text(Q))
    assert hit is not None and hit.exact, "exact lookups still answer from SQL"
    assert cache.lookup(Request.from_text(PARAPHRASE), threshold=0.5) is None
    cache.insert(Request.from_text("a new question"), "new")  # stored, exact-only for now
    assert cache.lookup(Request.from_text("a new question")) is not None
    report = cache.ready()
    assert report["sql"] == "ok" and report["vectors"].startswith("degraded")
    with pytest.raises(BackendError, match="repair"):
        cache.repair()


@pytest.mark.parametrize("damage", ["garbage", "empty"])
def test_a_damaged_sqlite_file_is_refused_and_left_alone(
    make_cache: Callable[..., Cache], tmp_path: Path, damage: str
) -> None:
    """Before the fix an emptied file reopened silently as an empty cache."""
    folder = tmp_path / "cache"
    filled(make_cache, folder)
    db = folder / "modelcache.db"
    if damage == "garbage":
        with open(db, "r+b") as fh:
            fh.write(b"\0" * 100)
    else:
        db.write_bytes(b"")
    before = db.read_bytes()
    with pytest.raises(BackendError, match=r"corrupt|empty") as raised:
        make_cache(folder, embedder=FakeEmbedder())
    assert "backup" in str(raised.value)
    assert db.read_bytes() == before, "the damaged file is kept for recovery"
    SharedSystemClient.clear_system_cache()
    db.rename(folder / "moved-aside.db")  # what the error tells a user to do
    assert make_cache(folder, embedder=FakeEmbedder()).stats()["entries"] == 0


HOLDER = textwrap.dedent(
    """
    import sys
    from modelcache import Cache, CacheConfig, FakeEmbedder
    cache = Cache(CacheConfig(path=sys.argv[1]), embedder=FakeEmbedder())
    print("open", flush=True)
    sys.stdin.readline()
    cache.close()
    """
)


def test_a_second_process_on_one_embedded_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(FolderInUseError, match=r"chroma run.*PostgreSQL"):
            Cache(CacheConfig(path=str(folder)), embedder=FakeEmbedder())
        sibling = Cache(CacheConfig(path=str(folder / "other")), embedder=FakeEmbedder())
        sibling.close()  # another folder is fine
    finally:
        assert holder.stdin is not None
        holder.stdin.write("done\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
    with Cache(CacheConfig(path=str(folder)), embedder=FakeEmbedder()) as cache:
        assert cache.stats()["entries"] == 0  # free again once the other process closed


def test_the_first_lookup_of_a_new_process_is_not_cut_by_the_deadline(
    make_cache: Callable[..., Cache], tmp_path: Path
) -> None:
    """The Chroma client opens on first use (importing chromadb takes about a second): that
    one-time cost is no stuck store, so the first semantic lookup after start still hits."""
    folder = tmp_path / "cache"
    filled(make_cache, folder)
    code = textwrap.dedent(
        f"""
        import sys
        from modelcache import Cache, CacheConfig, FakeEmbedder, Request
        config = CacheConfig(path={str(folder)!r}, lookup_timeout=0.2)
        with Cache(config, embedder=FakeEmbedder()) as cache:
            assert "chromadb" not in sys.modules, "the client opens on first use"
            hit = cache.lookup(Request.from_text({PARAPHRASE!r}))
            print(hit.kind if hit else "miss", cache.stats()["timeouts"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["semantic", "0"]
