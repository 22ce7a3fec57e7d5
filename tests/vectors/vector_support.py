"""Helpers of the vector-store tests."""

from __future__ import annotations


def drop_milvus_collections(milvus_file: str, prefix: str) -> None:
    """Drop a test's collections from the session's milvus-lite file."""
    from pymilvus import MilvusClient

    client = MilvusClient(milvus_file)
    for collection in client.list_collections():
        if collection.startswith(prefix):
            client.drop_collection(collection)
    client.close()
