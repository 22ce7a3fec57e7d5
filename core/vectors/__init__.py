"""Vector stores: the protocol, Chroma (embedded, persistent, HTTP) and Milvus (server or lite).

``MilvusVectorStore`` imports pymilvus only when constructed (``modelcache[milvus]`` extra).
"""

from .base import VectorStore
from .chroma import ChromaVectorStore
from .milvus import MilvusVectorStore

__all__ = ["ChromaVectorStore", "MilvusVectorStore", "VectorStore"]
