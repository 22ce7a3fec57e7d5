"""ModelCache: a semantic cache for LLM applications.

The engine answers repeated and paraphrased requests from a vector store (Chroma) and a scalar
store (SQL), scoped by tenant, environment, model, generation parameters and system prompt.
"""

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
from .engine import Cache, Hit, IntegrityReport, RepairReport
from .errors import BackendError, ConfigError, IncompatibleCacheError, ModelCacheError
from .request import Message, Request, Scope

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "Cache",
    "CacheConfig",
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
    "RepairReport",
    "Request",
    "Scope",
    "SentenceTransformerEmbedder",
    "__version__",
]
