"""Calibration numbers against scikit-learn and hand counts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from tumorbench.evaluation.calibration import brier_score, expected_calibration_error, reliability_bins


def test_binary_brier_and_reliability_match_sklearn():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 500)
    y = (rng.uniform(0, 1, 500) < p**2).astype(int)  # over-confident scores
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    bins = reliability_bins(y, p)
    np.testing.assert_allclose(bins["observed"], observed)
    np.testing.assert_allclose(bins["predicted"], predicted)
    manual = sum(c * abs(o - q) for c, o, q in zip(bins["count"], observed, predicted)) / 500
    assert expected_calibration_error(y, p) == pytest.approx(manual) and manual > 0.05


def test_hand_counted_ece_and_multiclass_brier():
    # two cases at 0.95 (both right) and two at 0.65 (one right): |1 - .95|/2 + |.5 - .65|/2 = 0.1
    y = np.array([0, 1, 2, 0])
    proba = np.array([[0.95, 0.03, 0.02], [0.03, 0.95, 0.02], [0.65, 0.05, 0.3], [0.65, 0.3, 0.05]])
    assert expected_calibration_error(y, proba) == pytest.approx(0.1)
    onehot = np.eye(3)[y]
    assert brier_score(y, proba) == pytest.approx(np.mean(((proba - onehot) ** 2).sum(1)))
