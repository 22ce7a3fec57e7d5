"""Settings the adapters accept under the names other semantic caches use.

A user coming from langchain-redis, RedisVL or GPTCache passes ``ttl=``, ``embeddings=`` or
``distance_threshold=``. Names whose meaning is exactly one of ours are translated; the others
raise a :class:`ConfigError` that names the setting to use instead.
"""

from __future__ import annotations

from typing import Any

from .config import CacheConfig
from .embedding import Embedder, LangChainEmbedder, LlamaIndexEmbedder
from .errors import ConfigError

__all__ = ["as_embedder", "engine_settings"]

# Same meaning, another name: translated silently.
_RENAMED = {"ttl": "ttl_seconds"}
# An embedding model object under the name each framework's caches use.
_EMBEDDING_OBJECTS = ("embeddings", "embedding", "embed_model", "vectorizer")
# Settings with no exact counterpart: the error says what to use.
_REFUSED = {
    "redis_url": "ModelCache does not use Redis: pass `path=` (embedded folder), or `sql_url=` "
    "and `chroma_url=` / `vector_url=` for a shared deployment",
    "redis_client": "ModelCache does not use Redis: pass `path=`, or `sql_url=` and "
    "`chroma_url=` / `vector_url=`",
    "name": "ModelCache separates caches by `tenant=` (and `env=`), not by an index name",
    "prefix": "ModelCache separates caches by `tenant=` (and `env=`), not by a key prefix",
    "data_manager": "pass `sql_url=` and `chroma_url=` (or `vector_url=`) instead of a GPTCache "
    "data manager",
    "similarity_evaluation": "acceptance is built in: `similarity_threshold=`, `guard=` and "
    "`verifier=`",
}


def _distance_error(name: str, value: Any) -> ConfigError:
    """Redis' cosine distance ``d`` is ``1 - cosine similarity``; thresholds here are the latter."""
    hint = ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        hint = f"; {name}={value} is similarity_threshold={1 - float(value):.4g}"
    return ConfigError(
        f"`{name}` is a cosine distance; ModelCache takes `similarity_threshold` "
        f"(cosine similarity = 1 - distance){hint}"
    )


def as_embedder(model: Any) -> Embedder:
    """An engine embedder from a ModelCache embedder, a LangChain ``Embeddings`` or a LlamaIndex
    ``BaseEmbedding`` (recognised by their methods, so neither framework is imported here)."""
    if isinstance(model, Embedder):
        return model
    if hasattr(model, "embed_documents") and hasattr(model, "embed_query"):
        return LangChainEmbedder(model)
    if hasattr(model, "get_text_embedding_batch"):
        return LlamaIndexEmbedder(model)
    raise ConfigError(
        f"cannot embed with a {type(model).__name__}: pass an embedder name ('minilm', "
        "'multilingual', a model folder), a LangChain Embeddings or a LlamaIndex BaseEmbedding"
    )


def engine_settings(
    config: CacheConfig | None, settings: dict[str, Any]
) -> tuple[CacheConfig, Embedder | None]:
    """The config and embedder object an adapter builds its engine from: ``CacheConfig`` fields
    and the familiar names above override ``config`` (defaults when None)."""
    values = dict(settings)
    for name in ("distance_threshold", "score_threshold"):
        if name in values:
            raise _distance_error(name, values[name])
    refused = sorted(set(values) & set(_REFUSED))
    if refused:
        raise ConfigError(f"unsupported setting `{refused[0]}`: {_REFUSED[refused[0]]}")
    for old, new in _RENAMED.items():
        if old in values:
            if new in values:
                raise ConfigError(f"pass `{new}` or `{old}`, not both")
            values[new] = values.pop(old)
    objects = [name for name in ("embedder", *_EMBEDDING_OBJECTS) if name in values]
    if len(objects) > 1:
        raise ConfigError(f"pass one embedding model, not {' and '.join(objects)}")
    embedder = None
    if objects:
        model = values.pop(objects[0])
        if isinstance(model, str):
            values["embedder"] = model
        else:
            embedder = as_embedder(model)
    if config is None:
        config = CacheConfig.create(**values)
    elif values:
        config = config.with_(**values)
    return config, embedder
