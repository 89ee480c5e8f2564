"""Classification and segmentation metrics: pure ``compute_*`` functions.

Conventions (kept in one place so that every caller reports the same numbers):

* Inputs may be numpy arrays or torch tensors (any device); masks must be binary
  (bool or 0/1), 2D or 3D, and ``pred`` and ``target`` must have the same shape.
* Dice, IoU, sensitivity and precision of two empty masks are ``empty_value`` (1.0:
  predicting nothing where there is nothing is perfect). A ratio whose denominator is
  zero while the other mask is not empty (sensitivity with an empty target, precision
  with an empty prediction) is undefined and returned as NaN.
* HD95 is MONAI's: the larger of the two directed 95th-percentile surface distances, in
  the units of ``spacing`` (mm when spacing is the voxel size). Both masks empty gives
  ``both_empty`` (NaN); exactly one empty gives ``one_empty`` (inf).
* Classification precision/recall/F1 with a zero denominator are 0.0, as scikit-learn
  returns them; ROC AUC with a single class in ``y_true`` is NaN with a warning that
  says why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from tumorbench.data.masks import BRATS_REGIONS, brats_label_sets

__all__ = [
    "BRATS_REGIONS",
    "MetricWarning",
    "classification_metrics",
    "compute_dice",
    "compute_hd95",
    "compute_iou",
    "compute_precision",
    "compute_sensitivity",
    "segmentation_metrics",
]


class MetricWarning(UserWarning):
    """A metric is undefined for the data given (returned as NaN)."""


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_mask(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name}: mask must be binary (bool or 0/1); threshold probabilities first")
        arr = arr.astype(bool)
    return arr


def _mask_pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_mask(pred, "pred"), _as_mask(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred: shape {p.shape} differs from target shape {t.shape}")
    if p.ndim not in (2, 3):
        raise ValueError(f"pred: expected a 2D or 3D mask of one case, got shape {p.shape}")
    return p, t


def _ratio(num: float, den: float, both_empty: bool, empty_value: float) -> float:
    if den > 0:
        return float(num / den)
    return float(empty_value) if both_empty else math.nan


def _overlap_metrics(tp: float, fp: float, fn: float, empty_value: float) -> dict[str, float]:
    """Dice, IoU, sensitivity, precision from (possibly summed) voxel counts."""
    both_empty = tp + fp + fn == 0
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty, empty_value),
        "iou": _ratio(tp, tp + fp + fn, both_empty, empty_value),
        "sensitivity": _ratio(tp, tp + fn, both_empty, empty_value),
        "precision": _ratio(tp, tp + fp, both_empty, empty_value),
    }


def voxel_counts(pred: Any, target: Any) -> tuple[int, int, int]:
    """True positive, false positive and false negative voxels of one case."""
    p, t = _mask_pair(pred, target)
    tp = int(np.count_nonzero(p & t))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp


def compute_dice(pred: Any, target: Any, *, empty_value: float = 1.0) -> float:
    """Dice ``2|P∩T| / (|P|+|T|)`` of one case; ``empty_value`` when both masks are empty."""
    return _overlap_metrics(*voxel_counts(pred, target), empty_value)["dice"]


def compute_iou(pred: Any, target: Any, *, empty_value: float = 1.0) -> float:
    """Jaccard index ``|P∩T| / |P∪T|`` of one case; ``empty_value`` when both are empty."""
    return _overlap_metrics(*voxel_counts(pred, target), empty_value)["iou"]


def compute_sensitivity(pred: Any, target: Any, *, empty_value: float = 1.0) -> float:
    """Voxel recall ``|P∩T| / |T|``; NaN when only the target is empty."""
    return _overlap_metrics(*voxel_counts(pred, target), empty_value)["sensitivity"]


def compute_precision(pred: Any, target: Any, *, empty_value: float = 1.0) -> float:
    """Voxel precision ``|P∩T| / |P|``; NaN when only the prediction is empty."""
    return _overlap_metrics(*voxel_counts(pred, target), empty_value)["precision"]


def _spacing_tuple(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = _to_numpy(spacing).astype(float).ravel()
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.size != ndim or not (values > 0).all() or not np.isfinite(values).all():
        raise ValueError(f"spacing: expected {ndim} positive finite values (one per axis), got {spacing!r}")
    return tuple(float(v) for v in values)


def compute_hd95(
    pred: Any,
    target: Any,
    spacing: float | Sequence[float] | None = None,
    *,
    both_empty: float = math.nan,
    one_empty: float = math.inf,
) -> float:
    """95th-percentile symmetric Hausdorff distance of one case, by MONAI.

    Args:
        pred: Binary predicted mask, 2D or 3D.
        target: Binary reference mask of the same shape.
        spacing: Voxel size per array axis (e.g. mm); a single number means isotropic;
            None means 1 (distances in voxels).
        both_empty: Value when neither mask has foreground (undefined; NaN by default).
        one_empty: Value when exactly one mask is empty (inf by default; BraTS-style
            evaluations substitute the image diagonal).

    Returns:
        ``max(P95(d(P→T)), P95(d(T→P)))`` over surface voxels, in spacing units.
    """
    p, t = _mask_pair(pred, target)
    has_p, has_t = bool(p.any()), bool(t.any())
    if not (has_p and has_t):
        return float(one_empty) if has_p or has_t else float(both_empty)
    # Imported here: importing MONAI takes seconds, and most users of this module never need HD95.
    from monai.metrics import compute_hausdorff_distance

    p, t = _crop_to_union(p, t)
    with warnings.catch_warnings():
        # MONAI 1.5-1.6 passes its own deprecated argument internally; nothing for callers to act on.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        hd = compute_hausdorff_distance(
            p[None, None],
            t[None, None],
            include_background=True,
            percentile=95,
            spacing=_spacing_tuple(spacing, p.ndim),
        )
    return float(hd.reshape(-1)[0])


def _crop_to_union(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to their union's bounding box plus one voxel.

    MONAI crops the same way, but only after converting the whole volume to float
    tensors, which dominates the cost on a 240x240x155 BraTS volume; the margin keeps
    surfaces (mask minus erosion) identical.
    """
    union = p | t
    box = []
    for axis in range(union.ndim):
        hits = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(max(hits[0] - 1, 0), hits[-1] + 2))
    return p[tuple(box)], t[tuple(box)]


def segmentation_metrics(
    pred: Any, target: Any, spacing: float | Sequence[float] | None = None, *, empty_value: float = 1.0
) -> dict[str, float]:
    """Dice, IoU, sensitivity, precision and HD95 of one case (see the module conventions)."""
    out = _overlap_metrics(*voxel_counts(pred, target), empty_value)
    out["hd95"] = compute_hd95(pred, target, spacing)
    return out


def region_case_metrics(
    pred: Any, target: Any, spacing: Sequence[float] | None, channel_names: Sequence[str] | None
) -> dict[str, float]:
    """One patient's metrics over mask channels ``(C, ...)``: each metric the mean over channels, plus
    ``dice_<name>`` per channel when there are several (BraTS WT/TC/ET). Deep models and baselines alike."""
    per_channel = [segmentation_metrics(p, t, spacing) for p, t in zip(pred, target)]
    merged = {key: float(np.mean([m[key] for m in per_channel])) for key in per_channel[0]}
    if channel_names and len(per_channel) > 1:
        merged |= {f"dice_{name}": m["dice"] for name, m in zip(channel_names, per_channel)}
    return merged


def brats_region_masks(
    labels: Any, enhancing_label: int = 4, regions: Sequence[Sequence[int]] | None = None
) -> dict[str, np.ndarray]:
    """Nested BraTS evaluation regions from a label map (:func:`brats_label_sets`).

    Any label value outside the regions raises, so that a 2023 map read with the 2021
    convention (or vice versa) cannot silently drop the enhancing tumour.
    """
    lab = _to_numpy(labels)
    sets = brats_label_sets(enhancing_label, regions)
    allowed = sorted({0, *(v for labels_ in sets.values() for v in labels_)})
    if not np.isin(lab, allowed).all():
        found = sorted(set(np.unique(lab).tolist()) - set(allowed))
        how = "the regions' labels" if regions is not None else f"enhancing_label={enhancing_label}"
        raise ValueError(f"labels: values {found} not in {allowed} (is {how} right?)")
    return {name: np.isin(lab, members) for name, members in sets.items()}


def _auc_or_nan(y_bin: np.ndarray, score: np.ndarray, what: str) -> float:
    if y_bin.all() or not y_bin.any():
        warnings.warn(f"ROC AUC of {what} undefined: y_true holds a single class", MetricWarning, stacklevel=3)
        return math.nan
    return float(roc_auc_score(y_bin, score))


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, float), np.asarray(den, float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _binary_classification(y_true: np.ndarray, score: np.ndarray, threshold: float, positive: Any) -> dict:
    y = y_true == positive
    pred = score >= threshold
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))
    return {
        "accuracy": (tp + tn) / len(y),
        "precision": float(_safe_div(tp, tp + fp)),
        "recall": float(_safe_div(tp, tp + fn)),
        "specificity": float(_safe_div(tn, tn + fp)),
        "f1": float(_safe_div(2 * tp, 2 * tp + fp + fn)),
        "auc": _auc_or_nan(y, score, "the positive class"),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def _multiclass_classification(y_true: np.ndarray, scores: np.ndarray) -> dict:
    k = scores.shape[1]
    if not np.isin(y_true, np.arange(k)).all():
        raise ValueError(f"y_true: labels must be class indices 0..{k - 1} to match y_score's {k} columns")
    y = y_true.astype(np.int64)
    pred = scores.argmax(axis=1)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)  # rows: truth, columns: prediction
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    tn = len(y) - tp - fp - fn
    # Average over the classes that occur in y_true or the predictions, as sklearn's macro does.
    seen = (cm.sum(0) + cm.sum(1)) > 0
    precision, recall = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    aucs = [_auc_or_nan(y == c, scores[:, c], f"class {c}") for c in range(k) if seen[c]]
    finite = [a for a in aucs if not math.isnan(a)]
    return {
        "accuracy": float(tp.sum() / len(y)),
        "precision": float(precision[seen].mean()),
        "recall": float(recall[seen].mean()),
        "specificity": float(_safe_div(tn, tn + fp)[seen].mean()),
        "f1": float(_safe_div(2 * tp, 2 * tp + fp + fn)[seen].mean()),
        "auc": float(np.mean(finite)) if finite else math.nan,
        "tp": int(tp.sum()),
        "fp": int(fp.sum()),
        "tn": int(tn.sum()),
        "fn": int(fn.sum()),
    }


def classification_metrics(y_true: Any, y_score: Any, *, threshold: float = 0.5, positive: Any = 1) -> dict[str, float]:
    """Accuracy, precision, recall (sensitivity), specificity, F1, ROC AUC and confusion counts.

    Args:
        y_true: ``(N,)`` true labels.
        y_score: ``(N,)`` score of the positive class (binary), or ``(N, K)`` class
            probabilities; ``(N, 2)`` is read as binary with column ``positive``.
        threshold: Binary decision threshold on the score (``score >= threshold``).
        positive: Label of the positive class in binary problems.

    Returns:
        Binary: metrics of the positive class and its tp/fp/tn/fn. Multi-class
        (K > 2, labels 0..K-1, argmax decision): macro averages over the classes
        present in ``y_true`` or the predictions, macro one-vs-rest AUC over the classes
        with both outcomes in ``y_true``, and tp/fp/tn/fn summed over the one-vs-rest
        problems.
    """
    y, s = _to_numpy(y_true).ravel(), _to_numpy(y_score).astype(float)
    if len(y) == 0 or len(s) != len(y):
        raise ValueError(f"y_score: {len(s)} scores for {len(y)} labels (need the same, non-zero number)")
    if not np.isfinite(s).all():
        raise ValueError("y_score: scores must be finite (found NaN or inf)")
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, int(positive)]
    if s.ndim == 1:
        labels = np.unique(y)
        if len(labels) > 2 or (len(labels) == 2 and positive not in labels):
            raise ValueError(
                f"y_true: labels {labels.tolist()} do not form a binary problem with positive={positive!r}"
            )
        return _binary_classification(y, s, threshold, positive)
    if s.ndim != 2:
        raise ValueError(f"y_score: expected shape (N,) or (N, K), got {s.shape}")
    return _multiclass_classification(y, s)
