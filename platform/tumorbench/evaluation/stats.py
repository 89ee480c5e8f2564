"""Statistics for comparing models: bootstrap CIs, paired tests, DeLong, Holm.

Every function is pure and deterministic (bootstrap draws come from ``seed``). Inputs
are per-case values (per patient where patients exist): resampling or pairing slices
of one patient as if they were independent overstates the evidence.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = [
    "bootstrap_ci",
    "bootstrap_metric_ci",
    "corrected_resampled_ttest",
    "delong_ci",
    "delong_test",
    "holm_correction",
    "mcnemar_test",
    "wilcoxon_signed_rank",
]


def _vector(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {arr.shape}")
    return arr


def _resample_indices(n: int, groups: Any, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Row indices of each bootstrap sample; whole groups are drawn when groups are given."""
    if groups is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, size=n)
        return
    g = _vector(groups, "groups")
    if len(g) != n:
        raise ValueError(f"groups: {len(g)} group ids for {n} rows")
    _, inverse = np.unique(g, return_inverse=True)
    # Rows grouped by group, in row order within each: group k's rows are order[starts[k]:starts[k] + sizes[k]].
    # Each resample gathers its drawn groups' rows with one repeat and one arange (a list of one array per group,
    # concatenated, took ~3 ms a resample at 15,000 groups).
    order = np.argsort(inverse, kind="stable")
    sizes = np.bincount(inverse)
    starts = np.cumsum(sizes) - sizes
    for _ in range(n_boot):
        drawn = rng.integers(0, len(sizes), size=len(sizes))
        lengths = sizes[drawn]
        offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        yield order[np.repeat(starts[drawn], lengths) + offsets]


def _percentile_ci(
    arrays: Sequence[np.ndarray],
    statistic: Callable[..., float],
    valid: Callable[..., bool],
    groups: Any,
    n_boot: int,
    alpha: float,
    seed: int,
) -> tuple[float, float, float]:
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"n_boot={n_boot}, alpha={alpha}: need n_boot >= 1 and 0 < alpha < 1")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"paired arrays differ in length: {[len(a) for a in arrays]}")
    estimate = float(statistic(*arrays))
    rng = np.random.default_rng(seed)
    boots = []
    for idx in _resample_indices(n, groups, n_boot, rng):
        sample = [a[idx] for a in arrays]
        if valid(*sample):
            boots.append(float(statistic(*sample)))
    boots_arr = np.asarray(boots)
    boots_arr = boots_arr[np.isfinite(boots_arr)]
    if boots_arr.size == 0:
        warnings.warn("bootstrap: no resample gave a finite statistic; CI is NaN", RuntimeWarning, stacklevel=3)
        return estimate, math.nan, math.nan
    if boots_arr.size < n_boot:
        warnings.warn(
            f"bootstrap: {n_boot - boots_arr.size} of {n_boot} resamples skipped (undefined statistic)",
            RuntimeWarning,
            stacklevel=3,
        )
    lo, hi = np.quantile(boots_arr, [alpha / 2, 1 - alpha / 2])
    return estimate, float(lo), float(hi)


def bootstrap_ci(
    data: Any,
    statistic: Callable[..., float],
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    groups: Any = None,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap confidence interval.

    Args:
        data: One 1-D array of values, or a tuple/list of equally long arrays whose rows
            are resampled together (``statistic`` then receives them as arguments).
        statistic: Function of the resampled array(s) returning a number.
        n_boot: Number of resamples.
        alpha: 1 - confidence level.
        groups: Optional group id per row (e.g. patient id): whole groups are drawn with
            replacement, with all their rows.
        seed: Seed of the resampling; equal seeds give equal intervals.

    Returns:
        ``(estimate on all data, lower, upper)``; non-finite resample statistics are dropped.
    """
    arrays = [np.asarray(a) for a in data] if isinstance(data, (tuple, list)) else [np.asarray(data)]
    for i, a in enumerate(arrays):
        if a.ndim == 0 or len(a) == 0:
            raise ValueError(f"data[{i}]: expected a non-empty array, got shape {a.shape}")
    return _percentile_ci(arrays, statistic, lambda *_: True, groups, n_boot, alpha, seed)


def bootstrap_metric_ci(
    y_true: Any,
    y_score: Any,
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    groups: Any = None,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Bootstrap CI of ``metric_fn(y_true, y_score)`` (e.g. ROC AUC), skipping one-class resamples."""
    y, s = np.asarray(y_true), np.asarray(y_score)
    if len(np.unique(y)) < 2:
        raise ValueError("y_true: a single class; the metric is undefined")
    # two classes or more in the resample: min != max is linear where np.unique sorts
    return _percentile_ci([y, s], metric_fn, lambda yy, _: yy.min() != yy.max(), groups, n_boot, alpha, seed)


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector(a, "a").astype(float), _vector(b, "b").astype(float)
    if len(x) != len(y):
        raise ValueError(f"b: {len(y)} values paired with {len(x)} in a")
    return x, y


def wilcoxon_signed_rank(a: Any, b: Any, *, zero_method: str = "wilcox") -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired per-case values (e.g. Dice per patient).

    Returns ``(statistic, p)``; ``(0.0, 1.0)`` when every difference is zero. NaN values
    raise: drop or impute undefined cases explicitly before testing.
    """
    x, y = _paired(a, b)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("a, b: NaN or inf values; drop or impute undefined cases before testing")
    if np.all(x == y):
        return 0.0, 1.0
    res = sps.wilcoxon(x, y, zero_method=zero_method, alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def _midrank(x: np.ndarray) -> np.ndarray:
    """Ranks (1-based) with ties given their mean rank, along the last axis."""
    return sps.rankdata(x, method="average", axis=-1)


def _delong_components(
    y_true: Any, scores: Sequence[Any], positive: Any, groups: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix by the fast algorithm of Sun & Xu (2014).

    Placement values come from midranks instead of the O(m·n) pairwise kernel:
    for positive i, ``V10_i = (rank_all_i - rank_pos_i) / n`` (share of negatives below
    it, ties counting half); for negative j, ``V01_j = 1 - (rank_all_j - rank_neg_j) / m``.
    With ``groups`` (patients), the covariance is Obuchowski's (1997) for clustered data.
    """
    labels = _vector(y_true, "y_true")
    if len(np.unique(labels)) > 2:
        raise ValueError(f"y_true: {len(np.unique(labels))} distinct labels; DeLong compares binary ROC AUCs")
    y = labels == positive
    s = np.vstack([_vector(x, "score").astype(float) for x in scores])
    if s.shape[1] != len(y):
        raise ValueError(f"score: {s.shape[1]} scores for {len(y)} labels")
    if not np.isfinite(s).all():
        raise ValueError("score: scores must be finite")
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"y_true: {m} positive and {n} negative cases; DeLong needs at least 2 of each")
    pos, neg = s[:, y], s[:, ~y]
    rank_all = _midrank(np.hstack([pos, neg]))
    v10 = (rank_all[:, :m] - _midrank(pos)) / n
    v01 = 1.0 - (rank_all[:, m:] - _midrank(neg)) / m
    aucs = v10.mean(axis=1)
    if groups is not None:
        return aucs, _clustered_cov(aucs, v10, v01, y, groups)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def _clustered_cov(aucs: np.ndarray, v10: np.ndarray, v01: np.ndarray, y: np.ndarray, groups: Any) -> np.ndarray:
    """Obuchowski's (1997) covariance of AUCs whose cases come in clusters (several lesions or images per patient).

    Placement values are summed per cluster and their deviations from ``cases x AUC`` give the covariance, so
    cases of one patient are not counted as independent evidence. With one case per cluster it is DeLong's, up
    to ``I / (I - 1)`` against ``m / (m - 1)``; with every case doubled it is the undoubled data's.
    """
    g = _vector(groups, "groups")
    if len(g) != len(y):
        raise ValueError(f"groups: {len(g)} group ids for {len(y)} cases")
    _, cluster = np.unique(g, return_inverse=True)
    k = int(cluster.max()) + 1
    if k < 2:
        raise ValueError("groups: one cluster only; clustered DeLong needs at least 2 patients")
    m, n = v10.shape[1], v01.shape[1]
    m_i = np.bincount(cluster[y], minlength=k)
    n_i = np.bincount(cluster[~y], minlength=k)
    d10 = _cluster_sums(v10, cluster[y], k) - m_i * aucs[:, None]  # (models, clusters)
    d01 = _cluster_sums(v01, cluster[~y], k) - n_i * aucs[:, None]
    scale = k / (k - 1)
    s10 = scale * d10 @ d10.T / m
    s01 = scale * d01 @ d01.T / n
    s11 = scale * d10 @ d01.T
    return s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def _cluster_sums(values: np.ndarray, members: np.ndarray, k: int) -> np.ndarray:
    """Each model's values summed per cluster: (models, cases) -> (models, k)."""
    return np.stack([np.bincount(members, row, minlength=k) for row in values])


def delong_test(
    y_true: Any, score_a: Any, score_b: Any, *, positive: Any = 1, groups: Any = None
) -> tuple[float, float, float, float]:
    """DeLong test of two correlated ROC AUCs on the same cases.

    ``groups``: the patient of each case; when given, the variance is Obuchowski's for clustered data.

    Returns:
        ``(auc_a, auc_b, z, p)`` with a two-sided p-value; identical AUCs with zero
        variance of the difference (e.g. identical scores) give ``z = 0, p = 1``.
    """
    aucs, cov = _delong_components(y_true, [score_a, score_b], positive, groups)
    diff = aucs[0] - aucs[1]
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if var <= 1e-15:
        z = 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
    else:
        z = float(diff / math.sqrt(var))
    return float(aucs[0]), float(aucs[1]), z, float(2 * sps.norm.sf(abs(z)))


def delong_ci(
    y_true: Any, score: Any, *, alpha: float = 0.05, positive: Any = 1, groups: Any = None
) -> tuple[float, float, float]:
    """ROC AUC with its DeLong (normal) confidence interval, clipped to [0, 1]; ``groups``: as for
    :func:`delong_test` (Obuchowski's clustered variance)."""
    aucs, cov = _delong_components(y_true, [score], positive, groups)
    half = sps.norm.ppf(1 - alpha / 2) * math.sqrt(max(cov[0, 0], 0.0))
    auc = float(aucs[0])
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def mcnemar_test(
    y_true: Any, pred_a: Any, pred_b: Any, *, exact: bool | None = None, groups: Any = None
) -> tuple[float, float]:
    """McNemar test of two classifiers' paired correctness on the same cases.

    With b = cases only A gets right and c = cases only B gets right: the exact binomial
    test (statistic ``min(b, c)``) when ``exact`` is True, or by default when b + c < 25;
    otherwise chi-square with continuity correction, ``max(|b-c| - 1, 0)² / (b + c)``.
    With ``groups`` (the patient of each case): Durkalski et al.'s (2003) clustered statistic,
    ``(Σ_k (b_k - c_k))² / Σ_k (b_k - c_k)²`` over patients k, chi-square with 1 degree of freedom.
    """
    y = _vector(y_true, "y_true")
    a, b_ = _vector(pred_a, "pred_a"), _vector(pred_b, "pred_b")
    if not len(y) == len(a) == len(b_):
        raise ValueError(f"pred_a, pred_b: lengths {len(a)}, {len(b_)} differ from y_true's {len(y)}")
    ok_a, ok_b = a == y, b_ == y
    b, c = int(np.sum(ok_a & ~ok_b)), int(np.sum(~ok_a & ok_b))
    if b + c == 0:
        return 0.0, 1.0
    if groups is not None:
        g = _vector(groups, "groups")
        if len(g) != len(y):
            raise ValueError(f"groups: {len(g)} group ids for {len(y)} cases")
        _, cluster = np.unique(g, return_inverse=True)
        d = np.bincount(cluster, (ok_a & ~ok_b).astype(float) - (~ok_a & ok_b).astype(float))
        stat = float(d.sum() ** 2 / np.sum(d**2)) if np.any(d) else 0.0
        return stat, float(sps.chi2.sf(stat, df=1))
    if (b + c < 25) if exact is None else exact:
        return float(min(b, c)), float(sps.binomtest(min(b, c), b + c, 0.5).pvalue)
    stat = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    return float(stat), float(sps.chi2.sf(stat, df=1))


def corrected_resampled_ttest(scores_a: Any, scores_b: Any, n_train: int, n_test: int) -> tuple[float, float]:
    """Nadeau & Bengio (2003) corrected resampled t-test on per-fold scores.

    The variance of the k fold differences is inflated by ``1/k + n_test/n_train`` to
    account for overlapping training sets; t has k - 1 degrees of freedom; two-sided.
    """
    x, y = _paired(scores_a, scores_b)
    k = len(x)
    if k < 2 or n_train <= 0 or n_test <= 0:
        raise ValueError(f"need >= 2 folds and positive n_train, n_test; got k={k}, {n_train}, {n_test}")
    d = x - y
    mean, var = float(d.mean()), float(d.var(ddof=1))
    denom = math.sqrt((1.0 / k + n_test / n_train) * var)
    if denom == 0:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        t = mean / denom
    return t, float(2 * sps.t.sf(abs(t), df=k - 1))


def holm_correction(pvalues: Any) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error), monotone and capped at 1."""
    p = np.asarray(pvalues, dtype=float).ravel()
    if not (np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()):
        raise ValueError(f"pvalues: expected values in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted
