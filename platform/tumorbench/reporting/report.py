"""``report.html``: one self-contained page of a comparison study's results.

Everything is inline (CSS in a ``<style>`` block, figures as base64 PNG ``data:`` URIs,
no scripts), so the page reads the same offline, mailed, or archived with the results.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from tumorbench.errors import DataError
from tumorbench.evaluation.leaderboard import infinite_note, leaderboard, load_results, with_infinite
from tumorbench.evaluation.oof import (
    check_folds,
    check_predictions,
    fold_metrics,
    is_binary,
    metric_names,
    resolve,
)
from tumorbench.evaluation.paired import paired_statistics, primary_test
from tumorbench.reporting.figures import (
    confusion_figure,
    dice_figure,
    extreme_cases,
    forest_figure,
    reliability_figure,
    roc_figure,
)
from tumorbench.reporting.html import CSS, esc, figure_tag, html_table, key_values, num, pvalue
from tumorbench.reporting.sections import configs_section, explanations_section, locked_test_section, overlays_section
from tumorbench.tasks import get_task

__all__ = ["write_report"]


def _p_cells(lb: pd.DataFrame, stats: pd.DataFrame, task: str, primary: str) -> tuple[list[str], list[list[str]]]:
    """Headers and cells: difference to the reference [paired bootstrap CI] and the adjusted p-value."""
    if stats.empty:
        return [], []
    test = primary_test(task, primary, stats)
    rows = stats[stats["test"] == test].set_index("model")
    reference = stats["reference"].iloc[0]
    metric = str(rows["metric"].iloc[0]) if len(rows) else primary
    cells = []
    for m in lb["model"]:
        if m == reference or m not in rows.index:
            cells.append(["reference" if m == reference else "n/a"] * 2)
        else:
            r = rows.loc[m]
            text = pvalue(r["p_holm"])
            delta = f"{num(r['difference'])} [{num(r.get('diff_ci_low'))}, {num(r.get('diff_ci_high'))}]"
            cells.append([delta, f"<b>{text}</b>" if bool(r["significant"]) else text])
    return [
        f"Δ{esc(metric)} (reference − model) [95% CI, paired bootstrap]",
        f"p<sub>Holm</sub> vs {esc(reference)} ({esc(test)}; bold: &lt; 0.05)",
    ], cells


def _leaderboard_section(lb: pd.DataFrame, stats: pd.DataFrame, task: str, primary: str, once: bool = False) -> str:
    """``once``: one scoring (a locked test set), so no fold mean or SD: each metric's value alone."""
    metrics = [c[: -len("_mean")] for c in lb.columns if c.endswith("_mean")]
    first = get_task(task).leaderboard_metrics(lb.columns)  # BraTS regions right after the primary
    others = [m for m in first + [m for m in metrics if m not in first] if m != primary]
    delong = primary == "auc" and "auc_delong_low" in lb.columns
    p_headers, p_cells = _p_cells(lb, stats, task, primary)
    spread = "" if once else " fold mean ± SD"
    header = ["#", "model", "kind", f"<b>{esc(primary)}</b> pooled [95% CI, bootstrap]"]
    header += [] if once else [f"{esc(primary)}{spread}"]
    header += ["95% CI (DeLong)"] * delong + p_headers + [f"{esc(m)}{spread}" for m in others]

    def value(r: pd.Series, m: str) -> str:
        return num(r[f"{m}_mean"]) if once else f"{num(r[f'{m}_mean'])} ± {num(r[f'{m}_sd'])}"

    rows, medians = [], with_infinite(lb, list(metrics))
    for i, (_, r) in enumerate(lb.iterrows()):
        row = [
            esc(r["rank"]),
            f"<b>{esc(r['model'])}</b>",
            esc(r["kind"]),
            f"<b>{num(r[f'{primary}_pooled'])}</b> [{num(r[f'{primary}_ci_low'])}, {num(r[f'{primary}_ci_high'])}]",
        ] + ([] if once else [value(r, primary)])
        if delong:
            row.append(f"[{num(r['auc_delong_low'])}, {num(r['auc_delong_high'])}]")
        row += (p_cells[i] if p_cells else []) + [
            f"{value(r, m)}{esc(infinite_note(r, m, 3, m in medians))}" for m in others
        ]
        rows.append(row)
    pooled = [
        [esc(r["model"])]
        + [
            f"{num(r[f'{m}_pooled'])} [{num(r[f'{m}_ci_low'])}, {num(r[f'{m}_ci_high'])}]"
            f"{esc(infinite_note(r, m, 3, m in medians))}"
            for m in metrics
        ]
        for _, r in lb.iterrows()
    ]
    pooled_note = (
        "the metric on all pooled {} predictions (classification) or the mean per-patient value "
        "(segmentation), with a percentile bootstrap resampling whole patients; rows are ranked by it, and the "
        "paired tests are about it."
    )
    delta = " Δ: reference minus model on the cases both scored, with a paired patient-bootstrap CI."
    if once:  # no folds: one estimate, and no fold mean to explain
        note = "Pooled [95% CI]: " + pooled_note.format("test-set") + delta
    else:
        note = (
            "Two different estimates, side by side. Pooled [95% CI]: "
            + pooled_note.format("out-of-fold")
            + " Fold mean ± SD: the mean of the per-fold values (SD with ddof=1)."
            + delta
        )
    return (
        f"<h2>Leaderboard</h2>{html_table(header, rows, text_cols=3)}<p class='note'>{note}</p>"
        f"<h3>Every metric: pooled estimate [95% CI]</h3>{html_table(['model'] + [esc(m) for m in metrics], pooled)}"
        + figure_tag(forest_figure(lb, primary, task), "leaderboard forest plot")
    )


def _stats_section(stats: pd.DataFrame) -> str:
    if stats.empty:
        return "<h2>Paired statistics</h2><p>Only one model: nothing to compare.</p>"
    header = [
        "reference",
        "model",
        "kind",
        "test",
        "metric",
        "n paired",
        "statistic",
        "difference (ref − model)",
        "95% CI of the difference",
        "p",
        "p<sub>Holm</sub>",
        "significant",
    ]
    rows, classes = [], []
    for _, r in stats.iterrows():
        sig = bool(r["significant"])
        rows.append(
            [
                esc(r["reference"]),
                esc(r["model"]),
                esc(r["kind"]),
                esc(r["test"]),
                esc(r["metric"]),
                esc(r["n"]),
                num(r["statistic"]),
                num(r["difference"], 4),
                f"[{num(r.get('diff_ci_low'), 4)}, {num(r.get('diff_ci_high'), 4)}]",
                pvalue(r["p"]),
                pvalue(r["p_holm"]),
                "yes" if sig else "no",
            ]
        )
        classes.append("sig" if sig else "")
    note = (
        "Each comparison pairs the reference (best DL model) with another model on the cases both scored "
        "(n paired; folds for corrected_t). wilcoxon: signed-rank on per-patient Dice; delong: ROC AUC; "
        "mcnemar: paired correctness; corrected_t: Nadeau–Bengio corrected resampled t-test on fold scores. "
        "Holm's correction runs within each test family (one test across all models). Difference is reference "
        "minus model: positive = reference higher (better, except for HD95). "
        "Significant: p<sub>Holm</sub> &lt; 0.05."
    )
    table = html_table(header, rows, text_cols=5, row_class=classes)
    return f"<h2>Paired statistics</h2>{table}<p class='note'>{note}</p>"


def _folds_section(folds: pd.DataFrame, order: Sequence[str], primary: str) -> str:
    wide = folds.pivot_table(index="model", columns="fold", values=primary, aggfunc="first").reindex(order)
    sizes = folds.groupby("fold")["n_test"].max()
    header = ["model"] + [f"fold {esc(f)} (n={esc(sizes.get(f, ''))})" for f in wide.columns]
    rows = [[esc(m)] + [num(v) for v in wide.loc[m]] for m in wide.index]
    return f"<h2>{esc(primary)} per fold</h2>{html_table(header, rows)}"


def classification_figures(
    pred: pd.DataFrame,
    lb: pd.DataFrame,
    reference: str,
    n_boot: int,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> str:
    """ROC curves (binary) and confusion matrices of the best DL model and the best baseline.

    ``class_names`` (index order, from ``manifest.json``) label the matrices' axes instead of 0, 1, ...
    """
    parts = []
    if is_binary(pred):
        parts.append(
            figure_tag(roc_figure(pred, lb["model"].tolist(), reference, n_boot=n_boot, seed=seed), "ROC curves")
        )
    pairs = [("best DL", reference)]
    baselines = lb[lb["kind"] == "baseline"]["model"].tolist()
    if baselines:
        pairs.append(("best baseline", baselines[0]))
    parts.append(figure_tag(confusion_figure(pred, pairs, class_names), "confusion matrices"))
    return (
        "<h2>ROC curves and confusion matrices</h2>"
        + "".join(parts)
        + _per_class_section(lb)
        + _calibration_section(pred, lb)
    )


def _calibration_section(pred: pd.DataFrame, lb: pd.DataFrame) -> str:
    """Brier score, ECE and the reliability diagram of every classifier."""
    if "brier" not in lb.columns:
        return ""
    rows = [[esc(r["model"]), esc(r["kind"]), num(r["brier"]), num(r["ece"])] for _, r in lb.iterrows()]
    note = (
        "Brier: mean squared error of the probabilities (lower is better; multi-class: summed over classes). "
        "ECE: expected calibration error over 10 equal-width bins, |observed − predicted| weighted by the "
        "bin's share of the cases (binary: p(positive); multi-class: top-label confidence)."
    )
    return (
        "<h2>Calibration</h2>"
        + html_table(["model", "kind", "Brier", "ECE"], rows, text_cols=2)
        + f"<p class='note'>{note}</p>"
        + figure_tag(reliability_figure(pred, lb["model"].tolist()), "reliability diagram")
    )


def _per_class_section(lb: pd.DataFrame) -> str:
    """Multi-class: one-vs-rest AUC and sensitivity of every class, pooled out-of-fold (absent for binary)."""
    cols = sorted(
        (c for c in lb.columns if c.startswith(("auc_class", "sensitivity_class"))),
        key=lambda c: (int(c.rsplit("class", 1)[1]), c),
    )
    if not cols:
        return ""
    rows = [[esc(r["model"])] + [num(r[c]) for c in cols] for _, r in lb.iterrows()]
    return "<h3>Per class (one-vs-rest AUC, sensitivity; pooled out-of-fold)</h3>" + html_table(
        ["model"] + [esc(c) for c in cols], rows
    )


def segmentation_figures(pred: pd.DataFrame, lb: pd.DataFrame, reference: str, primary: str) -> str:
    """Per-patient Dice of every model and the reference's best and worst patients."""
    metric = primary if primary.startswith("dice") else "dice"
    parts = [figure_tag(dice_figure(pred, lb["model"].tolist(), metric), "per-patient Dice")]
    cases = extreme_cases(pred, reference, metric=metric, n=3)
    rows = [[esc(r["which"]), esc(r["patient_id"]), esc(r["fold"]), num(r[metric])] for _, r in cases.iterrows()]
    parts.append(
        f"<p>Best and worst patients of <b>{esc(reference)}</b> by {esc(metric)}:</p>"
        + html_table(["case", "patient", "fold", esc(metric)], rows, text_cols=2)
    )
    return f"<h2>Per-patient {esc(metric)}</h2>" + "".join(parts)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not valid JSON ({exc})") from exc


def _stored_or(path: Path, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """The table the study wrote (so report and console agree), else computed now."""
    if path.is_file():
        table = pd.read_csv(path)
        return table.astype({"model": str}) if "model" in table.columns else table
    return compute()


def _target_sentence(preprocess: dict) -> str:
    """What the Dice is of: the organ + tumour masks' target labels (study.target), or the brain tumour
    regions' labels (BraTS' numbering or the dataset's own)."""
    labels = preprocess.get("foreground_labels")
    if labels:
        return f" Target: mask label(s) {esc(', '.join(map(str, labels)))}; the other labels are background."
    if preprocess.get("label_map") != "brats":
        return ""
    from tumorbench.data.masks import brats_label_sets

    sets = brats_label_sets(int(preprocess.get("enhancing_label", 4)), preprocess.get("regions"))
    regions = ", ".join(f"{name} = labels {'+'.join(map(str, members))}" for name, members in sets.items())
    return f" Regions: {esc(regions)}."


def write_report(
    results_dir: str | Path,
    *,
    title: str = "tumorbench comparison",
    task: str | None = None,
    primary: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Path:
    """Write ``results_dir/report.html`` from the results files.

    Reads ``predictions.csv`` (required), ``folds.csv``, ``leaderboard.csv`` and
    ``stats.csv`` (each computed when absent, with ``n_boot`` and ``seed``),
    ``configs.json``, ``manifest.json`` and ``overlays/*.png`` (optional). ``n_boot``
    also sets the resamples of the ROC band of the reference model.

    Returns:
        The path of the written report.
    """
    root = Path(results_dir)
    raw, folds, configs = load_results(root)
    task, primary = resolve(raw, task, primary)
    pred = check_predictions(raw, task)
    folds = check_folds(fold_metrics(pred, task) if folds is None else folds, pred, task, primary)
    lb = _stored_or(
        root / "leaderboard.csv", lambda: leaderboard(pred, folds, task, primary=primary, n_boot=n_boot, seed=seed)
    )
    stats = _stored_or(root / "stats.csv", lambda: paired_statistics(pred, folds, task, primary=primary))
    reference = str(stats["reference"].iloc[0]) if len(stats) else str(lb["model"].iloc[0])
    manifest = _read_json(root / "manifest.json")
    once = folds["fold"].nunique() == 1  # a locked test set: scored once, no spread over folds
    figures = get_task(task).report_figures(pred, lb, reference, primary, n_boot, seed, manifest.get("classes"))
    summary = (
        f"{len(lb)} models and baselines, "
        + ("scored once, " if once else f"{folds['fold'].nunique()} folds, ")
        + f"{pred['case_id'].nunique()} cases of {pred['patient_id'].nunique()} patients; task {esc(task)}; "
        f"primary metric {esc(primary)}; metrics {esc(', '.join(metric_names(task, pred)))}."
    )
    summary += _target_sentence(((manifest.get("spec") or {}).get("config") or {}).get("preprocess") or {})
    body = "".join(
        [
            f"<h1>{esc(title)}</h1><p>{summary}</p>",
            _leaderboard_section(lb, stats, task, primary, once),
            locked_test_section(root / "test", primary),
            _stats_section(stats),
            figures,
            overlays_section(root / "overlays"),
            explanations_section(root),
            _folds_section(folds, lb["model"].tolist(), primary),
            configs_section(configs),
            key_values("Manifest", manifest),
        ]
    )
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )
    out = root / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
