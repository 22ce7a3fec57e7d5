"""Vector stores: the protocol and the Chroma implementation (embedded, persistent, HTTP)."""

from .base import VectorStore
from .chroma import ChromaVectorStore

__all__ = ["ChromaVectorStore", "VectorStore"]
