"""ModelCache adapter for LlamaIndex (see issue: LlamaIndex adapter)."""
