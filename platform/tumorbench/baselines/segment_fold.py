"""A segmentation baseline on one fold: fit on the training cases, predict and score the validation cases.

Scores are per case as the deep models' are (whole-lesion metrics, or BraTS regions against the
label map), then per patient (:func:`patient_metrics`: pooled Dice over a patient's slices,
HD95 on the patient's stacked slices), so both kinds share the leaderboard like for like.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tumorbench.baselines.features import as_records, read_case
from tumorbench.baselines.segmentation import make_segmenter
from tumorbench.data import io
from tumorbench.evaluation import metrics


def _case_metrics(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float], hd95: bool) -> dict[str, float]:
    if hd95:
        return metrics.segmentation_metrics(pred, target, spacing)
    return {
        "dice": metrics.compute_dice(pred, target),
        "iou": metrics.compute_iou(pred, target),
        "sensitivity": metrics.compute_sensitivity(pred, target),
        "precision": metrics.compute_precision(pred, target),
        "hd95": np.nan,
    }


def _region_scores(
    row: Mapping[str, Any],
    pred: np.ndarray,
    spacing: Sequence[float],
    enhancing_label: int,
    regions: Sequence[Sequence[int]] | None = None,
) -> dict[str, float]:
    """One binary prediction scored against the BraTS regions of the case's label map, as the deep models are."""

    labels = np.rint(io.read_image(row["mask"], canonical=True).array).astype(int)  # volumes: (I, J, K)
    masks = metrics.brats_region_masks(labels, enhancing_label, regions)
    targets = np.stack([masks[name] for name in metrics.BRATS_REGIONS])
    return metrics.region_case_metrics(
        np.stack([pred] * len(metrics.BRATS_REGIONS)), targets, spacing, metrics.BRATS_REGIONS
    )


def _safe_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(case_id))


def segment_fold(
    method: str,
    train_rows: pd.DataFrame | Iterable[Mapping[str, Any]],
    val_rows: pd.DataFrame | Iterable[Mapping[str, Any]],
    *,
    max_train_cases: int | None = None,
    seed: int = 0,
    hd95: bool = True,
    mask_dir: str | Path | None = None,
    on_prediction: Callable[[dict, np.ndarray], None] | None = None,
    brats_regions: int | None = None,
    foreground_labels: Sequence[int] | None = None,
    regions: Sequence[Sequence[int]] | None = None,
    **params: Any,
) -> pd.DataFrame:
    """Fit a segmenter on one fold's training rows and score its validation rows.

    Args:
        method: ``otsu`` or ``kmeans``.
        train_rows: Training catalog rows; rows without a mask are skipped.
        val_rows: Validation catalog rows; rows without a mask are predicted but not scored.
        max_train_cases: Fit on a random sample of this many training cases (None: all).
        seed: Seed of that sample (and of k-means' voxel sample).
        hd95: Compute HD95 (in spacing units, mm for volumes) as well.
        mask_dir: Save each prediction as ``<case_id>.npz`` (key ``mask``) there.
        on_prediction: Called with each validation row and its predicted mask.
        brats_regions: The enhancing-tumour label (4, or 3 for BraTS 2023) of a BraTS study: the one
            predicted mask is then scored against WT, TC and ET, and ``dice``/``iou``/... are their means
            with ``dice_WT``/``dice_TC``/``dice_ET`` beside them, exactly as the deep models' rows
            (:func:`~tumorbench.evaluation.metrics.region_case_metrics`).
        regions: With ``brats_regions``, the label sets of WT, TC and ET for maps not in BraTS' numbering
            (the study's ``preprocess.regions``).
        foreground_labels: The mask labels that are the target (the study's
            ``preprocess.foreground_labels``, e.g. the tumour of organ + tumour masks); None: any non-zero.
        **params: Segmenter parameters.

    Returns:
        One row per scored case: ``case_id``, ``patient_id``, ``method``, dice, iou,
        sensitivity, precision, hd95 and the voxel counts ``tp``, ``fp``, ``fn`` (pool them
        per patient with :func:`patient_metrics`). ``attrs``: ``method``, ``fitted``
        (the learnt parameters), ``unscored`` (validation cases without a mask) and, with
        ``hd95``, ``patient_hd95``: each patient's HD95 on the volume its 2D slices stack
        into (``slice_index`` order), as the deep models are scored; a 3D case's own HD95.
    """
    if method == "kmeans":
        params.setdefault("random_state", seed)
    model = make_segmenter(method, **params)
    train = [r for r in as_records(train_rows) if isinstance(r.get("mask"), str)]
    if not train:
        raise ValueError("no training row has a mask to learn from")
    if max_train_cases is not None and len(train) > max_train_cases:
        picked = np.random.default_rng(seed).choice(len(train), max_train_cases, replace=False)
        train = [train[i] for i in sorted(picked)]
    cases = [read_case(row, foreground=foreground_labels)[:2] for row in train]
    model.fit([c[0] for c in cases], [c[1] for c in cases], groups=[str(r["patient_id"]) for r in train])
    del cases
    out_dir = Path(mask_dir) if mask_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    records, unscored, stacks = [], [], defaultdict(list)
    for row in as_records(val_rows):
        image, target, spacing = read_case(row, foreground=foreground_labels)
        pred = model.predict([image])[0]
        if out_dir is not None:
            np.savez_compressed(out_dir / f"{_safe_name(row['case_id'])}.npz", mask=pred)
        if on_prediction is not None:
            on_prediction(row, pred)
        if target is None:
            unscored.append(row["case_id"])
            continue
        tp = int(np.count_nonzero(pred & target))
        scores = (
            _case_metrics(pred, target, spacing, hd95)
            if brats_regions is None
            else _region_scores(row, pred, spacing, brats_regions, regions)
        )
        records.append(
            {
                "case_id": row["case_id"],
                "patient_id": row["patient_id"],
                "method": method,
                **scores,
                "tp": tp,
                "fp": int(pred.sum()) - tp,
                "fn": int(target.sum()) - tp,
            }
        )
        if hd95 and pred.ndim == 2:
            stacks[row["patient_id"]].append((_slice_index(row), str(row["case_id"]), pred, target))
    frame = pd.DataFrame(records)
    frame.attrs.update(method=method, fitted=model.fitted_params(), unscored=unscored)
    if hd95:
        frame.attrs["patient_hd95"] = _patient_hd95(frame, stacks)
    return frame


def _region_patient_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-patient means of the region-averaged case metrics (a BraTS patient is one volume)."""
    columns = [
        c
        for c in ("dice", "iou", "sensitivity", "precision", "hd95", "dice_WT", "dice_TC", "dice_ET")
        if c in frame.columns
    ]
    grouped = frame.groupby("patient_id", sort=True)
    out = grouped[columns].mean().reset_index()
    out["n_cases"] = grouped.size().to_numpy()
    return out


def _slice_index(row: Mapping[str, Any]) -> int:
    index = row.get("slice_index")
    return int(index) if isinstance(index, (int, float, np.integer)) and np.isfinite(index) else -1


def _patient_hd95(frame: pd.DataFrame, stacks: Mapping[str, list]) -> dict[str, float]:
    """HD95 per patient: of the stacked slices (in voxels, like training's validation), else of its case(s)."""
    out = {}
    for patient, parts in stacks.items():
        parts = sorted(parts, key=lambda part: part[:2])
        out[patient] = metrics.compute_hd95(
            np.stack([p[2] for p in parts], axis=-1), np.stack([p[3] for p in parts], axis=-1)
        )
    if len(frame):
        volumes = frame[~frame["patient_id"].isin(list(stacks))]
        out |= volumes.groupby("patient_id")["hd95"].mean().to_dict()
    return out


def patient_metrics(frame: pd.DataFrame, *, empty_value: float = 1.0) -> pd.DataFrame:
    """Per-patient Dice, IoU, sensitivity and precision from pooled ``tp``/``fp``/``fn`` counts.

    With ``attrs["patient_hd95"]`` (from :func:`segment_fold`) an ``hd95`` column too.

    Dice is ``2·ΣTP / (Σ|P| + Σ|T|)`` over the patient's cases; ``empty_value`` where
    prediction and target are empty everywhere, NaN for a sensitivity (precision) with no
    target (predicted) voxel.
    """
    if "dice_WT" in frame.columns:  # BraTS regions (segment_fold's brats_regions): one volume per patient
        return _region_patient_metrics(frame)
    sums = frame.groupby("patient_id", sort=True)[["tp", "fp", "fn"]].sum()
    tp, fp, fn = (sums[c].to_numpy(np.float64) for c in ("tp", "fp", "fn"))
    empty = (tp + fp + fn) == 0

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.divide(num, den, out=np.full(len(num), np.nan), where=den > 0)
        return np.where(empty, empty_value, out)

    out = pd.DataFrame(
        {
            "patient_id": sums.index,
            "dice": ratio(2 * tp, 2 * tp + fp + fn),
            "iou": ratio(tp, tp + fp + fn),
            "sensitivity": ratio(tp, tp + fn),
            "precision": ratio(tp, tp + fp),
            "n_cases": frame.groupby("patient_id").size().to_numpy(),
        }
    )
    if "patient_hd95" in frame.attrs:
        out["hd95"] = out["patient_id"].map(frame.attrs["patient_hd95"]).astype(float)
    return out
