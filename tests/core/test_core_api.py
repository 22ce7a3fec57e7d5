"""The public API is declared once, in ``modelcache.__all__``, and every name imports."""

from __future__ import annotations

import importlib
import subprocess
import sys

import modelcache

EXPECTED = {
    "BackendError",
    "Cache",
    "CacheClosedError",
    "CacheConfig",
    "CacheStats",
    "ConfigError",
    "Embedder",
    "FakeEmbedder",
    "Hit",
    "IncompatibleCacheError",
    "IntegrityReport",
    "LLMLayerEmbedder",
    "LangChainEmbedder",
    "LlamaIndexEmbedder",
    "Message",
    "ModelCacheError",
    "MultilingualEmbedder",
    "PartitionStats",
    "RepairReport",
    "Request",
    "Scope",
    "SentenceTransformerEmbedder",
    "__version__",
}


def test_all_is_the_expected_set() -> None:
    assert set(modelcache.__all__) == EXPECTED
    assert len(modelcache.__all__) == len(EXPECTED), "duplicates in __all__"


def test_every_public_name_imports() -> None:
    module = importlib.import_module("modelcache")
    for name in modelcache.__all__:
        assert getattr(module, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from modelcache import *", namespace)
    assert set(namespace) >= EXPECTED


def test_error_hierarchy_has_one_root() -> None:
    from modelcache import BackendError, ConfigError, IncompatibleCacheError, ModelCacheError

    for exc in (BackendError, ConfigError, IncompatibleCacheError):
        assert issubclass(exc, ModelCacheError)
    assert issubclass(ConfigError, ValueError)


def test_version_is_a_string() -> None:
    assert isinstance(modelcache.__version__, str) and modelcache.__version__


def test_import_does_no_heavy_work() -> None:
    """No model, torch or Chroma is loaded just by importing the package (no import-time work)."""
    code = (
        "import sys, modelcache;"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers', 'chromadb')"
        " if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at import time: {out.stdout.strip()}"
