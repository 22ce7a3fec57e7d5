"""Crowding margin: the best candidate must stand out from the next recalled neighbour.

A question never cached finds more near neighbours above a fixed threshold the larger its
partition. This rule raises the threshold of one lookup to the ``rank``-th recalled
similarity plus a margin, so a candidate is served only when it beats its runner-up clearly.
Measured on Quora questions (``benchmarks/density.py``, ``benchmarks/results/density.md``) it
trades recall for precision; most "false hits" of that protocol are unlabelled duplicates, so
it is off by default (``CacheConfig.crowding_margin``). Other density-aware rules (a threshold
raised by the mean of the top-k similarities, a stricter guard where several candidates pass)
were fitted on ``qqp_train`` and none beat a plain higher threshold on the protocol's probes
(``benchmarks/density_rules.py``), so none ships; at equal recall this margin itself does no
better than raising ``similarity_threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["crowding_threshold"]


def crowding_threshold(
    similarities: Sequence[float], threshold: float, margin: float | None, rank: int
) -> float:
    """The threshold raised to the ``rank``-th best similarity plus ``margin``.

    With fewer than ``rank`` neighbours the partition is not crowded here and the threshold
    stands; ``margin`` None turns the rule off.
    """
    if margin is None or rank < 1 or len(similarities) < rank:
        return threshold
    kth = sorted(similarities, reverse=True)[rank - 1]
    return max(threshold, kth + margin)
