"""Ray Tune schedulers for cross-validation trials: ASHA over the epochs of a trial's folds, or FIFO.

A trial trains its folds in turn in one Ray Train run and reports every epoch (``tuning.trial``), with
the running mean over its folds; every trial trains the same folds in the same order. ASHA's time is the
epochs spent across those folds, so a rung compares configurations on the same fold at the same epoch.
The expected savings below feed the study planner (``study.planner``).
"""

from __future__ import annotations

from tumorbench.tuning.space import SearchSpaceError

SCHEDULERS = ("asha", "none")
TIME_ATTR = "epochs_spent"  # trials report every epoch (tuning.trial)
ASHA_REDUCTION_FACTOR = 4


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
    trials: int, max_t: int, grace_period: int, reduction_factor: float = ASHA_REDUCTION_FACTOR
) -> float:
    """Expected share of ``trials * max_t`` epochs a search of ``trials`` run one after another spends under ASHA.

    Tune's ASHA stops a trial at a rung when it scores below the ``1 - 1/rf`` quantile of the trials
    recorded there before it, so the i-th trial passes a rung with probability about ``max(1/rf, 1/i)``
    (the first always): small searches stop fewer trials than :func:`asha_fraction`'s limit.
    """
    rungs = _rungs(max_t, grace_period, reduction_factor)
    spent = 0.0
    for i in range(1, trials + 1):
        survive, here, alive = max(1 / reduction_factor, 1 / i), 0, 1.0
        for above in [*rungs, max_t]:
            spent += alive * (above - here)
            alive, here = alive * survive, above
    return spent / (max(1, trials) * max_t)


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
