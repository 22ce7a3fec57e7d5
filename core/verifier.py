"""Second-stage verifier: scores (request, candidate) question pairs in [0, 1].

The cosine of two embeddings says "similar topic", not "same answer". A cross-encoder reads
both questions together and is much better at the difference, but costs 2-3x an embedding per
pair, so the engine runs it only on the top-k candidates inside a grey band of similarity.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigError

__all__ = ["CallableVerifier", "CrossEncoderVerifier", "Verifier", "VerifierSpec", "load_verifier"]

ScoreFn = Callable[[Sequence[tuple[str, str]]], Sequence[float]]


@runtime_checkable
class Verifier(Protocol):
    """Anything that scores question pairs: higher means "same answer"."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per (request, candidate) pair, in [0, 1] for the shipped verifiers."""
        ...


class CallableVerifier:
    """Adapts a plain function ``pairs -> scores`` to the :class:`Verifier` protocol."""

    def __init__(self, fn: ScoreFn) -> None:
        self._fn = fn

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Call the function and check it returned one number per pair."""
        if not pairs:
            return []
        scores = [float(s) for s in self._fn(list(pairs))]
        if len(scores) != len(pairs):
            raise ValueError(f"verifier returned {len(scores)} scores for {len(pairs)} pairs")
        return scores


class CrossEncoderVerifier:
    """A sentence-transformers ``CrossEncoder`` loaded from a local directory (offline)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_length: int = 128,
        batch_size: int = 16,
        device: str | None = "cpu",
    ) -> None:
        directory = Path(path).expanduser()
        if not directory.is_dir():
            raise ConfigError(f"verifier directory not found: {directory}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        try:
            self._model: Any = CrossEncoder(
                str(directory), device=device, max_length=max_length, local_files_only=True
            )
        except Exception as exc:  # any load failure is a configuration problem
            raise ConfigError(f"cannot load cross-encoder from {directory}: {exc}") from exc
        self._batch_size = batch_size
        self.path = str(directory)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Sigmoid scores of the cross-encoder (its default activation for one label)."""
        if not pairs:
            return []
        out = self._model.predict(
            [(a, b) for a, b in pairs],
            batch_size=self._batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return [float(x) for x in out.reshape(len(pairs), -1)[:, -1]]


#: What a cache accepts as its verifier: a local CrossEncoder directory, a function
#: ``pairs -> scores``, or a :class:`Verifier`.
VerifierSpec = str | os.PathLike[str] | ScoreFn | Verifier


def load_verifier(spec: VerifierSpec) -> Verifier:
    """A verifier from a local CrossEncoder directory, a ``Verifier``, or any callable."""
    if not isinstance(spec, (str, os.PathLike)) and callable(getattr(spec, "score", None)):
        return spec  # type: ignore[return-value]
    if isinstance(spec, (str, os.PathLike)):
        return CrossEncoderVerifier(spec)
    if callable(spec):
        return CallableVerifier(spec)
    raise ConfigError(f"cannot make a verifier from {type(spec).__name__}")
