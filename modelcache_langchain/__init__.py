"""ModelCache for LangChain: a semantic ``BaseCache`` for chat models and LLMs.

Example::

    from langchain_core.globals import set_llm_cache
    from modelcache_langchain import ModelCache

    # every model without a cache of its own; entries scoped to tenant "acme", env "prod"
    set_llm_cache(ModelCache(path="./modelcache_data", tenant="acme", env="prod"))

    # or one model, sharing an engine you already have
    llm = ChatOpenAI(model="gpt-4o", cache=ModelCache(engine, tenant="acme", env="staging"))

Use one ``tenant`` per customer or application that must never see another's answers, and
``env`` (one of ``CacheConfig.environments``) for the stage. ``clear()`` clears only that
tenant and env. ``clear(llm_string=...)`` clears one model configuration.
"""

from .cache import ModelCache

__all__ = ["ModelCache"]
