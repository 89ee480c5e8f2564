"""Preview montages: a few cases of a dataset with their masks outlined.

3D volumes are shown as the axial slice with the most tumor, in radiological
view (patient's right on the image's left, anterior at the top), whatever the
orientation they were stored in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from tumorbench.data import io
from tumorbench.data.catalog import scan

_DISPLAY_AXES = ("L", "P", "S")  # array[:, :, k].T is then the radiological axial view
_PREFERRED_CHANNELS = ("flair", "t2f", "ct", "image")


def to_display(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    transform = ornt_transform(io_orientation(affine), axcodes2ornt(_DISPLAY_AXES))
    return apply_orientation(volume, transform)


def _channel_index(channels: tuple[str, ...]) -> int:
    lowered = [c.lower() for c in channels]
    return next((lowered.index(c) for c in _PREFERRED_CHANNELS if c in lowered), 0)


def _normalize(picture: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(picture, [1, 99.5])
    return np.clip((picture - lo) / (hi - lo + 1e-8), 0.0, 1.0)


def case_picture(row: dict) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The picture of a case to show: (H, W) or (H, W, 3) image, (H, W) mask or None, caption."""
    mask_path = row.get("mask") if isinstance(row.get("mask"), str) else None
    first = io.read_image(row["image"][0])
    if first.meta.get("format") == "image2d":
        picture = first.array.transpose(1, 2, 0) if first.array.shape[0] == 3 else first.array[0]
        mask = io.read_image(mask_path).array[0] > 0 if mask_path else None
        return _normalize(picture), mask, row["case_id"]
    index = _channel_index(tuple(row["channels"]))
    source = io.read_image(row["image"][min(index, len(row["image"]) - 1)])
    volume = to_display(source.array, source.affine)
    mask_volume = None
    if mask_path:
        mask_image = io.read_image(mask_path)
        mask_volume = to_display(mask_image.array, mask_image.affine) > 0
    k = (
        int(mask_volume.sum(axis=(0, 1)).argmax())
        if mask_volume is not None and mask_volume.any()
        else volume.shape[2] // 2
    )
    mask = mask_volume[:, :, k].T if mask_volume is not None else None
    return _normalize(volume[:, :, k].T), mask, f"{row['case_id']} z={k}"


def _mask_area(path: object) -> float:
    return float((io.read_image(path).array > 0).sum()) if isinstance(path, str) else 0.0


def _pick_cases(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """One case per patient (the dataset's variety), the one with most tumor when a patient has several."""
    patients = sorted(frame["patient_id"].unique())
    if len(patients) > n:
        chosen = np.random.default_rng(seed).choice(len(patients), size=n, replace=False)
        patients = [patients[i] for i in sorted(chosen)]
    rows = []
    for patient in patients:
        cases = frame[frame["patient_id"] == patient]
        best = cases["mask"].map(_mask_area).idxmax() if len(cases) > 1 else cases.index[0]
        rows.append(frame.loc[best])
    return pd.DataFrame(rows)


def write_preview(root: str | Path, out: str | Path, *, layout: str = "auto", n: int = 8, seed: int = 0) -> Path:
    """Write a PNG montage of ``n`` cases with mask outlines in red.

    Returns:
        The path of the written PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = scan(root, layout, strict=False)
    chosen = _pick_cases(frame, n, seed)
    cols = min(4, len(chosen))
    rows = int(np.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), chosen.to_dict("records")):
        picture, mask, caption = case_picture(row)
        ax.imshow(picture, cmap="gray", interpolation="nearest")
        if mask is not None and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=1.0)
        label = row["label"] if isinstance(row["label"], str) else ""
        ax.set_title(f"{caption}\n{label}".strip(), fontsize=7)
    fig.suptitle(
        f"{frame.attrs['layout']}: {Path(frame.attrs['root']).name} "
        f"({len(frame)} cases, {frame['patient_id'].nunique()} patients)",
        fontsize=9,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
