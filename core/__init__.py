"""ModelCache: a semantic cache for LLM applications.

The engine answers repeated and paraphrased requests from a vector store (Chroma) and a scalar
store (SQL), scoped by tenant, environment, model, generation parameters and system prompt.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BackendError,
    CacheClosedError,
    ConfigError,
    IncompatibleCacheError,
    ModelCacheError,
)

if TYPE_CHECKING:
    from .config import CacheConfig
    from .embedding import (
        Embedder,
        FakeEmbedder,
        LangChainEmbedder,
        LlamaIndexEmbedder,
        LLMLayerEmbedder,
        MultilingualEmbedder,
        SentenceTransformerEmbedder,
    )
    from .engine import Cache, Hit
    from .maintenance import IntegrityReport, RepairReport
    from .request import Message, Request, Scope
    from .stats import CacheStats, PartitionStats

__version__ = "0.1.0"

__all__ = [
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
]

# Public names loaded on first access (PEP 562): `import modelcache` stays cheap (no
# pydantic, SQLAlchemy, numpy), which the CLI and short-lived scripts feel as start-up time.
_LAZY = {
    "CacheConfig": ".config",
    "Embedder": ".embedding",
    "FakeEmbedder": ".embedding",
    "LLMLayerEmbedder": ".embedding",
    "LangChainEmbedder": ".embedding",
    "LlamaIndexEmbedder": ".embedding",
    "MultilingualEmbedder": ".embedding",
    "SentenceTransformerEmbedder": ".embedding",
    "Cache": ".engine",
    "Hit": ".engine",
    "IntegrityReport": ".maintenance",
    "RepairReport": ".maintenance",
    "Message": ".request",
    "Request": ".request",
    "Scope": ".request",
    "CacheStats": ".stats",
    "PartitionStats": ".stats",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
