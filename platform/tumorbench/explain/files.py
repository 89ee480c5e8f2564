"""``tumorbench explain``: heatmaps of a model package on files, with overlays and a scores table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tumorbench.errors import DataError
from tumorbench.explain.cases import (
    display_slice,
    explain_prepared,
    explainer_for,
    heatmap_file,
    overlay_png,
    picture_of,
)
from tumorbench.uploads import read_upload


def _truth(path: Path, shape: tuple[int, ...], limits) -> np.ndarray:
    """A mask file on the input's grid (PNG: first channel; DICOM slice: rows x columns)."""
    image = read_upload(path, limits, label=path.name)
    array = np.asarray(image.array)
    if image.meta.get("format") == "image2d":
        array = array[0]
    elif array.ndim == 3 and array.shape[2] == 1 and len(shape) == 2:
        array = array[:, :, 0].T
    if array.shape != shape:
        raise DataError(path, f"mask shape {array.shape} differs from its image's {shape}")
    return array > 0


def explain_files(
    package: str | Path, files: Sequence[Path], *, method: str, out: Path, masks: Sequence[Path] | None = None
) -> pd.DataFrame:
    """Explain each file; write ``<out>/<stem>_<method>.png`` overlays, heatmaps and ``scores.csv``.

    Heatmaps are written on each file's own grid: ``<stem>_<method>_heatmap.png`` (8-bit) for 2D
    inputs, ``.nii.gz`` for volumes. ``scores.csv`` has one row per file: deletion / insertion AUC,
    and pointing game and energy in tumor when masks are given.
    """
    from tumorbench.inference import Predictor

    predictor = Predictor.from_package(package)
    explainer = explainer_for(predictor, method)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, path in enumerate(files):
        path = Path(path)
        image = read_upload(path, predictor.preprocessor.limits, label=path.name)
        prepared = predictor.preprocessor.prepare_image(image)
        truth = _truth(Path(masks[i]), prepared.shape, predictor.preprocessor.limits) if masks else None
        result = explain_prepared(predictor, explainer, prepared, truth)
        stem = path.name.split(".")[0]
        picture, heat2d, truth2d = display_slice(picture_of(image), result.heatmap, truth)
        (out / f"{stem}_{method}.png").write_bytes(overlay_png(picture, heat2d, truth2d, title=f"{stem}: {method}"))
        media, data = heatmap_file(result.heatmap, prepared.affine)
        (out / f"{stem}_{method}_heatmap{'.png' if media == 'image/png' else '.nii.gz'}").write_bytes(data)
        rows.append({"file": path.name, "method": method, **result.scores})
    table = pd.DataFrame(rows)
    table.to_csv(out / "scores.csv", index=False)
    return table
