"""Ray Tune schedulers for cross-validation trials: ASHA over the epochs of a trial's folds, or FIFO.

A trial trains its folds in turn in one Ray Train run and reports every epoch (``tuning.trial``), with
the running mean over its folds; every trial trains the same folds in the same order. ASHA's time is the
epochs spent across those folds, so a rung compares configurations on the same fold at the same epoch.
The expected savings below feed the study planner (``study.planner``).
"""

from __future__ import annotations

import bisect
import functools
import random

from tumorbench.tuning.space import SearchSpaceError

SCHEDULERS = ("asha", "none")
TIME_ATTR = "epochs_spent"  # trials report every epoch (tuning.trial)
ASHA_REDUCTION_FACTOR = 4
ASHA_RANK_NOISE = 0.15  # see asha_expected_share


def asha_grace_epochs(epochs: int) -> int:
    """ASHA's default grace period: a quarter of a fold's epochs (at least one).

    With ``k`` folds of ``E`` epochs (``max_t = k * E``) and reduction factor 4 the rungs sit at
    ``E/4``, ``E``, ``4E``...: a configuration trains a quarter of its first fold before its first
    comparison, and a fold before its second (see :func:`asha_fraction`).
    """
    return max(1, int(epochs) // 4)


def _rungs(max_t: int, grace_period: int, reduction_factor: float) -> list[float]:
    """ASHA's rung milestones below ``max_t``: ``grace * rf**i``."""
    rungs, rung = [], float(grace_period)
    while rung < max_t:
        rungs.append(rung)
        rung *= reduction_factor
    return rungs


def asha_fraction(max_t: int, grace_period: int, reduction_factor: float = ASHA_REDUCTION_FACTOR) -> float:
    """Expected share of ``max_t`` (epochs) a trial trains under ASHA, if each rung keeps its best ``1/rf``.

    Rungs sit at ``grace * rf**i`` below ``max_t``; every trial trains to the first.
    In folds with grace 1: rf 2 gives 0.75 (2 folds), 0.67 (3), 0.55 (5); rf 4 gives 0.62, 0.50, 0.36.
    In epochs, 3 folds of 8 with grace 2 and rf 4: 0.19.
    A search's first trials run further (their rung is still empty), so real searches spend more.
    """
    rungs = _rungs(max_t, grace_period, reduction_factor)
    if not rungs:
        return 1.0
    spent, survive = float(rungs[0]), 1.0
    for here, above in zip(rungs, rungs[1:] + [max_t]):
        survive /= reduction_factor
        spent += survive * (above - here)
    return spent / max_t


def asha_expected_share(
    trials: int,
    max_t: int,
    grace_period: int,
    reduction_factor: float = ASHA_REDUCTION_FACTOR,
    noise: float = ASHA_RANK_NOISE,
) -> float:
    """Expected share of ``trials * max_t`` epochs a search of ``trials`` run one after another spends under ASHA.

    A seeded replay of Tune's rule: at each rung a trial stops when it scores below the ``1 - 1/rf``
    percentile of the scores recorded there before it (the first trials always pass), so small searches
    stop fewer trials than :func:`asha_fraction`'s limit. A higher rung only holds the trials that passed
    the lower one, and a configuration that leads early mostly leads later: each trial has one quality
    (uniform) and scores it plus ``noise`` (normal) at every rung. ``noise`` 0.15 matches replays of the
    yes/no benchmark's 12 learning curves in 200 orders (0.35, 0.32, 0.29 for 12, 24, 36 trials, grace 1,
    rf 4, 12 epochs); a formula with the expected rung counts misses it by a third (it ignores both).
    """
    return _asha_replay(int(trials), int(max_t), float(grace_period), float(reduction_factor), float(noise))


@functools.lru_cache(maxsize=256)  # the planner asks again for every step it scales down
def _asha_replay(trials: int, max_t: int, grace: float, rf: float, noise: float) -> float:
    rungs, q = _rungs(max_t, grace, rf), 1 - 1 / rf
    if trials < 1 or not rungs:
        return 1.0
    rng, reps, spent = random.Random(0), max(20, 4000 // trials), 0.0
    for _ in range(reps):
        recorded: list[list[float]] = [[] for _ in rungs]
        for _ in range(trials):
            quality, trained = rng.random(), max_t
            for scores, rung in zip(recorded, rungs):
                score = quality + noise * rng.gauss(0.0, 1.0)
                cutoff = _percentile(scores, q) if scores else None  # np.nanpercentile, as Tune's ASHA
                bisect.insort(scores, score)
                if cutoff is not None and score < cutoff:
                    trained = rung
                    break
            spent += trained
    return spent / (reps * trials * max_t)


def _percentile(ordered: list[float], q: float) -> float:
    """numpy's default (linear) percentile of an ascending list, at fraction ``q``."""
    at = q * (len(ordered) - 1)
    lo = int(at)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (at - lo) * (ordered[hi] - ordered[lo])


def make_scheduler(
    kind: str,
    *,
    max_t: int,
    metric: str,
    mode: str,
    grace_period: int,
    reduction_factor: float = ASHA_REDUCTION_FACTOR,
):
    """ASHA over epochs (time attribute ``epochs_spent``, counted across a trial's folds), or FIFO for ``none``.

    Trials report every epoch with the running mean over their folds, and every trial trains the
    same folds in the same order, so a rung compares configurations on the same data. The reduction
    factor is Tune's 4: a rung keeps its best quarter (see :func:`asha_fraction`). When trials reported
    only per fold, a trial always trained a whole fold and 3 folds spent 0.75 of the epochs at best.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if kind == "none":
        return FIFOScheduler()
    if kind != "asha":
        raise SearchSpaceError(f"unknown scheduler {kind!r}; choose from {', '.join(SCHEDULERS)}")
    return ASHAScheduler(
        time_attr=TIME_ATTR,
        metric=metric,
        mode=mode,
        max_t=max_t,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
    )
