"""Paired tests of a reference model against every other model and baseline.

The reference is the best DL model by the pooled estimate of the primary metric (the best
model overall when no DL model exists). Each comparison uses only the cases both
models scored: rows are inner-joined on ``case_id`` and ``patient_id`` and ``n`` says
how many were paired (folds for the corrected t-test).

Tests, each on the pairs of one comparison:

* ``wilcoxon`` (segmentation): signed-rank test on per-patient Dice (the primary metric
  when it is a Dice column, e.g. ``dice_WT``); pairs with a NaN on either side dropped.
* ``delong`` (binary classification): DeLong test of the two ROC AUCs; statistic z.
* ``mcnemar`` (classification): McNemar test of paired correctness of ``y_pred``.
* When a patient has several paired cases (LIDC nodules, images mapped by ``patients.csv``), both
  cluster by patient: Obuchowski's (1997) variance for DeLong, Durkalski et al.'s (2003) statistic
  for McNemar; cases of one patient are not independent evidence.
* ``corrected_t`` (every task): Nadeau-Bengio corrected resampled t-test on the fold
  scores of the primary metric, paired by fold, with n_train and n_test the means over
  the reference's folds in ``folds.csv``.

Holm's correction is applied per family, a family being one test across all models
(e.g. every Wilcoxon comparison of the reference); each family answers its own question
(one metric, one kind of evidence), so families are not pooled. ``difference`` is the
reference's advantage on the paired cases, in the metric's direction: reference minus
model where higher is better (mean Dice difference for Wilcoxon, AUC difference for
DeLong, accuracy difference for McNemar, mean fold-score difference for corrected t),
model minus reference where lower is better (HD95). Positive always favours the
reference. ``significant`` is ``p_holm < 0.05``. ``diff_ci_low``/``diff_ci_high``: a paired
patient-bootstrap 95% CI of that difference in the row's metric on the paired cases (for
``corrected_t``: of the pooled primary metric), so every p-value comes with the size of the effect.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from tumorbench.errors import DataError
from tumorbench.evaluation.oof import (
    BINARY_METRIC_FNS,
    KEYS,
    MULTICLASS_METRIC_FNS,
    bootstrap_scores,
    check_folds,
    check_predictions,
    fold_metrics,
    is_binary,
    patient_clusters,
    pooled_ranking,
    resolve,
)
from tumorbench.evaluation.stats import (
    bootstrap_ci,
    bootstrap_metric_ci,
    corrected_resampled_ttest,
    delong_test,
    holm_correction,
    mcnemar_test,
    wilcoxon_signed_rank,
)
from tumorbench.tasks import get_task

__all__ = ["STATS_COLUMNS", "paired_statistics", "primary_test"]

STATS_COLUMNS = [
    "reference",
    "model",
    "kind",
    "test",
    "metric",
    "n",
    "statistic",
    "p",
    "p_holm",
    "difference",
    "diff_ci_low",
    "diff_ci_high",
    "significant",
]
N_BOOT = 2000
ALPHA = 0.05

# A test on paired rows returns (statistic, p, difference).
PairTest = Callable[[pd.DataFrame], tuple[float, float, float]]


def primary_test(task: str, primary: str, stats: pd.DataFrame | None = None) -> str:
    """The test whose adjusted p-value the console shows for ``primary``.

    The per-case test of that very metric (DeLong for ``auc``, McNemar for ``accuracy``,
    Wilcoxon for Dice), else the corrected resampled t-test on its fold scores.
    """
    test = get_task(task).primary_test(primary)
    if stats is not None and test not in set(stats["test"]):
        test = "corrected_t"
    return test


def wilcoxon_case_test(metric: str) -> tuple[str, str, PairTest]:
    """The Wilcoxon signed-rank test of a per-case metric (Dice per patient)."""
    return "wilcoxon", metric, _wilcoxon(metric)


def _wilcoxon(metric: str) -> PairTest:
    def run(pair: pd.DataFrame) -> tuple[float, float, float]:
        a, b = pair[f"{metric}_ref"].to_numpy(float), pair[f"{metric}_other"].to_numpy(float)
        stat, p = wilcoxon_signed_rank(a, b)
        return stat, p, float(np.mean(a - b))

    return run


def _delong(pair: pd.DataFrame) -> tuple[float, float, float]:
    groups = patient_clusters(pair["patient_id"])
    auc_a, auc_b, z, p = delong_test(pair["y_true_ref"], pair["y_score_ref"], pair["y_score_other"], groups=groups)
    return z, p, auc_a - auc_b


def _mcnemar(pair: pd.DataFrame) -> tuple[float, float, float]:
    y = pair["y_true_ref"].to_numpy()
    a, b = pair["y_pred_ref"].to_numpy(), pair["y_pred_other"].to_numpy()
    stat, p = mcnemar_test(y, a, b, groups=patient_clusters(pair["patient_id"]))
    return stat, p, float(np.mean(a == y) - np.mean(b == y))


def classification_case_tests(pred: pd.DataFrame) -> list[tuple[str, str, PairTest]]:
    """McNemar on the decisions, and DeLong on the scores of a binary task."""
    tests: list[tuple[str, str, PairTest]] = [("mcnemar", "accuracy", _mcnemar)]
    if is_binary(pred):
        tests.insert(0, ("delong", "auc", _delong))
    return tests


def _run(test: str, fn: PairTest, pair: pd.DataFrame, what: str) -> tuple[float, float, float]:
    try:
        return fn(pair)
    except ValueError as exc:  # too few pairs or classes for this test: reported, not fatal
        warnings.warn(f"{test} test of {what} not computed: {exc}", RuntimeWarning, stacklevel=3)
        return math.nan, math.nan, math.nan


def check_same_labels(pair: pd.DataFrame) -> pd.DataFrame:
    """Paired classification rows must agree on the truth."""
    clash = pair[pair["y_true_ref"] != pair["y_true_other"]]
    if len(clash):
        raise DataError(
            "predictions.csv",
            f"models {pair['model_ref'].iloc[0]!r} and {pair['model_other'].iloc[0]!r}"
            f" disagree on y_true of case {clash['case_id'].iloc[0]!r}",
        )
    return pair


def _fold_test(folds: pd.DataFrame, reference: str, model: str, primary: str) -> tuple[int, float, float, float]:
    ref = folds[folds["model"] == reference][["fold", primary, "n_train", "n_test"]]
    other = folds[folds["model"] == model][["fold", primary]]
    pair = ref.merge(other, on="fold", suffixes=("_ref", "_other")).dropna(
        subset=[f"{primary}_ref", f"{primary}_other"]
    )
    a, b = pair[f"{primary}_ref"].to_numpy(float), pair[f"{primary}_other"].to_numpy(float)

    def run(_: pd.DataFrame) -> tuple[float, float, float]:
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError(f"infinite {primary} fold scores (e.g. HD95 of a missed tumour)")
        t, p = corrected_resampled_ttest(a, b, float(ref["n_train"].mean()), float(ref["n_test"].mean()))
        return t, p, float(np.mean(a - b))

    return (len(pair), *_run("corrected_t", run, pair, f"{reference} vs {model}"))


def _holm_by_family(table: pd.DataFrame) -> pd.DataFrame:
    table["p_holm"] = math.nan
    for _, idx in table.groupby("test").groups.items():
        p = table.loc[idx, "p"]
        finite = p[p.notna()]
        if len(finite):
            table.loc[finite.index, "p_holm"] = holm_correction(finite.to_numpy())
    table["significant"] = table["p_holm"] < ALPHA  # NaN compares False
    return table[STATS_COLUMNS]


def delta_ci(
    pair: pd.DataFrame, metric: str, binary: bool, *, n_boot: int = N_BOOT, alpha: float = ALPHA, seed: int = 0
) -> tuple[float, float]:
    """Paired patient-bootstrap CI of ``metric(reference) - metric(model)`` on the paired cases (ΔAUC, ΔDice).

    Both models are scored on the same resampled patients, so their shared difficulty cancels. Pairs with
    ``y_true`` are classified cases (the metric recomputed on each resample); otherwise per-patient values.
    """
    groups = pair["patient_id"].to_numpy()
    grouped = patient_clusters(groups)
    try:
        if "y_true_ref" not in pair.columns:
            diff = (pair[f"{metric}_ref"] - pair[f"{metric}_other"]).to_numpy(float)
            ok = ~np.isnan(diff)
            if not ok.any() or not np.isfinite(diff[ok]).all():
                return math.nan, math.nan
            _, lo, hi = bootstrap_ci(
                diff[ok], np.mean, n_boot=n_boot, alpha=alpha, groups=None if grouped is None else groups[ok], seed=seed
            )
            return lo, hi
        ref, other = _paired_scores(pair, metric, binary)
        ref, other = (bootstrap_scores(s, metric, binary) for s in (ref, other))  # each model's on its own
        fn = (BINARY_METRIC_FNS if binary else MULTICLASS_METRIC_FNS)[metric]
        k = ref.shape[1] if ref.ndim == 2 else 0
        stacked = np.column_stack([ref, other])

        def delta(y: np.ndarray, s: np.ndarray) -> float:
            a, b = (s[:, :k], s[:, k:]) if k else (s[:, 0], s[:, 1])
            return fn(y, a) - fn(y, b)

        _, lo, hi = bootstrap_metric_ci(
            pair["y_true_ref"].to_numpy(), stacked, delta, grouped, n_boot=n_boot, alpha=alpha, seed=seed
        )
    except ValueError:  # one class among the paired cases: the metric is undefined
        return math.nan, math.nan
    return lo, hi


def _paired_scores(pair: pd.DataFrame, metric: str, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    if binary:
        column = "y_score" if metric == "auc" else "y_pred"
        return pair[f"{column}_ref"].to_numpy(float), pair[f"{column}_other"].to_numpy(float)
    cols = [c[: -len("_ref")] for c in pair.columns if c.startswith("p_") and c.endswith("_ref")]
    cols.sort(key=lambda c: int(c[2:]) if c[2:].isdigit() else c)
    return (pair[[f"{c}_ref" for c in cols]].to_numpy(float), pair[[f"{c}_other" for c in cols]].to_numpy(float))


def _comparison_rows(
    pred: pd.DataFrame, folds: pd.DataFrame, task: str, primary: str, reference: str, model: str, kind: str
) -> list[dict]:
    base = {"reference": reference, "model": model, "kind": kind}
    ref, other = pred[pred["model"] == reference], pred[pred["model"] == model]
    spec = get_task(task)
    binary = spec.is_binary(pred)
    rows = []
    for test, metric, fn in spec.case_tests(primary, pred):
        pair = spec.pair_cases(
            ref.merge(other, on=list(KEYS), suffixes=("_ref", "_other")), metric if test == "wilcoxon" else None
        )
        stat, p, diff = _run(test, fn, pair, f"{reference} vs {model}")
        lo, hi = delta_ci(pair, metric, binary)
        rows.append(
            {
                **base,
                "test": test,
                "metric": metric,
                "n": len(pair),
                "statistic": stat,
                "p": p,
                "difference": diff,
                "diff_ci_low": lo,
                "diff_ci_high": hi,
            }
        )
    if folds["fold"].nunique() < 2:  # one scoring (a locked test set): no fold-level test to run
        return _signed(rows, spec)
    n, stat, p, diff = _fold_test(folds, reference, model, primary)
    # The fold test's difference is a mean over folds; its CI is the paired bootstrap of the pooled primary.
    merged = ref.merge(other, on=list(KEYS), suffixes=("_ref", "_other"))
    lo, hi = delta_ci(spec.pair_cases(merged, None if "y_true" in pred.columns else primary), primary, binary)
    rows.append(
        {
            **base,
            "test": "corrected_t",
            "metric": primary,
            "n": n,
            "statistic": stat,
            "p": p,
            "difference": diff,
            "diff_ci_low": lo,
            "diff_ci_high": hi,
        }
    )
    return _signed(rows, spec)


def _signed(rows: list[dict], spec) -> list[dict]:
    """The reference's advantage: positive favours it whichever way the metric improves."""
    for row in rows:
        if spec.mode(row["metric"]) == "min":
            row["difference"] = -row["difference"]
            row["diff_ci_low"], row["diff_ci_high"] = -row["diff_ci_high"], -row["diff_ci_low"]
    return rows


def paired_statistics(
    predictions: pd.DataFrame,
    folds: pd.DataFrame | None = None,
    task: str | None = None,
    *,
    primary: str | None = None,
    reference: str | None = None,
) -> pd.DataFrame:
    """Paired tests of the reference against every other model, with Holm per test family.

    Args:
        predictions: Out-of-fold predictions (contract in :mod:`~tumorbench.evaluation.leaderboard`).
        folds: The folds table; computed from the predictions when None.
        task: ``"classification"`` or ``"segmentation"``; inferred when None.
        primary: Metric ranking the models and tested on fold scores (task default when None).
        reference: The model everything is compared with; the best DL model when None.

    Returns:
        Columns :data:`STATS_COLUMNS`, models in leaderboard order (see the module docstring).
    """
    task, primary = resolve(predictions, task, primary)
    pred = check_predictions(predictions, task)
    folds = check_folds(fold_metrics(pred, task) if folds is None else folds, pred, task, primary)
    order = pooled_ranking(pred, task, primary)
    kinds = pred.groupby("model")["kind"].first()
    if reference is None:
        reference = next((m for m in order if kinds[m] == "dl"), order[0])
    elif reference not in kinds.index:
        raise ValueError(f"reference: {reference!r} is not one of the models {sorted(kinds.index)}")
    rows = []
    for model in order:
        if model != reference:
            rows += _comparison_rows(pred, folds, task, primary, reference, model, kinds[model])
    table = pd.DataFrame(rows, columns=[c for c in STATS_COLUMNS if c not in ("p_holm", "significant")])
    return _holm_by_family(table)
