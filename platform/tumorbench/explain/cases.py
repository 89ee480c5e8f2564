"""Explanations of whole inputs: a packaged model's heatmap on the input's own grid, its scores, pictures.

Shared by the ``tumorbench explain`` command, the study's explanation scores and Serve:
the input is preprocessed exactly as for prediction (:class:`tumorbench.inference.Preprocessor`),
explained on the model's grid, and the heatmap is taken back through the inverse preprocessing
onto the input's grid, where a truth mask lives.
"""

from __future__ import annotations

import gzip
import io
import math
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from tumorbench.explain.methods import ExplainConfig, Explainer, normalize_heatmap, randomized_copy
from tumorbench.explain.scores import (
    RandomisationResult,
    curve_auc,
    energy_in_mask,
    perturbation_curve,
    pointing_game,
    randomisation_check,
)
from tumorbench.heap import keep_freed_memory
from tumorbench.tasks import get_task

SCORE_COLUMNS = ("pointing", "energy_in_tumor", "deletion_auc", "insertion_auc")
CURVE_STEPS = 16  # deletion / insertion: 17 model evaluations per case


def explainer_for(predictor, method: str = "gradcam") -> Explainer:
    """An :class:`Explainer` of a :class:`tumorbench.inference.Predictor`'s model (positive class for 2 classes).

    Its process keeps freed memory for reuse from then on (:func:`tumorbench.heap.keep_freed_memory`): the
    deletion / insertion curves allocate batches of whole volumes again and again.
    """
    keep_freed_memory()
    manifest = predictor.manifest
    names = manifest.class_names or []
    positive = names.index(manifest.positive_class) if manifest.positive_class in names and len(names) == 2 else None
    return Explainer(predictor.model, manifest.name, manifest.task, ExplainConfig(method), positive_index=positive)


@dataclass(frozen=True, eq=False)
class Explained:
    """One input's explanation.

    Attributes:
        heatmap: ``(*input_shape)`` in [0, 1] on the input's own grid.
        model_heatmap: The same on the model's grid (after preprocessing).
        scores: ``deletion_auc``, ``insertion_auc`` and, with a mask, ``pointing`` and ``energy_in_tumor``.
    """

    heatmap: np.ndarray
    model_heatmap: np.ndarray
    scores: dict[str, float]


def explain_prepared(
    predictor, explainer: Explainer, prepared, mask: np.ndarray | None = None, *, curves: bool = True
) -> Explained:
    """Explain one preprocessed input (``Preprocessor.prepare_*``); ``mask`` on the input's grid."""
    image = torch.as_tensor(prepared.image.as_tensor() if hasattr(prepared.image, "as_tensor") else prepared.image)
    model_heat = explainer.heatmap(image)
    heat = normalize_heatmap(predictor.preprocessor.restore(prepared, torch.from_numpy(model_heat)[None])[0])
    scores: dict[str, float] = {}
    if curves:
        scores.update(faithfulness(explainer, image, model_heat))
    if mask is not None:
        truth = np.asarray(mask) > 0
        if truth.shape != heat.shape:
            raise ValueError(f"mask shape {truth.shape} differs from the input's {heat.shape}")
        scores.update(pointing=pointing_game(heat, truth), energy_in_tumor=energy_in_mask(heat, truth))
    return Explained(heat, model_heat, scores)


def faithfulness(explainer: Explainer, image: torch.Tensor, heatmap: np.ndarray) -> dict[str, float]:
    """Deletion and insertion AUC on the model's grid; removed pixels become 0 (the mean of a z-scored input)."""
    if get_task(explainer.task).with_mask and image.ndim == 4 and heatmap.ndim == 3 and _is_2d(explainer):
        return {"deletion_auc": math.nan, "insertion_auc": math.nan}  # a 2D net on a volume: not defined here
    scorer = explainer.scorer(image[None])

    def score(batch: np.ndarray) -> np.ndarray:
        return explainer.score(torch.from_numpy(batch), scorer)

    values = image.numpy()
    return {
        f"{mode}_auc": curve_auc(perturbation_curve(score, values, heatmap, mode, steps=CURVE_STEPS))
        for mode in ("deletion", "insertion")
    }


def _is_2d(explainer: Explainer) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in explainer.model.modules())


def randomisation(
    explainer: Explainer,
    images: list[torch.Tensor],
    seeds: tuple[int, ...] = (0, 1, 2),
    heatmaps: list[np.ndarray] | None = None,
) -> RandomisationResult:
    """Adebayo's check over ``images``: the explainer's heatmaps vs those of re-initialised copies."""
    trained = heatmaps if heatmaps is not None else [explainer.heatmap(x) for x in images]
    randomised: list[np.ndarray] = []
    for seed in seeds:
        copy = Explainer(
            randomized_copy(explainer.model, seed),
            explainer.model_name,
            explainer.task,
            explainer.config,
            explainer.positive_index,
        )
        randomised += [copy.heatmap(x) for x in images]
    return randomisation_check(list(trained) * len(seeds), randomised)


def display_slice(picture: np.ndarray, heatmap: np.ndarray, truth: np.ndarray | None) -> tuple:
    """A 2D view ``(image, heatmap, truth)`` of an input: as is for 2D, else the slice (last axis) with
    the most truth, or the heatmap's peak when there is no truth."""
    if heatmap.ndim == 2:
        return picture, heatmap, truth
    if truth is not None and truth.any():
        k = int(truth.sum(axis=(0, 1)).argmax())
    else:
        k = int(np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)[-1])
    return picture[..., k], heatmap[..., k], None if truth is None else truth[..., k]


def overlay_png(
    picture: np.ndarray, heatmap: np.ndarray, truth: np.ndarray | None = None, title: str | None = None
) -> bytes:
    """PNG of the image and of the heatmap over it, with the truth contour (green) when given.

    Args:
        picture: ``(H, W)`` grey or ``(H, W, 3)`` RGB.
        heatmap: ``(H, W)`` in [0, 1].
        truth: ``(H, W)`` binary mask or None.
    """
    from tumorbench.reporting.figures import _display, figure_png

    img, cmap = _display(np.asarray(picture))
    fig = Figure(figsize=(6.4, 3.4))
    for i, caption in enumerate(("image", "heatmap")):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(img, cmap=cmap, interpolation="nearest")
        if i == 1:
            ax.imshow(heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
        if truth is not None and np.any(truth):
            ax.contour(np.asarray(truth, dtype=float), levels=[0.5], colors="lime", linewidths=1.2)
        ax.set_title(caption, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    return figure_png(fig)


def heatmap_file(heatmap: np.ndarray, affine: np.ndarray | None = None) -> tuple[str, bytes]:
    """The heatmap as a file on the input's grid: ``(media type, bytes)``.

    2D: an 8-bit greyscale PNG (0..255 = heatmap 0..1) of the input's rows x columns.
    3D: a gzipped NIfTI (``float32``, values 0..1) with the input's affine.
    """
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float32), 0, 1)
    if heatmap.ndim == 2:
        buffer = io.BytesIO()
        Image.fromarray(np.round(heatmap * 255).astype(np.uint8)).save(buffer, format="PNG")
        return "image/png", buffer.getvalue()
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    image = nib.Nifti1Image(np.ascontiguousarray(heatmap), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return "application/gzip", gzip.compress(image.to_bytes(), compresslevel=6)


def picture_of(image_data: Any) -> np.ndarray:
    """The input's pixels for display, on its own grid: ``(H, W)``, ``(H, W, 3)`` or a volume ``(I, J, K)``."""
    array = np.asarray(image_data.array, dtype=float)
    if image_data.meta.get("format") == "image2d":
        return array.transpose(1, 2, 0) if array.shape[0] == 3 else array[0]
    if array.ndim == 3 and array.shape[2] == 1:  # one DICOM slice, (columns, rows, 1)
        return array[:, :, 0].T
    return array[..., -1] if array.ndim == 4 else array
