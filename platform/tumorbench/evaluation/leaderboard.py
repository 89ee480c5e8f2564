"""Leaderboard and paired statistics from a comparison study's out-of-fold results.

Input contract (what ``experiments/compare.py`` writes into a results directory):

``predictions.csv`` (or ``.parquet``): one row per (model, case) of the best
configuration of every model and baseline, out-of-fold (each case scored by the fold
model that did not train on it). Every task: ``model``, ``kind`` (``"dl"`` or
``"baseline"``), ``fold`` (int), ``case_id``, ``patient_id``.

* Classification: ``y_true`` (0/1 with 1 the positive class, or class index 0..K-1);
  ``y_score``, the probability of class 1 (binary), or one ``p_<class>`` column per
  class in class-index order (K > 2; best effort: argmax decisions, macro metrics, no
  DeLong); ``y_pred`` (optional, derived as ``y_score >= 0.5`` or argmax when absent).
  Threshold metrics and McNemar use ``y_pred``; AUC, ROC and DeLong use the scores.
* Segmentation: one row per patient with per-patient ``dice`` and any of ``iou``,
  ``hd95``, ``sensitivity``, ``precision`` and BraTS region columns (``dice_WT``,
  ``dice_TC``, ``dice_ET``, likewise ``hd95_WT`` ...). NaN means undefined and is
  dropped; an infinite HD95 (tumour missed, or predicted where there is none) is kept,
  so that model's HD95 mean is inf and its CI NaN rather than a flattering number.

``folds.csv``: one row per (model, fold) with ``model, kind, fold, n_train, n_test`` and
the fold's metrics (classification: computed on the fold's cases; segmentation: mean of
the per-patient values). :func:`fold_metrics` derives it when absent, taking ``n_test``
as the fold's cases and ``n_train`` as the model's cases in the other folds (plain
k-fold cross-validation).

``configs.json`` (optional): ``{model: {hyperparameter: value}}``, shown in the report.

Outputs: :func:`leaderboard` (``leaderboard.csv``), :func:`paired_statistics`
(``stats.csv``), :func:`format_leaderboard` (the console table), and
:func:`summarize_results`, which reads a results directory and writes the two CSVs.
Input checks and the folds table live in :mod:`tumorbench.evaluation.oof`, the paired
tests (pairing, test families, Holm, sign of differences) in
:mod:`tumorbench.evaluation.paired`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tumorbench.errors import DataError
from tumorbench.evaluation.calibration import calibration_values
from tumorbench.evaluation.oof import (
    BINARY_METRIC_FNS,
    MULTICLASS_METRIC_FNS,
    bootstrap_scores,
    check_folds,
    check_predictions,
    classification_values,
    fold_metrics,
    lower_is_better,
    patient_clusters,
    per_class_values,
    resolve,
    score_matrix,
)
from tumorbench.evaluation.paired import paired_statistics, primary_test
from tumorbench.evaluation.stats import bootstrap_ci, bootstrap_metric_ci, delong_ci
from tumorbench.tasks import get_task

__all__ = [
    "fold_metrics",
    "format_leaderboard",
    "leaderboard",
    "load_results",
    "paired_statistics",
    "summarize_results",
]


def _mean_sd(values: pd.Series) -> tuple[float, float]:
    """Mean and SD (ddof=1) over folds, NaN skipped; an infinite fold value gives (inf, NaN)."""
    mean = float(values.mean())
    return mean, float(values.std(ddof=1)) if np.isfinite(mean) else math.nan


def _mean_ci(g: pd.DataFrame, metric: str, n_boot: int, alpha: float, seed: int) -> tuple[float, float, float]:
    """Mean per-patient value and its patient bootstrap CI (NaN dropped; inf gives a NaN CI)."""
    ok = g[metric].notna().to_numpy()
    values, groups = g[metric].to_numpy(float)[ok], g["patient_id"].to_numpy()[ok]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    if not np.isfinite(values).all():
        return float(values.mean()), math.nan, math.nan
    return bootstrap_ci(values, np.mean, n_boot=n_boot, alpha=alpha, groups=patient_clusters(groups), seed=seed)


def _classification_ci(
    g: pd.DataFrame, metric: str, binary: bool, n_boot: int, alpha: float, seed: int
) -> tuple[float, float]:
    """Patient bootstrap CI of a pooled classification metric (NaN when undefined)."""
    y, grouped = g["y_true"].to_numpy(), patient_clusters(g["patient_id"])
    if binary:
        fn = BINARY_METRIC_FNS[metric]
        score = g["y_score" if metric == "auc" else "y_pred"].to_numpy(float)
    else:
        fn, score = MULTICLASS_METRIC_FNS[metric], score_matrix(g)
    score = bootstrap_scores(score, metric, binary)
    try:
        _, lo, hi = bootstrap_metric_ci(y, score, fn, grouped, n_boot=n_boot, alpha=alpha, seed=seed)
    except ValueError:  # a single class among this model's cases
        return math.nan, math.nan
    return lo, hi


def _delong_interval(g: pd.DataFrame, alpha: float) -> tuple[float, float]:
    groups = patient_clusters(g["patient_id"])
    try:
        _, lo, hi = delong_ci(g["y_true"].to_numpy(), g["y_score"].to_numpy(float), alpha=alpha, groups=groups)
    except ValueError:  # fewer than two cases of a class
        return math.nan, math.nan
    return lo, hi


def classification_pooled_row(
    g: pd.DataFrame, metrics: list[str], binary: bool, n_boot: int, alpha: float, seed: int
) -> dict[str, float]:
    """Each metric on the pooled cases with its patient-bootstrap CI; binary AUC adds DeLong's interval."""
    row: dict[str, float] = {}
    pooled = classification_values(g, binary)
    for m in metrics:
        lo, hi = _classification_ci(g, m, binary, n_boot, alpha, seed)
        row.update({f"{m}_pooled": pooled[m], f"{m}_ci_low": lo, f"{m}_ci_high": hi})
    scores = g["y_score"].to_numpy(float) if binary else score_matrix(g)
    row.update(calibration_values(g["y_true"].to_numpy(), scores))
    if binary:
        row["auc_delong_low"], row["auc_delong_high"] = _delong_interval(g, alpha)
    else:
        row.update(per_class_values(g))  # macro AUC alone hides a class the model never gets right
    return row


def mean_pooled_row(g: pd.DataFrame, metrics: list[str], n_boot: int, alpha: float, seed: int) -> dict[str, float]:
    """Each metric's mean per-case value with its patient-bootstrap CI (per-patient segmentation scores).

    A distance (HD95: lower is better) also gets ``<m>_median`` and ``<m>_n_inf``: one missed tumour makes
    its mean inf, and the median with the count of infinite cases is what a reader can still compare.
    """
    row: dict[str, float] = {}
    for m in metrics:
        est, lo, hi = _mean_ci(g, m, n_boot, alpha, seed)
        row.update({f"{m}_pooled": est, f"{m}_ci_low": lo, f"{m}_ci_high": hi})
        if lower_is_better(m, "segmentation"):
            values = g[m].dropna().to_numpy(float)
            row[f"{m}_median"] = float(np.median(values)) if values.size else math.nan
            row[f"{m}_n_inf"] = int(np.isinf(values).sum())
    return row


def infinite_note(r: pd.Series | dict, metric: str, digits: int = 1, always: bool = False) -> str:
    """``" (median 12.3; 1 of 39 cases inf)"`` for a distance with infinite cases, else ``""``.

    ``always``: the median (and count) even without infinite cases, for a column where another model has
    some, so that the reader compares medians with medians.
    """
    n_inf = r.get(f"{metric}_n_inf", math.nan)
    if (isinstance(n_inf, float) and math.isnan(n_inf)) or not (n_inf or always):  # no such column, or nothing to say
        return ""
    return f" (median {_fmt(r[f'{metric}_median'], digits)}; {int(n_inf)} of {int(r['n_patients'])} cases inf)"


def with_infinite(lb: pd.DataFrame, metrics: list[str]) -> set[str]:
    """The metrics for which some model of ``lb`` has infinite cases (their medians are shown for all)."""
    return {m for m in metrics if f"{m}_n_inf" in lb.columns and (lb[f"{m}_n_inf"].fillna(0) > 0).any()}


def leaderboard(
    predictions: pd.DataFrame,
    folds: pd.DataFrame | None = None,
    task: str | None = None,
    *,
    primary: str | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per model and baseline, best first.

    Args:
        predictions: Out-of-fold predictions (module contract).
        folds: The folds table; computed by :func:`fold_metrics` when None.
        task: ``"classification"`` or ``"segmentation"``; inferred from the columns when None.
        primary: Ranking metric (default: ``auc`` / ``dice``); HD95 ranks lowest first.
        n_boot, alpha, seed: Patient bootstrap of the CIs (same seed, same intervals).

    Returns:
        ``rank, model, kind, n_cases, n_patients, n_folds`` and per metric ``<m>_mean``,
        ``<m>_sd`` (over folds, ddof=1), ``<m>_pooled`` (classification: on all pooled
        out-of-fold cases; segmentation: mean per-patient value) with its percentile
        bootstrap CI ``<m>_ci_low``/``<m>_ci_high`` (whole patients resampled);
        binary AUC adds the DeLong interval ``auc_delong_low``/``auc_delong_high``; multi-class adds the
        pooled one-vs-rest ``auc_class<k>`` and ``sensitivity_class<k>`` per class index k. Classification
        adds the calibration of the pooled probabilities: ``brier`` and ``ece``
        (:mod:`~tumorbench.evaluation.calibration`).
        Sorted by ``<primary>_pooled`` (the estimate the CI and the paired tests are about; ties by name);
        ``attrs`` hold ``task`` and ``primary``.
    """
    task, primary = resolve(predictions, task, primary)
    pred = check_predictions(predictions, task)
    folds = check_folds(fold_metrics(pred, task) if folds is None else folds, pred, task, primary)
    spec = get_task(task)
    metrics = [m for m in spec.metric_names(pred) if m in folds.columns]
    binary = spec.is_binary(pred)
    rows = []
    for model, g in pred.groupby("model", sort=False):
        f = folds[folds["model"] == model]
        row: dict[str, Any] = {
            "model": model,
            "kind": g["kind"].iloc[0],
            "n_cases": len(g),
            "n_patients": g["patient_id"].nunique(),
            "n_folds": f["fold"].nunique(),
        }
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_sd"] = _mean_sd(f[m])
        row.update(spec.pooled_row(g, metrics, binary, n_boot, alpha, seed))
        rows.append(row)
    lb = pd.DataFrame(rows).sort_values("model", kind="stable")
    lb = lb.sort_values(
        f"{primary}_pooled", ascending=lower_is_better(primary, task), na_position="last", kind="stable"
    )
    lb = lb.reset_index(drop=True)
    lb.insert(0, "rank", np.arange(1, len(lb) + 1))
    lb.attrs.update(task=task, primary=primary)
    return lb


def _fmt(x: Any, digits: int) -> str:
    x = float(x)
    if math.isnan(x):
        return "n/a"
    return "inf" if math.isinf(x) else f"{x:.{digits}f}"


def _fmt_p(p: float, significant: bool) -> str:
    if not np.isfinite(p):
        return "n/a"
    text = "<0.001" if p < 0.001 else f"{p:.3f}"
    return text + ("*" if significant else "")


def _p_column(
    lb: pd.DataFrame, stats: pd.DataFrame | None, task: str, primary: str, digits: int = 3
) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the difference to the reference [paired bootstrap CI] and its adjusted p-value."""
    if stats is None or stats.empty:
        return [], []
    test = primary_test(task, primary, stats)
    rows = stats[stats["test"] == test].set_index("model")
    reference = str(stats["reference"].iloc[0])
    metric = str(rows["metric"].iloc[0]) if len(rows) else primary
    cells = []
    for model in lb["model"]:
        if model == reference:
            cells.append(["ref", "ref"])
        elif model in rows.index:
            r = rows.loc[model]
            delta = (
                f"{_fmt(r['difference'], digits)} [{_fmt(r.get('diff_ci_low', math.nan), digits)}, "
                f"{_fmt(r.get('diff_ci_high', math.nan), digits)}]"
            )
            cells.append([delta, _fmt_p(r["p_holm"], bool(r["significant"]))])
        else:
            cells.append(["n/a", "n/a"])
    return [f"Δ{metric} (ref − model) [95% CI]", f"p_holm vs {reference} ({test})"], cells


def format_leaderboard(
    lb: pd.DataFrame, task: str, *, stats: pd.DataFrame | None = None, primary: str | None = None, digits: int = 3
) -> str:
    """The leaderboard as an aligned text table for the console.

    Columns: rank, model, kind, the primary metric's pooled out-of-fold estimate with its 95% CI
    (patient bootstrap; rows are ranked by it), its fold mean ± SD (a second, different estimate),
    fold means of the task's key metrics and, given ``stats``, the difference to the reference with
    its paired bootstrap CI and the Holm-adjusted p-value of the primary metric's own test: DeLong
    for AUC, McNemar for accuracy, Wilcoxon for Dice, and the corrected resampled t-test on fold
    scores for every other metric (``*``: p_holm < 0.05).
    """
    spec = get_task(task)
    primary = spec.check_metric(primary or lb.attrs.get("primary"))
    others = [m for m in spec.leaderboard_metrics(lb.columns) if m != primary]
    # A BraTS study's `dice` is the mean over its regions, whose own columns follow it.
    name = (
        f"{primary} ({'/'.join(spec.regions)} mean)"
        if primary == "dice" and f"dice_{spec.regions[0]}" in others
        else primary
    )
    header = ["#", "model", "kind", f"{name} pooled [95% CI]", f"{name} fold mean ± SD"] + others
    body, medians = [], with_infinite(lb, others)
    for _, r in lb.iterrows():
        body.append(
            [
                str(r["rank"]),
                str(r["model"]),
                str(r["kind"]),
                f"{_fmt(r[f'{primary}_pooled'], digits)} [{_fmt(r[f'{primary}_ci_low'], digits)}, "
                f"{_fmt(r[f'{primary}_ci_high'], digits)}]",
                f"{_fmt(r[f'{primary}_mean'], digits)} ± {_fmt(r[f'{primary}_sd'], digits)}",
            ]
            + [_fmt(r[f"{m}_mean"], digits) + infinite_note(r, m, digits, m in medians) for m in others]
        )
    p_titles, p_cells = _p_column(lb, stats, task, primary, digits)
    if p_cells:
        header += p_titles
        body = [b + c for b, c in zip(body, p_cells)]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header] + body]
    n_folds = int(lb["n_folds"].max()) if len(lb) else 0
    best = "lowest" if lower_is_better(primary, task) else "highest"
    intro = (
        f"Leaderboard ({task}; ranked by the pooled {primary}, {best} first; pooled: all out-of-fold "
        f"predictions, 95% CI by patient bootstrap; fold mean ± SD over {n_folds} folds; "
        "other metrics: fold means)"
        if n_folds != 1
        else f"Leaderboard ({task}; ranked by {primary} on the test cases, scored once, {best} first; 95% CI by "
        "patient bootstrap; no spread over folds)"
    )
    return "\n".join([intro, lines[0], "-" * len(lines[0])] + lines[1:])


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read the table ({exc})") from exc


def load_results(results_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """``(predictions, folds or None, configs or {})`` from a results directory."""
    root = Path(results_dir)
    candidates = [root / "predictions.csv", root / "predictions.parquet"]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DataError(root, "no predictions.csv or predictions.parquet (is this a comparison results folder?)")
    predictions = _read_table(found)
    folds = _read_table(root / "folds.csv") if (root / "folds.csv").is_file() else None
    configs: dict = {}
    if (root / "configs.json").is_file():
        try:
            configs = json.loads((root / "configs.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataError(root / "configs.json", f"not valid JSON ({exc})") from exc
    return predictions, folds, configs


def summarize_results(
    results_dir: str | Path,
    *,
    task: str | None = None,
    primary: str | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compute and write ``leaderboard.csv``, ``stats.csv`` (and ``folds.csv`` when absent).

    Returns:
        ``(leaderboard, stats)``; print them with :func:`format_leaderboard`.
    """
    root = Path(results_dir)
    predictions, folds, _ = load_results(root)
    task, primary = resolve(predictions, task, primary)
    if folds is None:
        folds = fold_metrics(predictions, task)
        folds.to_csv(root / "folds.csv", index=False)
    lb = leaderboard(predictions, folds, task, primary=primary, n_boot=n_boot, alpha=alpha, seed=seed)
    stats = paired_statistics(predictions, folds, task, primary=primary)
    lb.to_csv(root / "leaderboard.csv", index=False)
    stats.to_csv(root / "stats.csv", index=False)
    return lb, stats
