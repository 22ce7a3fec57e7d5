"""A cache on an English-only embedder warns once when non-Latin-script text is inserted."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from modelcache import Cache, FakeEmbedder, Request
from modelcache._language import english_only, mostly_non_latin


class _NamedFake(FakeEmbedder):
    """The fake embedder under another model's name."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._model_name = name

    @property
    def name(self) -> str:
        return self._model_name


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "English-only" in r.getMessage()]


def test_detection() -> None:
    assert mostly_non_latin("你是谁?")
    assert mostly_non_latin("Как сбросить пароль?")
    assert mostly_non_latin("如何 reset 密码和账户设置")
    assert not mostly_non_latin("How do I reset my password?")
    assert not mostly_non_latin("Où est la café? Tiếng Việt")
    assert not mostly_non_latin("What is α + β in 2024?")
    assert not mostly_non_latin("12345 ???")
    assert english_only("st:all-MiniLM-L6-v2")
    assert not english_only("use:multilingual-v3")


def test_chinese_insert_into_english_only_cache_warns_once_without_the_text(
    make_cache: Callable[..., Cache], caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache(embedder=_NamedFake("st:all-MiniLM-L6-v2"))
    caplog.set_level(logging.WARNING, logger="modelcache")
    cache.insert(Request.from_text("How do I reset my password?"), "link")
    assert not _warnings(caplog)
    cache.insert(Request.from_text("你是谁?"), "assistant")
    cache.insert_many([(Request.from_text("如何重置密码?"), "link")])
    [record] = _warnings(caplog)
    assert record.levelno == logging.WARNING
    assert "multilingual" in record.getMessage()
    assert "你" not in record.getMessage() and "密码" not in record.getMessage()


def test_multilingual_embedder_does_not_warn(
    make_cache: Callable[..., Cache], caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache(embedder=_NamedFake("use:multilingual-v3"))
    caplog.set_level(logging.WARNING, logger="modelcache")
    cache.insert(Request.from_text("你是谁?"), "assistant")
    assert not _warnings(caplog)
