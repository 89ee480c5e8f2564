"""``report.html``: one self-contained page of a comparison study's results.

Everything is inline (CSS in a ``<style>`` block, figures as base64 PNG ``data:`` URIs,
no scripts), so the page reads the same offline, mailed, or archived with the results.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

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
    figure_png,
    forest_figure,
    reliability_figure,
    roc_figure,
)
from tumorbench.tasks import get_task

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1300px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;white-space:normal;vertical-align:bottom}td.t,th.t{text-align:left}
td.t{white-space:normal;overflow-wrap:break-word}tr.sig td{background:#eef7ee}
.note{color:#555;font-size:.9em;max-width:60em}.fig{margin:.8em 0}.fig img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid figure{margin:0;max-width:100%}
figcaption{font-size:.85em;color:#444}.scroll{overflow-x:auto}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return _esc(x)
    if math.isnan(v):
        return "n/a"
    return "inf" if math.isinf(v) else f"{v:.{digits}f}"


def _p(x: Any) -> str:
    v = float(x)
    if math.isnan(v):
        return "n/a"
    return f"{v:.1e}" if v < 1e-4 else f"{v:.4f}"


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, text_cols: int = 1, row_class: Sequence[str] | None = None
) -> str:
    """An HTML table; cells are already escaped/formatted; the first ``text_cols`` align left."""
    head = "".join(f'<th class="t">{h}</th>' if i < text_cols else f"<th>{h}</th>" for i, h in enumerate(header))
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        cells = "".join(f'<td class="t">{c}</td>' if i < text_cols else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'


def _figure(fig: Figure, alt: str) -> str:
    return f'<div class="fig">{_img(figure_png(fig), alt)}</div>'


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
            text = _p(r["p_holm"])
            delta = f"{_num(r['difference'])} [{_num(r.get('diff_ci_low'))}, {_num(r.get('diff_ci_high'))}]"
            cells.append([delta, f"<b>{text}</b>" if bool(r["significant"]) else text])
    return [
        f"Δ{_esc(metric)} (reference − model) [95% CI, paired bootstrap]",
        f"p<sub>Holm</sub> vs {_esc(reference)} ({_esc(test)}; bold: &lt; 0.05)",
    ], cells


def _leaderboard_section(lb: pd.DataFrame, stats: pd.DataFrame, task: str, primary: str) -> str:
    metrics = [c[: -len("_mean")] for c in lb.columns if c.endswith("_mean")]
    first = get_task(task).leaderboard_metrics(lb.columns)  # BraTS regions right after the primary
    others = [m for m in first + [m for m in metrics if m not in first] if m != primary]
    delong = primary == "auc" and "auc_delong_low" in lb.columns
    p_headers, p_cells = _p_cells(lb, stats, task, primary)
    header = [
        "#",
        "model",
        "kind",
        f"<b>{_esc(primary)}</b> pooled [95% CI, bootstrap]",
        f"{_esc(primary)} fold mean ± SD",
    ]
    header += ["95% CI (DeLong)"] * delong + p_headers + [f"{_esc(m)} fold mean ± SD" for m in others]
    rows, medians = [], with_infinite(lb, list(metrics))
    for i, (_, r) in enumerate(lb.iterrows()):
        row = [
            _esc(r["rank"]),
            f"<b>{_esc(r['model'])}</b>",
            _esc(r["kind"]),
            f"<b>{_num(r[f'{primary}_pooled'])}</b> [{_num(r[f'{primary}_ci_low'])}, {_num(r[f'{primary}_ci_high'])}]",
            f"{_num(r[f'{primary}_mean'])} ± {_num(r[f'{primary}_sd'])}",
        ]
        if delong:
            row.append(f"[{_num(r['auc_delong_low'])}, {_num(r['auc_delong_high'])}]")
        row += (p_cells[i] if p_cells else []) + [
            f"{_num(r[f'{m}_mean'])} ± {_num(r[f'{m}_sd'])}{_esc(infinite_note(r, m, 3, m in medians))}" for m in others
        ]
        rows.append(row)
    pooled = [
        [_esc(r["model"])]
        + [
            f"{_num(r[f'{m}_pooled'])} [{_num(r[f'{m}_ci_low'])}, {_num(r[f'{m}_ci_high'])}]"
            f"{_esc(infinite_note(r, m, 3, m in medians))}"
            for m in metrics
        ]
        for _, r in lb.iterrows()
    ]
    note = (
        "Two different estimates, side by side. Pooled [95% CI]: the metric on all pooled out-of-fold "
        "predictions (classification) or the mean per-patient value (segmentation), with a percentile "
        "bootstrap resampling whole patients; rows are ranked by it, and the paired tests are about it. "
        "Fold mean ± SD: the mean of the per-fold values (SD with ddof=1). Δ: reference minus model on the "
        "cases both scored, with a paired patient-bootstrap CI."
    )
    return (
        f"<h2>Leaderboard</h2>{_table(header, rows, text_cols=3)}<p class='note'>{note}</p>"
        f"<h3>Every metric: pooled estimate [95% CI]</h3>{_table(['model'] + [_esc(m) for m in metrics], pooled)}"
        + _figure(forest_figure(lb, primary, task), "leaderboard forest plot")
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
                _esc(r["reference"]),
                _esc(r["model"]),
                _esc(r["kind"]),
                _esc(r["test"]),
                _esc(r["metric"]),
                _esc(r["n"]),
                _num(r["statistic"]),
                _num(r["difference"], 4),
                f"[{_num(r.get('diff_ci_low'), 4)}, {_num(r.get('diff_ci_high'), 4)}]",
                _p(r["p"]),
                _p(r["p_holm"]),
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
    return f"<h2>Paired statistics</h2>{_table(header, rows, text_cols=5, row_class=classes)}<p class='note'>{note}</p>"


def _folds_section(folds: pd.DataFrame, order: Sequence[str], primary: str) -> str:
    wide = folds.pivot_table(index="model", columns="fold", values=primary, aggfunc="first").reindex(order)
    sizes = folds.groupby("fold")["n_test"].max()
    header = ["model"] + [f"fold {_esc(f)} (n={_esc(sizes.get(f, ''))})" for f in wide.columns]
    rows = [[_esc(m)] + [_num(v) for v in wide.loc[m]] for m in wide.index]
    return f"<h2>{_esc(primary)} per fold</h2>{_table(header, rows)}"


def classification_figures(pred: pd.DataFrame, lb: pd.DataFrame, reference: str, n_boot: int, seed: int) -> str:
    """ROC curves (binary) and confusion matrices of the best DL model and the best baseline."""
    parts = []
    if is_binary(pred):
        parts.append(_figure(roc_figure(pred, lb["model"].tolist(), reference, n_boot=n_boot, seed=seed), "ROC curves"))
    pairs = [("best DL", reference)]
    baselines = lb[lb["kind"] == "baseline"]["model"].tolist()
    if baselines:
        pairs.append(("best baseline", baselines[0]))
    parts.append(_figure(confusion_figure(pred, pairs), "confusion matrices"))
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
    rows = [[_esc(r["model"]), _esc(r["kind"]), _num(r["brier"]), _num(r["ece"])] for _, r in lb.iterrows()]
    note = (
        "Brier: mean squared error of the probabilities (lower is better; multi-class: summed over classes). "
        "ECE: expected calibration error over 10 equal-width bins, |observed − predicted| weighted by the "
        "bin's share of the cases (binary: p(positive); multi-class: top-label confidence)."
    )
    return (
        "<h2>Calibration</h2>"
        + _table(["model", "kind", "Brier", "ECE"], rows, text_cols=2)
        + f"<p class='note'>{note}</p>"
        + _figure(reliability_figure(pred, lb["model"].tolist()), "reliability diagram")
    )


def _per_class_section(lb: pd.DataFrame) -> str:
    """Multi-class: one-vs-rest AUC and sensitivity of every class, pooled out-of-fold (absent for binary)."""
    cols = sorted(
        (c for c in lb.columns if c.startswith(("auc_class", "sensitivity_class"))),
        key=lambda c: (int(c.rsplit("class", 1)[1]), c),
    )
    if not cols:
        return ""
    rows = [[_esc(r["model"])] + [_num(r[c]) for c in cols] for _, r in lb.iterrows()]
    return "<h3>Per class (one-vs-rest AUC, sensitivity; pooled out-of-fold)</h3>" + _table(
        ["model"] + [_esc(c) for c in cols], rows
    )


def segmentation_figures(pred: pd.DataFrame, lb: pd.DataFrame, reference: str, primary: str) -> str:
    """Per-patient Dice of every model and the reference's best and worst patients."""
    metric = primary if primary.startswith("dice") else "dice"
    parts = [_figure(dice_figure(pred, lb["model"].tolist(), metric), "per-patient Dice")]
    cases = extreme_cases(pred, reference, metric=metric, n=3)
    rows = [[_esc(r["which"]), _esc(r["patient_id"]), _esc(r["fold"]), _num(r[metric])] for _, r in cases.iterrows()]
    parts.append(
        f"<p>Best and worst patients of <b>{_esc(reference)}</b> by {_esc(metric)}:</p>"
        + _table(["case", "patient", "fold", _esc(metric)], rows, text_cols=2)
    )
    return f"<h2>Per-patient {_esc(metric)}</h2>" + "".join(parts)


def _overlays_section(folder: Path) -> str:
    pngs = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not pngs:
        return ""
    items = "".join(
        f"<figure>{_img(p.read_bytes(), p.stem)}</figure>"
        for p in pngs  # the title is in the image
    )
    return (
        "<h2>Prediction vs ground truth</h2><p class='note'>Ground-truth contour green, prediction red.</p>"
        f"<div class='grid'>{items}</div>"
    )


def _explanations_section(root: Path) -> str:
    """Explanation scores per model (``explanations.csv``) and the best / worst case overlays."""
    from tumorbench.explain.study import explanation_summary

    path = root / "explanations.csv"
    if not path.is_file():
        return ""
    summary = explanation_summary(pd.read_csv(path).astype({"model": str}))
    header = [
        "model",
        "cases",
        "pointing game",
        "energy in tumor",
        "deletion AUC (lower better)",
        "insertion AUC (higher better)",
        "randomisation rank corr.",
        "randomisation SSIM",
        "flagged",
    ]
    rows = [
        [
            _esc(r["model"]),
            _esc(r["n_explained"]),
            _num(r["pointing"], 2),
            _num(r["energy_in_tumor"], 2),
            _num(r["deletion_auc"]),
            _num(r["insertion_auc"]),
            _num(r["rand_rank_corr"]),
            _num(r["rand_ssim"]),
            "<b>yes</b>" if bool(r["rand_flagged"]) else "no",
        ]
        for _, r in summary.iterrows()
    ]
    pngs = sorted((root / "explanations").glob("*.png")) if (root / "explanations").is_dir() else []
    items = "".join(
        f"<figure>{_img(p.read_bytes(), p.stem)}</figure>"
        for p in pngs  # the title is in the image
    )
    note = (
        "Grad-CAM of each deep model's fold checkpoint on a bounded number of out-of-fold cases per fold. "
        "Pointing game: share of cases whose heatmap peak lies inside the tumor mask; energy in tumor: share of "
        "heatmap mass inside it (n/a without masks). Deletion / insertion AUC: the explained probability as the "
        "most salient pixels are removed / revealed (faithful: low deletion, high insertion). Randomisation "
        "(Adebayo et al. 2018): heatmaps of re-initialised copies compared with the trained model's; "
        "<b>flagged</b> when rank correlation or SSIM exceeds 0.5, i.e. the explanation hardly depends on what "
        "the model learned. Overlays: heatmap (jet) over the image, truth contour green."
    )
    return (
        f"<h2>Explanations: does each model look at the tumor?</h2>{_table(header, rows)}"
        f"<p class='note'>{note}</p><div class='grid'>{items}</div>"
    )


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(d, dict):
        return [kv for k, v in d.items() for kv in _flatten(v, f"{prefix}{k}." if prefix or k else "")]
    if isinstance(d, list) and all(not isinstance(x, (dict, list)) for x in d):
        return [(prefix.rstrip("."), ", ".join(map(str, d)))]
    return [(prefix.rstrip("."), json.dumps(d) if isinstance(d, list) else str(d))]


def _key_values(title: str, data: dict) -> str:
    if not data:
        return ""
    rows = [[_esc(k), _esc(v)] for k, v in _flatten(data)]
    return f"<h2>{_esc(title)}</h2>{_table(['key', 'value'], rows, text_cols=2)}"


def _locked_test_section(folder: Path, primary: str) -> str:
    """The ``--test`` scores beside the cross-validated ones: final models, each scored once on locked cases."""
    path = folder / "leaderboard.csv"
    if not path.is_file():
        return ""
    test = pd.read_csv(path)
    rows = [
        [
            f"<b>{_esc(r['model'])}</b>",
            _esc(r["kind"]),
            _esc(r["n_patients"]),
            f"{_num(r[f'{primary}_pooled'])} [{_num(r[f'{primary}_ci_low'])}, {_num(r[f'{primary}_ci_high'])}]",
        ]
        for _, r in test.iterrows()
    ]
    table = _table(["model", "kind", "test patients", f"{_esc(primary)} [95% CI, bootstrap]"], rows, text_cols=2)
    return (
        "<h2>Locked test set</h2><p class='note'>Each model's final version (its chosen configuration, retrained on "
        "every training patient) scored once on the test cases, which no choice above has seen. The "
        "cross-validated leaderboard chooses and estimates; this only confirms. Details: "
        f"<a href='{folder.name}/report.html'>{folder.name}/report.html</a>.</p>{table}"
    )


def _configs_section(configs: dict) -> str:
    if not configs:
        return ""
    rows = [[_esc(m), _esc(json.dumps(c, sort_keys=True, default=str))] for m, c in configs.items()]
    return f"<h2>Best configuration per model</h2>{_table(['model', 'configuration'], rows, text_cols=2)}"


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
    figures = get_task(task).report_figures(pred, lb, reference, primary, n_boot, seed)
    summary = (
        f"{len(lb)} models and baselines, {folds['fold'].nunique()} folds, "
        f"{pred['case_id'].nunique()} cases of {pred['patient_id'].nunique()} patients; task {_esc(task)}; "
        f"primary metric {_esc(primary)}; metrics {_esc(', '.join(metric_names(task, pred)))}."
    )
    body = "".join(
        [
            f"<h1>{_esc(title)}</h1><p>{summary}</p>",
            _leaderboard_section(lb, stats, task, primary),
            _locked_test_section(root / "test", primary),
            _stats_section(stats),
            figures,
            _overlays_section(root / "overlays"),
            _explanations_section(root),
            _folds_section(folds, lb["model"].tolist(), primary),
            _configs_section(configs),
            _key_values("Manifest", _read_json(root / "manifest.json")),
        ]
    )
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )
    out = root / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
