"""One process per embedded cache folder, enforced with an OS lock on a file in it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..errors import BackendError

__all__ = ["FolderInUseError", "FolderLock"]

_LOCK_NAME = ".modelcache.lock"

# A flock belongs to an open file: two opens in one process would lock each other out, so the
# caches of one process share one descriptor per folder, counted.
_held: dict[str, tuple[int, int]] = {}  # folder -> (fd, users)
_guard = threading.Lock()


class FolderInUseError(BackendError):
    """Another process has this embedded cache folder open."""


class FolderLock:
    """Held while a cache uses an embedded folder; the OS releases it when a process dies."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = str(Path(folder).resolve())
        self._released = False
        with _guard:
            fd, users = _held.get(self.folder, (-1, 0))
            if users == 0:
                fd = _lock(Path(self.folder) / _LOCK_NAME)
            _held[self.folder] = (fd, users + 1)

    def release(self) -> None:
        """Let other processes open the folder (once the last cache of this process closes)."""
        if self._released:
            return
        self._released = True
        with _guard:
            fd, users = _held.pop(self.folder, (-1, 0))
            if users > 1:
                _held[self.folder] = (fd, users - 1)
            elif fd >= 0:
                os.close(fd)  # closing the descriptor drops the lock


def _lock(path: Path) -> int:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, documented limitation
        return -1
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise FolderInUseError(
            f"the cache folder {path.parent} is already open in another process; an embedded "
            "cache (Chroma folder + SQLite) supports one process. For several processes or "
            "servers, run a Chroma server (`chroma run`, chroma_url=...) and MySQL/MariaDB or "
            "PostgreSQL (sql_url=...), or route every process through one `modelcache serve`."
        ) from exc
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd
