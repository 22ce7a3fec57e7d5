"""ModelCache for LlamaIndex: ``Settings.llm = wrap_llm(llm, cache)``."""

from ._llm import CachedFunctionCallingLLM, CachedLLM, wrap_llm

__all__ = ["CachedFunctionCallingLLM", "CachedLLM", "wrap_llm"]
