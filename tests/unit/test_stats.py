"""Statistics against hand computations, scipy, scikit-learn and a brute-force DeLong."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from tumorbench.evaluation.stats import (
    bootstrap_ci,
    bootstrap_metric_ci,
    corrected_resampled_ttest,
    delong_ci,
    delong_test,
    holm_correction,
    mcnemar_test,
    wilcoxon_signed_rank,
)

# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_agrees_with_scipy_and_is_seeded():
    x = np.random.default_rng(0).normal(2.0, 1.0, 60)
    est, lo, hi = bootstrap_ci(x, np.mean, n_boot=2000, seed=1)
    ref = sps.bootstrap((x,), np.mean, n_resamples=2000, method="percentile", random_state=5).confidence_interval
    assert est == pytest.approx(x.mean())
    # Different random draws: equal up to Monte Carlo error (interval width is about 0.5).
    assert lo == pytest.approx(ref.low, abs=0.05) and hi == pytest.approx(ref.high, abs=0.05)
    assert bootstrap_ci(x, np.mean, seed=1) == (est, lo, hi)
    assert bootstrap_ci(x, np.mean, seed=2) != (est, lo, hi)


def test_grouped_bootstrap_resamples_whole_patients():
    rng = np.random.default_rng(4)
    patient_values = rng.normal(size=15)
    rows = np.repeat(patient_values, 3)  # three identical slices per patient
    groups = np.repeat([f"p{i:02d}" for i in range(15)], 3)
    grouped = bootstrap_ci(rows, np.mean, n_boot=500, groups=groups, seed=3)
    # Drawing whole patients of equal size gives the same means as drawing patient values.
    assert grouped == pytest.approx(bootstrap_ci(patient_values, np.mean, n_boot=500, seed=3))
    naive = bootstrap_ci(rows, np.mean, n_boot=500, seed=3)
    assert naive[2] - naive[1] < grouped[2] - grouped[1]  # slice-level resampling is overconfident


def test_paired_bootstrap_keeps_rows_together():
    rng = np.random.default_rng(5)
    a, b = rng.random(40), rng.random(40)
    paired = bootstrap_ci((a, b), lambda u, v: float(np.mean(u - v)), n_boot=300, seed=9)
    assert paired == pytest.approx(bootstrap_ci(a - b, np.mean, n_boot=300, seed=9))


def test_bootstrap_metric_ci_skips_one_class_resamples():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 1, 0, 0])
    s = np.array([0.8, 0.3, 0.2, 0.6, 0.1, 0.4, 0.35, 0.5, 0.2, 0.7])
    with pytest.warns(RuntimeWarning, match="skipped"):
        est, lo, hi = bootstrap_metric_ci(y, s, roc_auc_score, n_boot=200, seed=0)
    assert est == pytest.approx(roc_auc_score(y, s))
    assert 0.0 <= lo <= est <= hi <= 1.0


# ---------------------------------------------------------------- Wilcoxon


def test_wilcoxon_matches_scipy_and_handles_ties():
    rng = np.random.default_rng(2)
    a = rng.random(25)
    b = a - 0.05 + rng.normal(0, 0.05, 25)
    ref = sps.wilcoxon(a, b)
    assert wilcoxon_signed_rank(a, b) == pytest.approx((ref.statistic, ref.pvalue))
    assert wilcoxon_signed_rank(a, a) == (0.0, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        wilcoxon_signed_rank([0.5, np.nan], [0.4, 0.3])


# ---------------------------------------------------------------- DeLong


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _brute_force_delong(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) written out: structural components by the O(m*n) kernel.

    V10[r][i] = mean over negatives j of psi(X_i, Y_j), for each positive i;
    V01[r][j] = mean over positives i of psi(X_i, Y_j), for each negative j;
    AUC_r = mean of V10[r]; S = S10 / m + S01 / n with S10, S01 the sample covariance
    matrices (over cases) of the components of the compared scores.
    """
    v10, v01 = [], []
    for s in scores:
        pos, neg = s[y == 1], s[y == 0]
        v10.append([sum(_psi(x, yy) for yy in neg) / len(neg) for x in pos])
        v01.append([sum(_psi(x, yy) for x in pos) / len(pos) for yy in neg])
    v10, v01 = np.array(v10), np.array(v01)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return v10.mean(axis=1), s10 / m + s01 / n


def _tied_scores(rng: np.random.Generator, y: np.ndarray, shift: float) -> np.ndarray:
    return np.round(shift * y + rng.normal(0, 1, len(y)), 1)  # rounding creates ties


def test_delong_matches_sklearn_and_brute_force():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 40)
    a, b = _tied_scores(rng, y, 1.2), _tied_scores(rng, y, 0.6)
    auc_a, auc_b, z, p = delong_test(y, a, b)
    assert auc_a == pytest.approx(roc_auc_score(y, a)) and auc_b == pytest.approx(roc_auc_score(y, b))
    aucs, cov = _brute_force_delong(y, [a, b])
    z_ref = (aucs[0] - aucs[1]) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert z == pytest.approx(z_ref) and p == pytest.approx(2 * sps.norm.sf(abs(z_ref)))
    auc, lo, hi = delong_ci(y, a)
    half = sps.norm.ppf(0.975) * math.sqrt(cov[0, 0])
    assert (auc, lo, hi) == pytest.approx((aucs[0], aucs[0] - half, min(1.0, aucs[0] + half)))


def test_delong_identical_scores_and_errors():
    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, 30)
    s = rng.random(30) + 0.3 * y
    auc_a, auc_b, z, p = delong_test(y, s, s.copy())
    assert auc_a == auc_b and z == 0.0 and p == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        delong_ci(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3]))


# ---------------------------------------------------------------- McNemar


def _mcnemar_data(b: int, c: int, both_right: int = 7, both_wrong: int = 3):
    """Labels and two prediction vectors with b cases only A gets right and c only B."""
    y = np.ones(b + c + both_right + both_wrong, int)
    pa = np.concatenate([np.ones(b), np.zeros(c), np.ones(both_right), np.zeros(both_wrong)]).astype(int)
    pb = np.concatenate([np.zeros(b), np.ones(c), np.ones(both_right), np.zeros(both_wrong)]).astype(int)
    return y, pa, pb


def test_mcnemar_exact_small_counts():
    stat, p = mcnemar_test(*_mcnemar_data(10, 2))
    # Two-sided binomial with 12 discordant pairs: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2**12 = 158 / 4096
    assert stat == 2.0
    assert p == pytest.approx(158 / 4096) and p == pytest.approx(sps.binomtest(2, 12, 0.5).pvalue)
    assert mcnemar_test(*_mcnemar_data(0, 0)) == (0.0, 1.0)


def test_mcnemar_chi_square_large_counts():
    stat, p = mcnemar_test(*_mcnemar_data(30, 12))
    # (|30 - 12| - 1)^2 / (30 + 12) = 289 / 42, one degree of freedom
    assert stat == pytest.approx(289 / 42)
    assert p == pytest.approx(sps.chi2.sf(289 / 42, 1))
    assert mcnemar_test(*_mcnemar_data(30, 12), exact=True)[1] == pytest.approx(sps.binomtest(12, 42, 0.5).pvalue)


# ---------------------------------------------------------------- corrected resampled t-test


def test_corrected_resampled_ttest_hand_computed():
    a = [0.80, 0.82, 0.78, 0.85, 0.81]
    b = [0.78, 0.80, 0.79, 0.80, 0.78]
    # d = [0.02, 0.02, -0.01, 0.05, 0.03], mean 0.022
    # sum of squared deviations = 4e-6 + 4e-6 + 1.024e-3 + 7.84e-4 + 6.4e-5 = 1.88e-3; var = 1.88e-3 / 4 = 4.7e-4
    # corrected variance = (1/5 + 20/80) * 4.7e-4 = 2.115e-4; t = 0.022 / sqrt(2.115e-4) = 1.51275...
    t, p = corrected_resampled_ttest(a, b, n_train=80, n_test=20)
    assert t == pytest.approx(0.022 / math.sqrt(2.115e-4))
    assert p == pytest.approx(2 * sps.t.sf(0.022 / math.sqrt(2.115e-4), df=4))
    assert corrected_resampled_ttest(a, a, 80, 20) == (0.0, 1.0)


# ---------------------------------------------------------------- Holm


def test_holm_hand_computed():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    # back in input order [0.01, 0.04, 0.03, 0.005] -> [0.03, 0.06, 0.06, 0.02]
    assert holm_correction([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # 0.5*2 = 1.0, then max(0.6, 1.0) = 1.0: capped and monotone
    assert holm_correction([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="pvalues"):
        holm_correction([0.2, 1.5])


def test_grouped_resamples_draw_whole_groups_as_one_array_per_group_would():
    """The vectorised gather yields, resample by resample, the rows of the drawn groups in draw order, each group's
    rows in row order: what concatenating one index array per drawn group gives (the previous implementation)."""
    from tumorbench.evaluation.stats import _resample_indices

    groups = np.random.default_rng(5).choice([f"p{i}" for i in range(40)], 300)  # sizes 1 to ~15, rows shuffled
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(names))]
    fast = list(_resample_indices(300, groups, 25, np.random.default_rng(9)))
    rng = np.random.default_rng(9)
    for idx in fast:
        drawn = rng.integers(0, len(members), size=len(members))
        np.testing.assert_array_equal(idx, np.concatenate([members[k] for k in drawn]))
