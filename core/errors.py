"""The project's exception hierarchy: one root, backend faults translated at the boundary."""

from __future__ import annotations


class ModelCacheError(Exception):
    """Root of every error raised by ModelCache."""


class ConfigError(ModelCacheError, ValueError):
    """A configuration value or request argument is invalid."""


class IncompatibleCacheError(ModelCacheError):
    """The cache folder or database was written with settings this process cannot read."""


class BackendError(ModelCacheError):
    """A storage, vector or embedding backend failed; lookups turn it into a miss."""


class CacheClosedError(ModelCacheError):
    """The cache was closed; a closed cache neither looks up nor stores (a programming error)."""
