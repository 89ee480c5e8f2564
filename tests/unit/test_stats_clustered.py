"""DeLong and McNemar clustered by patient: several cases of one patient are not independent evidence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2
from sklearn.metrics import roc_auc_score

from tumorbench.evaluation.paired import paired_statistics
from tumorbench.evaluation.stats import delong_ci, delong_test, mcnemar_test


def _scores(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, y + rng.normal(0, 1.0, n), y + rng.normal(0, 1.3, n)


def test_doubling_every_case_leaves_the_clustered_test_unchanged():
    y, a, b = _scores()
    _, _, z_plain, _ = delong_test(y, a, b)
    twice = [np.repeat(v, 2) for v in (y, a, b)]
    patients = np.repeat(np.arange(len(y)), 2)
    _, _, z_naive, _ = delong_test(*twice)
    auc_a, auc_b, z_clustered, p = delong_test(*twice, groups=patients)
    assert auc_a == pytest.approx(roc_auc_score(y, a)) and auc_b == pytest.approx(roc_auc_score(y, b))
    assert z_naive / z_plain == pytest.approx(np.sqrt(2), rel=0.03)  # the copies counted as new patients
    assert z_clustered == pytest.approx(z_plain, rel=0.02)  # I / (I - 1) against m / (m - 1) and n / (n - 1)
    _, lo, hi = delong_ci(*twice[:2], groups=patients)
    _, lo1, hi1 = delong_ci(y, a)
    assert (hi - lo) == pytest.approx(hi1 - lo1, rel=0.02)


def test_clustered_variance_matches_a_patient_bootstrap():
    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(50), 3)  # three lesions per patient sharing the patient's effect
    y = rng.integers(0, 2, patients.size)
    shared = rng.normal(0, 1.0, 50)[patients]
    a = y + shared + rng.normal(0, 0.7, patients.size)
    b = y + 0.5 * shared + rng.normal(0, 1.0, patients.size)
    auc_a, auc_b, z, _ = delong_test(y, a, b, groups=patients)
    diffs = []
    for _ in range(1500):  # independent reference: resample whole patients, sklearn's AUC
        pick = np.concatenate([np.flatnonzero(patients == k) for k in rng.integers(0, 50, 50)])
        diffs.append(roc_auc_score(y[pick], a[pick]) - roc_auc_score(y[pick], b[pick]))
    assert abs((auc_a - auc_b) / z) == pytest.approx(np.std(diffs), rel=0.15)


def test_clustered_mcnemar_by_hand():
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    a = np.array([1, 1, 0, 1, 1, 0, 1, 1])  # wrong on cases 3, 7
    b = np.array([0, 0, 0, 0, 1, 1, 0, 0])  # wrong on cases 0, 1, 5, 6
    patients = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    # only A right on cases 0, 1, 5, 6; only B right on 3, 7. Per patient, (only A) - (only B): 2, -1, 2, -1
    stat, p = mcnemar_test(y, a, b, groups=patients)
    assert stat == pytest.approx((2 - 1 + 2 - 1) ** 2 / (4 + 1 + 4 + 1))
    assert p == pytest.approx(chi2.sf(0.4, df=1))
    singletons = mcnemar_test(y, a, b, groups=np.arange(8))  # b = 4, c = 2: (4 - 2)^2 / 6, uncorrected
    assert singletons[0] == pytest.approx(4 / 6)


def test_paired_tests_cluster_when_a_patient_has_several_cases():
    y, a, b = _scores(n=40, seed=5)
    rows = []
    for model, score in (("ref", a), ("other", b)):
        for i, (truth, s) in enumerate(zip(y, score, strict=True)):
            for copy in range(2):  # every case twice, the copies one patient
                rows.append(
                    dict(
                        model=model,
                        kind="dl",
                        fold=i % 2,
                        case_id=f"c{i}_{copy}",
                        patient_id=f"p{i}",
                        y_true=int(truth),
                        y_score=float(s),
                        y_pred=int(s > 0.5),
                    )
                )
    pred = pd.DataFrame(rows)
    stats = paired_statistics(pred, task="classification", reference="ref").set_index("test")
    _, _, _, p_plain = delong_test(y, a, b)
    assert stats.loc["delong", "p"] == pytest.approx(p_plain, rel=0.05)
