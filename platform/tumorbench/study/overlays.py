"""Overlays of prediction vs ground truth for the best and worst patients of the winning model.

Each patient is predicted by the fold model that did not train on it (the
out-of-fold checkpoint), through the same :class:`~tumorbench.inference.Predictor`
that serves models, and shown on the slice with the most ground-truth tumor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tumorbench.data import io
from tumorbench.data.preview import to_display


def _case_image(row: dict) -> io.ImageData:
    """A case's channels as one image (2D files as they are; volumes stacked channel-last)."""
    images = [io.read_image(path) for path in row["image"]]
    if len(images) == 1:
        return images[0]
    first = images[0]
    return io.ImageData(
        np.stack([im.array for im in images], axis=-1),
        first.affine,
        first.spacing,
        {**first.meta, "path": row["case_id"]},
    )


def _slice(image: io.ImageData, truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if image.meta.get("format") == "image2d":
        picture = image.array.transpose(1, 2, 0) if image.array.shape[0] == 3 else image.array[0]
        return picture, truth, pred
    volume = image.array[..., -1] if image.array.ndim == 4 else image.array  # last channel: FLAIR for BraTS
    shown = [to_display(v, image.affine) for v in (volume, truth, pred)]
    k = int(shown[1].sum(axis=(0, 1)).argmax())
    return tuple(v[:, :, k].T for v in shown)


def _pick_case(frame: pd.DataFrame, patient: str) -> dict:
    """The patient's case with the most ground-truth tumor (2D slice datasets hold many)."""
    cases = frame[frame["patient_id"] == patient]
    if len(cases) == 1:
        return cases.iloc[0].to_dict()
    areas = [float((io.read_image(m).array > 0).sum()) for m in cases["mask"]]
    return cases.iloc[int(np.argmax(areas))].to_dict()


def write_overlays(
    predictions: pd.DataFrame, model: str, fold_records: list, frame: pd.DataFrame, out: Path
) -> list[Path]:
    """``out/overlays/<best|worst>_<model>_<patient>.png`` for the model's best and worst patient."""
    from tumorbench.inference import Predictor
    from tumorbench.reporting.figures import extreme_cases, write_overlay

    checkpoints = {record.fold: record.checkpoint for record in fold_records}
    written = []
    for row in extreme_cases(predictions, model, metric="dice", n=1).to_dict("records"):
        case = _pick_case(frame, row["patient_id"])
        if not isinstance(case.get("mask"), str):
            continue
        image = _case_image(case)
        result = Predictor.from_package(checkpoints[int(row["fold"])]).predict_image(image)
        truth = io.read_image(case["mask"]).array
        truth = (truth[0] if truth.ndim == 3 and image.meta.get("format") == "image2d" else truth) > 0
        picture, truth2d, pred2d = _slice(image, truth, result.mask[0] > 0)
        path = out / "overlays" / f"{row['which']}_{model}_{row['patient_id']}.png"
        written.append(
            write_overlay(
                picture,
                truth2d,
                pred2d,
                path,
                title=f"{model}, {row['which']} patient {row['patient_id']} (patient Dice {row['dice']:.3f})",
            )
        )
    return written
