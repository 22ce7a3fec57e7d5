"""``ModelCache``: a LangChain ``BaseCache`` backed by the ModelCache engine.

The adapter stays thin. It parses ``(prompt, llm_string)`` into an engine ``Request``, delegates
to the engine, and (de)serialises generations with ``langchain_core.load``. The engine makes
every cache decision.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.outputs import Generation

from modelcache import Cache, CacheConfig, ConfigError, Hit, Request, Scope
from modelcache._settings_aliases import engine_settings

from ._convert import (
    ParsedPrompt,
    dump_generations,
    llm_string_digest,
    load_generations,
    mark_hit,
    model_name,
    parse_prompt,
)

__all__ = ["ModelCache"]

# A lookup that misses parses its prompt again in the update that follows, and an exact repeat
# parses what it parsed before: reviving a chat prompt's messages costs about 0.7 ms a time
# (langchain-core rebuilds its class allowlist on every load). Parsed prompts are immutable.
_parse = functools.lru_cache(maxsize=128)(parse_prompt)

logger = logging.getLogger("modelcache.langchain")  # under the "modelcache" tree


class ModelCache(BaseCache):
    """LangChain cache that answers exact repeats and paraphrases from a ``modelcache.Cache``.

    Pass an engine, or settings to build one (``config`` and/or ``CacheConfig`` fields such as
    ``path``, ``similarity_threshold`` or ``embedder``; a non-string ``embedder``, or a LangChain
    ``Embeddings`` as ``embeddings=``, is used as the engine's embedder object; ``ttl`` is
    ``ttl_seconds``). These settings are arguments only, as in ``CacheConfig(...)``: a library
    call reads no ``MODELCACHE_*`` variable or file behind the caller's back; pass
    ``config=CacheConfig.load(...)`` for those layers. ``tenant`` and ``env`` scope every entry
    this adapter writes. Hits carry
    ``cache_hit`` / ``cache_kind`` / ``cache_similarity`` / ``cache_entry_id`` in
    ``generation_info`` (and a chat message's ``response_metadata``) unless ``hit_markers`` is
    False.
    """

    def __init__(
        self,
        cache: Cache | None = None,
        *,
        tenant: str = "default",
        env: str = "prod",
        config: CacheConfig | None = None,
        hit_markers: bool = True,
        **config_kwargs: Any,
    ) -> None:
        if cache is not None and (config is not None or config_kwargs):
            raise ConfigError("pass either an engine (`cache`) or settings to build one, not both")
        Scope(tenant=tenant, env=env)  # validates names now rather than on the first call
        embedder = None
        if cache is None:
            config, embedder = engine_settings(config, config_kwargs)
        else:
            config = cache.config
        config.check_env(env)
        self.tenant = tenant
        self.env = env
        self._owns_engine = cache is None
        self._hit_markers = hit_markers
        if cache is None:
            cache = Cache(config, embedder=embedder)
        self.engine: Cache = cache

    # ---- shared, I/O-free steps -------------------------------------------------------------
    def _scope(self, llm_string: str) -> Scope:
        """Partition scope of one model configuration: the llm_string hash isolates it."""
        return _scope_of(self.tenant, self.env, llm_string)

    def _request(self, prompt: str, llm_string: str) -> tuple[Request, ParsedPrompt] | None:
        """The engine request and the parsed prompt (exact-only, chat); None when the prompt is
        not cacheable."""
        try:
            parsed = _parse(prompt)
            request = Request(
                query=parsed.query,
                scope=self._scope(llm_string),
                system=parsed.system,
                history=parsed.history,
                attachments=parsed.attachments,
            )
        except Exception as exc:
            logger.warning("modelcache: prompt not cacheable, treated as a miss: %s", exc)
            return None
        return request, parsed

    def _restore(self, hit: Hit | None, chat: bool) -> list[Generation] | None:
        """Generations of a hit, marked as one; a row that fails to load is a miss with a
        warning."""
        if hit is None:
            return None
        try:
            generations = load_generations(hit.answer)
        except Exception as exc:
            logger.warning("modelcache: entry %s failed to load, miss: %s", hit.entry_id, exc)
            return None
        if not self._hit_markers:
            return generations
        return mark_hit(generations, hit.kind, hit.similarity, hit.entry_id, chat=chat)

    @staticmethod
    def _answer(return_val: Sequence[Generation]) -> dict[str, Any] | None:
        """Stored JSON of the generations, or None (logged) when they cannot round-trip."""
        if not return_val:
            return None
        try:
            return dump_generations(return_val)
        except Exception as exc:
            logger.warning("modelcache: generations not serialisable, not cached: %s", exc)
            return None

    def _clear_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Engine clear filter: this adapter's tenant and env, or one ``llm_string`` partition."""
        llm_string = kwargs.pop("llm_string", None)
        if kwargs:
            raise TypeError(f"ModelCache.clear() got unexpected arguments: {sorted(kwargs)}")
        if llm_string is None:
            return {"tenant": self.tenant, "env": self.env}
        scope = self._scope(llm_string)
        return {
            "tenant": self.tenant,
            "env": self.env,
            "model": scope.model,
            "params": dict(scope.params),
        }

    # ---- BaseCache ----------------------------------------------------------------------------
    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Cached generations for this prompt and model configuration, or None."""
        prepared = self._request(prompt, llm_string)
        if prepared is None:
            return None
        request, parsed = prepared
        try:
            hit = self.engine.lookup(request, exact_only=parsed.exact_only)
        except Exception as exc:
            logger.warning("modelcache: lookup failed, treated as a miss: %s", exc)
            return None
        return self._restore(hit, parsed.chat)

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the generations; failures are logged and dropped, never raised."""
        prepared = self._request(prompt, llm_string)
        answer = self._answer(return_val)
        if prepared is None or answer is None:
            return
        try:
            self.engine.insert(prepared[0], answer)
        except Exception as exc:
            logger.warning("modelcache: insert failed, dropped: %s", exc)

    def clear(self, **kwargs: Any) -> None:
        """Clear this adapter's tenant and env, or only ``llm_string=...``'s partition."""
        self.engine.clear(**self._clear_args(kwargs))

    # alookup / aupdate / aclear are BaseCache's: they run the methods above in the loop's
    # default executor (langchain_core.caches), as the engine's async twins would.

    # ---- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the engine if this adapter built it; a passed-in engine stays open."""
        if self._owns_engine:
            self.engine.close()

    def __enter__(self) -> ModelCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModelCache(tenant={self.tenant!r}, env={self.env!r})"


@functools.lru_cache(maxsize=64)
def _scope_of(tenant: str, env: str, llm_string: str) -> Scope:
    """The scope of one model configuration (immutable, so shared by every call that uses it)."""
    return Scope(
        tenant=tenant,
        env=env,
        model=model_name(llm_string),
        params={"llm_string": llm_string_digest(llm_string)},
    )
