"""Detects text an English-only embedder cannot compare, so a cache can say so once."""

from __future__ import annotations

__all__ = ["english_only", "mostly_non_latin"]

# sentence-transformers' all-* models (the shipped all-MiniLM-L6-v2 among them) learned English.
_ENGLISH_ONLY_PREFIXES = ("st:all-",)


def english_only(embedder_name: str) -> bool:
    """True for embedders known to be trained on English only."""
    return embedder_name.startswith(_ENGLISH_ONLY_PREFIXES)


def _latin(char: str) -> bool:
    code = ord(char)
    return code <= 0x24F or 0x1E00 <= code <= 0x1EFF  # Basic Latin to Latin Extended-B, Vietnamese


def mostly_non_latin(text: str) -> bool:
    """True when most letters are outside the Latin script (Chinese, Japanese, Cyrillic, ...)."""
    letters = [char for char in text if char.isalpha()]
    return bool(letters) and sum(not _latin(c) for c in letters) * 2 > len(letters)
