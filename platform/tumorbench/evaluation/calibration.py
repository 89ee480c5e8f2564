"""Calibration of classifiers: Brier score, expected calibration error (ECE), reliability bins.

A leaderboard ranks by discrimination (AUC); a probability that says 0.9 should also be right
about 90% of the time. Binary problems are judged on the positive-class probability, multi-class
ones on the top-label confidence (the usual ECE of Guo et al., 2017).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

N_BINS = 10


def _as_binary_or_top(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted probability, observed 0/1 outcome): p(positive) vs y for binary, top-label confidence vs hit."""
    proba = np.asarray(proba, float)
    if proba.ndim == 1:
        return proba, (np.asarray(y) == 1).astype(float)
    top = proba.argmax(axis=1)
    return proba.max(axis=1), (top == np.asarray(y)).astype(float)


def brier_score(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean squared error of the probabilities: binary ``mean((p - y)^2)``; multi-class summed over classes."""
    proba = np.asarray(proba, float)
    y = np.asarray(y)
    if proba.ndim == 1:
        return float(np.mean((proba - (y == 1)) ** 2))
    onehot = np.eye(proba.shape[1])[y]
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def reliability_bins(y: np.ndarray, proba: np.ndarray, n_bins: int = N_BINS) -> pd.DataFrame:
    """Equal-width probability bins: ``count``, mean ``predicted`` and ``observed`` frequency (empty bins dropped)."""
    p, outcome = _as_binary_or_top(y, proba)
    index = np.clip((p * n_bins).astype(int), 0, n_bins - 1)  # p = 1.0 joins the last bin
    rows = [
        {
            "bin": b,
            "count": int((index == b).sum()),
            "predicted": float(p[index == b].mean()),
            "observed": float(outcome[index == b].mean()),
        }
        for b in range(n_bins)
        if (index == b).any()
    ]
    return pd.DataFrame(rows, columns=["bin", "count", "predicted", "observed"])


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE: the bins' |observed - predicted| weighted by their share of the cases."""
    bins = reliability_bins(y, proba, n_bins)
    if bins.empty:
        return float("nan")
    return float(np.sum(bins["count"] * (bins["observed"] - bins["predicted"]).abs()) / bins["count"].sum())


def calibration_values(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """``brier`` and ``ece`` of one model's pooled out-of-fold probabilities."""
    return {"brier": brier_score(y, proba), "ece": expected_calibration_error(y, proba)}
