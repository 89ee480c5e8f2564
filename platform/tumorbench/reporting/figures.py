"""Report figures and prediction-vs-truth overlays, drawn with matplotlib's Agg canvas.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot), so nothing
depends on a display or on global figure state, and :func:`figure_png` turns each into
PNG bytes for embedding.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from tumorbench.evaluation.metrics import compute_dice
from tumorbench.evaluation.oof import lower_is_better
from tumorbench.tasks import Segmentation

__all__ = [
    "confusion_figure",
    "dice_figure",
    "extreme_cases",
    "figure_png",
    "forest_figure",
    "roc_figure",
    "write_overlay",
]

KIND_COLORS = {"dl": "#1f77b4", "baseline": "#d95f02"}
_DPI = 110


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


def forest_figure(lb: pd.DataFrame, primary: str, task: str) -> Figure:
    """Primary metric per model: pooled estimate with its 95% CI and the fold mean."""
    fig = Figure(figsize=(7, 0.45 * len(lb) + 1.4))
    ax = fig.add_subplot()
    y = np.arange(len(lb))[::-1]
    for yi, (_, r) in zip(y, lb.iterrows()):
        color = KIND_COLORS.get(str(r["kind"]), "gray")
        est, lo, hi = r[f"{primary}_pooled"], r[f"{primary}_ci_low"], r[f"{primary}_ci_high"]
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [yi, yi], color=color, lw=2.5, solid_capstyle="butt")
        if not np.isfinite(est):
            ax.text(0.01, yi, f"{primary} = {est} (not drawn)", transform=ax.get_yaxis_transform(), va="center")
        ax.plot(est, yi, "o", color=color, ms=7)
        ax.plot(r[f"{primary}_mean"], yi, "|", color="black", ms=12, mew=1.5)
    ax.set_yticks(y, [f"{r['model']} ({r['kind']})" for _, r in lb.iterrows()])
    ax.set_ylim(-0.6, len(lb) - 0.4)
    ax.set_xlabel(f"{primary}: pooled estimate with patient-bootstrap 95% CI; | = mean over folds")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"Leaderboard by {primary} ({'lower' if lower_is_better(primary, task) else 'higher'} is better)")
    return fig


def _roc_band(
    y: np.ndarray, score: np.ndarray, groups: np.ndarray, grid: np.ndarray, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise 95% band of TPR on an FPR grid, resampling whole patients."""
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]
    curves = []
    for _ in range(n_boot):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
        yy = y[idx]
        if yy.min() == yy.max():
            continue  # one class: no ROC curve
        fpr, tpr, _ = roc_curve(yy, score[idx])
        curves.append(np.interp(grid, fpr, tpr))
    if not curves:
        return np.full_like(grid, np.nan), np.full_like(grid, np.nan)
    lo, hi = np.quantile(np.vstack(curves), [0.025, 0.975], axis=0)
    return lo, hi


def roc_figure(pred: pd.DataFrame, order: Sequence[str], best: str, *, n_boot: int = 500, seed: int = 0) -> Figure:
    """Pooled out-of-fold ROC curve of every model (binary), with a CI band for ``best``."""
    fig = Figure(figsize=(6.2, 5.6))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1)
    for model in order:
        g = pred[pred["model"] == model]
        y, s = g["y_true"].to_numpy(), g["y_score"].to_numpy(float)
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, s)
        is_best = model == best
        line = ax.plot(
            fpr,
            tpr,
            lw=2.4 if is_best else 1.2,
            ls="-" if g["kind"].iloc[0] == "dl" else "-.",
            label=f"{model} (AUC {roc_auc_score(y, s):.3f})",
            zorder=3 if is_best else 2,
        )
        if is_best:
            grid = np.linspace(0, 1, 101)
            lo, hi = _roc_band(y, s, g["patient_id"].to_numpy(), grid, n_boot, seed)
            ax.fill_between(
                grid, lo, hi, color=line[0].get_color(), alpha=0.2, lw=0, label=f"{model}: 95% band (patient bootstrap)"
            )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="1 - specificity (false positive rate)",
        ylabel="sensitivity (true positive rate)",
        title="ROC curves, pooled out-of-fold predictions",
    )
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def reliability_figure(pred: pd.DataFrame, order: Sequence[str]) -> Figure:
    """Reliability diagram of every classifier (pooled out-of-fold): observed frequency vs predicted probability
    per bin, point size the bin's share; binary on p(positive), multi-class on the top-label confidence."""
    from tumorbench.evaluation.calibration import reliability_bins
    from tumorbench.evaluation.oof import is_binary, score_matrix

    fig = Figure(figsize=(6.2, 5.6))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfect calibration")
    binary = is_binary(pred)
    for model in order:
        g = pred[pred["model"] == model]
        scores = g["y_score"].to_numpy(float) if binary else score_matrix(g)
        bins = reliability_bins(g["y_true"].to_numpy(), scores)
        ls = "-" if g["kind"].iloc[0] == "dl" else "-."
        ax.plot(bins["predicted"], bins["observed"], ls=ls, marker="o", lw=1.2, ms=3, label=model)
    what = "predicted p(positive)" if binary else "top-label confidence"
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel=what,
        ylabel="observed frequency" if binary else "accuracy",
        title="Reliability diagram, pooled out-of-fold predictions (10 bins)",
    )
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def confusion_figure(
    pred: pd.DataFrame, models: Sequence[tuple[str, str]], class_names: Sequence[str] | None = None
) -> Figure:
    """Confusion matrices (rows truth, columns prediction) of ``(label, model)`` pairs.

    Axes show ``class_names[index]`` when every index has a name, else the indices.
    """
    labels = np.unique(np.concatenate([pred["y_true"].to_numpy(), pred["y_pred"].to_numpy()]))
    fig = Figure(figsize=(3.6 * len(models), 3.4))
    for i, (caption, model) in enumerate(models):
        g = pred[pred["model"] == model]
        cm = confusion_matrix(g["y_true"], g["y_pred"], labels=labels)
        ax = fig.add_subplot(1, len(models), i + 1)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        named = class_names is not None and all(str(x).isdigit() and int(x) < len(class_names) for x in labels)
        ticks = [str(class_names[int(x)]) if named else str(x) for x in labels]
        ax.set_xticks(range(len(labels)), ticks)
        ax.set_yticks(range(len(labels)), ticks)
        ax.set(xlabel="predicted", ylabel="true", title=f"{caption}: {model}")
    fig.tight_layout()
    return fig


def dice_figure(pred: pd.DataFrame, order: Sequence[str], metric: str = "dice", *, seed: int = 0) -> Figure:
    """Per-patient ``metric`` per model: box plot with every patient as a jittered point."""
    fig = Figure(figsize=(max(5.0, 1.1 * len(order) + 2), 4.2))
    ax = fig.add_subplot()
    rng = np.random.default_rng(seed)
    data = [pred.loc[pred["model"] == m, metric].dropna().to_numpy(float) for m in order]
    finite = [d[np.isfinite(d)] for d in data]
    ax.boxplot(finite, positions=range(len(order)), widths=0.55, showfliers=False, medianprops={"color": "black"})
    for i, (m, d) in enumerate(zip(order, finite)):
        kind = pred.loc[pred["model"] == m, "kind"].iloc[0]
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(d)), d, s=9, alpha=0.6, color=KIND_COLORS.get(kind, "gray"))
    ax.set_xticks(range(len(order)), list(order), rotation=20, ha="right")
    ax.set_ylabel(f"{metric} per patient")
    ax.set_title(f"Per-patient {metric} (out-of-fold); blue: DL, orange: baseline")
    ax.grid(axis="y", alpha=0.3)
    return fig


def extreme_cases(pred: pd.DataFrame, model: str, *, metric: str = "dice", n: int = 1) -> pd.DataFrame:
    """The ``n`` best and ``n`` worst cases of ``model`` by ``metric`` (for overlays).

    Returns:
        Rows of ``pred`` with a ``which`` column (``"best"`` / ``"worst"``); best first.
    """
    g = pred[(pred["model"] == model) & pred[metric].notna()]
    best_first = g.sort_values(metric, ascending=lower_is_better(metric, Segmentation.name), kind="stable")
    best, worst = best_first.head(n), best_first.tail(min(n, max(len(g) - n, 0)))[::-1]
    return pd.concat([best.assign(which="best"), worst.assign(which="worst")])


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Image scaled to [0, 1] for display: gray (1st-99th percentile window) or RGB."""
    img = np.asarray(image, dtype=float)
    rgb = img.ndim == 3 and img.shape[-1] in (3, 4)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    img = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return (img[..., :3], None) if rgb else (img, "gray")


def write_overlay(image2d: Any, truth_mask: Any, pred_mask: Any, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of one slice: truth (green contour), prediction (red), and both.

    Args:
        image2d: ``(H, W)`` gray or ``(H, W, 3)`` RGB image.
        truth_mask: ``(H, W)`` binary ground truth.
        pred_mask: ``(H, W)`` binary prediction.
        path: Output PNG path (folders are created).
        title: Figure title (e.g. ``"unet, best case TCGA_CS_4941, slice 12"``); the
            slice's Dice is added to it.

    Returns:
        The written path.
    """
    truth, pred = np.asarray(truth_mask).astype(bool), np.asarray(pred_mask).astype(bool)
    img, cmap = _display(np.asarray(image2d))
    if img.ndim not in (2, 3) or truth.shape != img.shape[:2] or pred.shape != img.shape[:2]:
        raise ValueError(
            f"image2d {np.shape(image2d)}, truth_mask {truth.shape} and pred_mask {pred.shape}: "
            "need an (H, W) or (H, W, 3) image and two (H, W) masks"
        )
    fig = Figure(figsize=(9.6, 3.6))
    panels = [
        ("ground truth", [(truth, "lime")]),
        ("prediction", [(pred, "red")]),
        ("both: truth green, prediction red", [(truth, "lime"), (pred, "red")]),
    ]
    for i, (caption, contours) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.imshow(img, cmap=cmap, interpolation="nearest")
        for mask, color in contours:
            if mask.any():  # contour() of an empty mask only warns
                ax.contour(mask.astype(float), levels=[0.5], colors=color, linewidths=1.4)
        empty = [m for m, _ in contours if not m.any()]
        ax.set_title(caption + (" (empty)" if len(empty) == len(contours) else ""), fontsize=9)
        ax.set_axis_off()
    dice = compute_dice(pred, truth)
    fig.suptitle(f"{title + ' — ' if title else ''}slice Dice {dice:.3f}", fontsize=10)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=_DPI, bbox_inches="tight")
    return out
