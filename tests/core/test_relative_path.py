"""A relative ``path`` names a folder of the working directory at the time the cache opens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelcache import Cache, Request


def test_same_relative_path_in_another_working_directory_is_another_cache(
    make_cache: Callable[..., Cache], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chroma keeps one client per folder name in a process: a relative name reused after a
    change of directory must not write into the first directory's vector store."""
    for name, question in (("a", "How do I reset my password?"), ("b", "Where is my invoice?")):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        cache = make_cache("modelcache_data")
        cache.insert(Request.from_text(question), name)
        report = cache.check()
        assert report.ok, report
        cache.close()
        assert (tmp_path / name / "modelcache_data" / "chroma").is_dir()
