"""Rounds, shared by the bench scripts: setups run in turn, ratios taken within each round.

A shared VM's speed drifts between runs minutes apart (±10% here), more than the differences the
benches look for. So a bench runs its setups in rounds, each round in another order, takes each
ratio within a round, and reports their median with the sign test's interval for it: the machine's
noise, in the ratio's units.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def round_order(items: Sequence[T], n: int) -> list[T]:
    """Round ``n``'s order: the ``n``-th permutation of ``items`` (round 0 keeps theirs).

    Over ``len(items)!`` rounds each item runs right after each other one equally often, so none
    is always measured right after the same one: whatever the run before leaves behind falls on all.
    """
    orders = list(itertools.permutations(items))
    return list(orders[n % len(orders)])


def lower_median(items: Sequence[T], key: Callable[[T], float]) -> T:
    """The item with the median ``key`` (the lower middle one of an even count): a run that happened."""
    ordered = sorted(items, key=key)
    return ordered[(len(ordered) - 1) // 2]


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float] | None:
    """Distribution-free interval for the median: order statistics ``x(k) .. x(n+1-k)``, the sign test's.

    The narrowest with coverage >= ``level``, as ``(low, high, coverage)``; None when even the lowest to
    the highest value covers less (fewer than 6 values for 95%). It assumes independent rounds; a slow
    spell of the machine longer than a round makes the coverage nominal.
    """
    xs, n = sorted(values), len(values)
    found = None
    for k in range(1, n // 2 + 1):
        coverage = 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n
        if coverage < level:
            break
        found = (xs[k - 1], xs[n - k], coverage)
    return found


def median_ratio(ratios: Sequence[float], unit: str = "x") -> str:
    """``"0.91x"``, and with several rounds ``" (median of 6 rounds: ...; 97% interval 0.67-1.00)"`` after it."""
    text = f"{statistics.median(ratios):.2f}{unit}"
    if len(ratios) < 2:
        return text
    interval = median_interval(ratios)
    return (
        f"{text} (median of {len(ratios)} rounds: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + (f"; {interval[2]:.0%} interval {interval[0]:.2f}-{interval[1]:.2f}" if interval else "")
        + ")"
    )
