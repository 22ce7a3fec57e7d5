"""The int8-quantised ONNX variant (issue 14, item 1): an option with its own name and
thresholds, vectors close to fp32, never read against an fp32-written cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from modelcache import Cache, CacheConfig, IncompatibleCacheError, Request
from modelcache.embedding import DEFAULT_THRESHOLDS, OnnxSentenceEmbedder, build_embedder
from modelcache.embedding.onnx import INT8_THRESHOLDS

pytestmark = pytest.mark.model

TEXTS = [
    "How do I reset my password?",
    "What is the capital of France?",
    "a",
    "Why do some people believe the moon landing was faked?",
    "找出所有能被13和23整除的数字,用Python实现",
    "Write a Python function that finds all numbers divisible by 13 and 23.",
]


@pytest.fixture(scope="module")
def int8() -> OnnxSentenceEmbedder:
    embedder = build_embedder("minilm", backend="onnx-int8")
    assert isinstance(embedder, OnnxSentenceEmbedder)
    return embedder


def test_int8_loads_beside_the_fp32_export_with_its_own_name(
    int8: OnnxSentenceEmbedder, minilm: OnnxSentenceEmbedder
) -> None:
    assert int8.backend == "onnx"
    assert int8.name == minilm.name + ":int8"
    assert int8.dimension == minilm.dimension
    assert (int8.onnx_path.parent / "model.int8.onnx").is_file()
    assert int8.onnx_path == minilm.onnx_path, "one export folder per model"


def test_int8_vectors_are_close_to_fp32_but_not_equal(
    int8: OnnxSentenceEmbedder, minilm: OnnxSentenceEmbedder
) -> None:
    quantised, full = int8.embed(TEXTS), minilm.embed(TEXTS)
    assert np.allclose(np.linalg.norm(quantised, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(quantised * full, axis=1)
    assert cosines.min() > 0.97, f"worst cosine {cosines.min():.4f}"
    assert cosines.max() < 0.99999, "int8 vectors differ from fp32: hence the separate name"


def test_int8_thresholds_resolve_from_its_calibration(tmp_path: Path) -> None:
    config = CacheConfig(path=str(tmp_path / "c"), embedder_backend="onnx-int8")
    with Cache(config) as cache:
        assert cache.embedder.name.endswith(":int8")
        assert cache.thresholds == INT8_THRESHOLDS
        cache.insert(Request.from_text("How do I reset my password?"), "reset it")
        hit = cache.lookup(Request.from_text("How can I reset my password?"))
    assert hit is not None and hit.kind == "semantic"
    assert INT8_THRESHOLDS != DEFAULT_THRESHOLDS


def test_a_cache_written_with_fp32_refuses_int8(
    tmp_path: Path, minilm: OnnxSentenceEmbedder
) -> None:
    path = str(tmp_path / "c")
    with Cache(CacheConfig(path=path), embedder=minilm) as cache:
        cache.insert(Request.from_text("How do I reset my password?"), "reset it")
    with pytest.raises(IncompatibleCacheError):
        Cache(CacheConfig(path=path, embedder_backend="onnx-int8"))


def test_a_failed_quantisation_raises_instead_of_using_fp32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import modelcache.embedding.onnx as onnx_module

    def broken(source: Path, target: Path) -> Path:
        raise RuntimeError("quantisation failed")

    monkeypatch.setattr(onnx_module, "quantize_onnx", broken)
    embedder = OnnxSentenceEmbedder(quantize=True)
    with caplog.at_level(logging.WARNING), pytest.raises(Exception, match="int8"):
        embedder.embed(["x"])
    assert "using torch" not in caplog.text
