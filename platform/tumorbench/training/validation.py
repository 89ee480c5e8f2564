"""Validation every epoch: per-case predictions, gathered over workers, then the task's metric panel.

Segmentation is scored per patient: the slices of a 2D dataset are stacked
into the patient's volume (Buda et al.'s per-patient Dice), and a 3D case is
predicted whole, by sliding-window inference (3D models) or slice by slice
(2D models on volumes), a patient's volumes pooled as the baselines pool them.
HD95 is in the source images' units at any training resolution (a resized
slice's pixdim), as the classical baselines measure it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from tumorbench.evaluation.metrics import classification_metrics, region_case_metrics, voxel_counts
from tumorbench.inference import predict_volume

COUNTS = ("tp", "fp", "fn")  # a volume's voxel counts, pooled over a patient's volumes then dropped


def gather(records: list[dict]) -> list[dict]:
    """All workers' records, in rank order (a no-op without torch.distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return records
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, records)
    return [record for part in gathered for record in part]


def _to_device(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(image).float().to(device)


def _case_metrics(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None, channel_names: Sequence[str] | None
) -> dict[str, float]:
    """Metrics of one patient; multi-channel masks (BraTS regions) averaged over channels (baselines too)."""
    return region_case_metrics(pred, target, spacing, channel_names)


NATIVE_MASK = "native_mask"  # a case key: score this 2D case against the mask file at its own size
NATIVE_FOREGROUND = "native_foreground"  # with it: the study's preprocess.foreground_labels


def native_mask_2d(path: str, foreground: Sequence[int] | None = None) -> np.ndarray:
    """A 2D mask file as ``(H, W)`` booleans, read as ``LoadCased`` reads it (8-bit 0/255 masks at 128),
    then mapped as the chain maps it: ``foreground`` labels only, when given."""
    from tumorbench.data.io import read_image
    from tumorbench.data.masks import stored_labels, target

    data = read_image(path)
    arr = np.asarray(data.array, float)
    arr = arr[0] if arr.ndim == 3 else arr
    return target(stored_labels(arr, data.meta.get("format")), foreground)


def to_grid(prob: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Foreground probabilities ``(C, h, w)`` resampled (bilinear) to ``size``, the source image's grid."""
    if tuple(prob.shape[-2:]) == tuple(size):
        return prob
    return torch.nn.functional.interpolate(prob[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


@torch.no_grad()
def segmentation_records(
    model: torch.nn.Module,
    dataset,
    *,
    data_dims: int,
    model_dims: int,
    roi_size: Sequence[int] | None,
    device: torch.device,
    channel_names: Sequence[str] | None = None,
    threshold: float = 0.5,
) -> list[dict]:
    """One record per patient of this worker's validation cases."""
    model.eval()
    slices: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = defaultdict(list)
    slice_spacing: dict[str, tuple[float, float, float]] = {}
    volumes: dict[str, list[dict]] = defaultdict(list)
    records = []
    for item in dataset:
        target = np.asarray(item["mask"]) > 0.5
        if data_dims == 3:
            prob = predict_volume(model, item["image"], model_dims=model_dims, roi_size=roi_size, device=device)
            spacing = tuple(float(s) for s in item["image"].pixdim) if hasattr(item["image"], "pixdim") else None
            pred = prob.numpy() > threshold
            case = _case_metrics(pred, target, spacing, channel_names)
            if len(target) == 1:  # one mask channel: counts, to pool a patient's volumes as the baselines do
                case |= dict(zip(COUNTS, voxel_counts(pred[0], target[0])))
            volumes[item["patient_id"]].append(case)
        else:
            prob = torch.sigmoid(model(_to_device(item["image"], device)[None])[0].float()).cpu()
            # A resized slice's pixels are larger than the file's: its pixdim says by how much, so
            # HD95 comes out in the file's units (pixels or mm) at any training resolution.
            pixdim = tuple(float(s) for s in item["image"].pixdim) if hasattr(item["image"], "pixdim") else (1.0, 1.0)
            if isinstance(item.get(NATIVE_MASK), str) and prob.shape[0] == 1:
                # Scored as the baselines are: the prediction mapped back to the file's grid, the file's mask.
                target = native_mask_2d(item[NATIVE_MASK], item.get(NATIVE_FOREGROUND))[None]
                prob = to_grid(prob, target.shape[-2:])
                pixdim = (1.0, 1.0)
            slices[item["patient_id"]].append((int(item.get("slice_index", 0)), prob.numpy() > threshold, target))
            slice_spacing[item["patient_id"]] = (*pixdim[:2], 1.0)
    for patient, parts in slices.items():
        parts.sort(key=lambda part: part[0])
        pred = np.stack([p for _, p, _ in parts], axis=-1)
        target = np.stack([t for _, _, t in parts], axis=-1)
        records.append(
            {
                "patient_id": patient,
                "case_id": patient,
                "n_slices": len(parts),
                **_case_metrics(pred, target, slice_spacing[patient], channel_names),
            }
        )
    return records + [_patient_record(patient, cases) for patient, cases in volumes.items()]


def _patient_record(patient: str, cases: list[dict]) -> dict:
    """A patient's volumes as one record, keyed by the patient as the baselines' rows are (so the paired tests
    match them): one volume as it scored, several as :func:`tumorbench.baselines.patient_metrics` pools them."""
    from tumorbench.baselines import patient_metrics

    if len(cases) == 1:
        scores = cases[0]
    else:
        frame = pd.DataFrame([case | {"patient_id": patient} for case in cases])
        frame.attrs["patient_hd95"] = {patient: float(frame["hd95"].mean())}  # as the baselines' volumes
        scores = patient_metrics(frame).iloc[0].drop(["patient_id", "n_cases"]).to_dict()
    return {"patient_id": patient, "case_id": patient} | {k: v for k, v in scores.items() if k not in COUNTS}


def summarize_segmentation(records: list[dict]) -> dict[str, float]:
    """Means over patients (``dice`` is the mean per-patient Dice) and the Dice SD."""
    if not records:
        return {}
    keys = [k for k in records[0] if k not in ("patient_id", "case_id", "n_slices")]
    summary = {}
    for key in keys:
        # As folds.csv averages predictions.csv: NaN (undefined, e.g. HD95 of two empty masks) is skipped,
        # inf (a missed tumour) is kept, so a fold is selected on the score the leaderboard reports.
        values = np.asarray([r[key] for r in records], float)
        known = values[~np.isnan(values)]
        summary[key] = float(known.mean()) if len(known) else float("nan")
    summary["dice_sd"] = float(np.std([r["dice"] for r in records]))
    summary["patients"] = len(records)
    return summary


@torch.no_grad()
def classification_records(
    model: torch.nn.Module, dataset, *, device: torch.device, batch_size: int = 32
) -> list[dict]:
    """One record per validation case: true label and class probabilities."""
    from monai.data import DataLoader

    model.eval()
    records = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        probs = torch.softmax(model(_to_device(batch["image"], device)).float(), dim=1).cpu().numpy()
        for i, case_id in enumerate(batch["case_id"]):
            records.append(
                {
                    "case_id": case_id,
                    "patient_id": batch["patient_id"][i],
                    "y_true": int(batch["label"][i]),
                    "probs": probs[i].tolist(),
                }
            )
    return records


def summarize_classification(records: list[dict], positive: int) -> dict[str, float]:
    """The classification panel over all gathered cases."""
    y_true = np.asarray([r["y_true"] for r in records])
    probs = np.asarray([r["probs"] for r in records])
    if probs.shape[1] == 2:
        y_true, probs = (y_true == positive).astype(int), probs[:, positive]
    metrics = classification_metrics(y_true, probs, positive=1 if probs.ndim == 1 else positive)
    return {k: float(v) for k, v in metrics.items()} | {"cases": len(records)}
