"""ModelCache for LangChain: ``set_llm_cache(ModelCache(...))`` or ``ChatModel(cache=...)``."""

from .cache import ModelCache

__all__ = ["ModelCache"]
