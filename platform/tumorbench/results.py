"""What a prediction answers: :class:`ClassificationResult` and :class:`SegmentationResult`
(made by :class:`tumorbench.inference.Predictor`), the measurements of a mask (:func:`measure_mask`)
and the mask as a file (:func:`mask_file`: PNG for 2D, gzipped NIfTI for 3D)."""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

MAX_LESIONS = 100  # largest lesions listed per channel; the count covers all of them


@dataclass(frozen=True)
class ClassificationResult:
    """Class probabilities and the label they give."""

    label: str
    probabilities: dict[str, float]
    threshold: float
    positive_class: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "task": "classification",
            "label": self.label,
            "probabilities": dict(self.probabilities),
            "positive_class": self.positive_class,
            "threshold": self.threshold,
        }


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """A mask at the input's geometry and its measurements.

    Attributes:
        mask: ``uint8`` ``(C, *shape)``, 1 = foreground, one channel per model output.
        regions: Per channel: ``name``, ``area_mm2`` (2D) or ``volume_ml`` (3D), ``lesion_count``
            and ``lesions`` (largest first: ``bbox_min``, ``bbox_max`` exclusive, array index order,
            ``voxels`` and their area / volume).
    """

    mask: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]
    spacing_known: bool
    threshold: float
    regions: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready measurements; the top level describes channel 0 (whole tumour for BraTS regions)."""
        first = {k: v for k, v in self.regions[0].items() if k != "name"}
        notes = [] if self.spacing_known else ["pixel spacing unknown (image file): 1 mm per pixel assumed"]
        out = {
            "task": "segmentation",
            "dims": self.mask.ndim - 1,
            "shape": list(self.mask.shape[1:]),
            "spacing_mm": [float(s) for s in self.spacing],
            "spacing_known": self.spacing_known,
            "threshold": self.threshold,
            **first,
            "notes": notes,
        }
        if len(self.regions) > 1:
            out["channels"] = self.regions
        return out


def measure_mask(mask: np.ndarray, unit: float, size_key: str) -> dict[str, Any]:
    """Total size, lesion count and the largest lesions' boxes of one binary mask.

    Args:
        mask: Binary array (2D or 3D).
        unit: Area (mm^2) or volume (mL) of one pixel / voxel.
        size_key: ``area_mm2`` or ``volume_ml``.
    """
    # Labelled within the box around the foreground only: a tumour is a few percent of a slice or volume
    # (BraTS: ~2% of 240 x 240 x 155), and labelling, counting and boxing scale with the voxels labelled.
    crop = _foreground_box(mask)
    if crop is None:
        return {size_key: 0.0, "lesion_count": 0, "lesions": []}
    labels, count = ndimage.label(mask[crop])
    voxels = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    largest = np.argsort(-voxels, kind="stable")[:MAX_LESIONS]
    # Boxes of the listed lesions only: find_objects makes a tuple per label, and a speckled mask (a
    # weak model's noise) has millions of labels: seconds and gigabytes for boxes never listed.
    rank = np.zeros(count + 1, dtype=np.int32)
    rank[largest + 1] = np.arange(1, len(largest) + 1)
    boxes = ndimage.find_objects(rank[labels], max_label=len(largest))
    lesions = [
        {
            "bbox_min": [int(s.start + c.start) for s, c in zip(box, crop)],
            "bbox_max": [int(s.stop + c.start) for s, c in zip(box, crop)],
            "voxels": int(voxels[i]),
            size_key: float(voxels[i] * unit),
        }
        for i, box in zip(largest, boxes)
    ]
    return {size_key: float(voxels.sum() * unit), "lesion_count": int(count), "lesions": lesions}


def _foreground_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every nonzero voxel of ``mask`` (None when there is none)."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def mask_file(result: SegmentationResult) -> tuple[str, bytes]:
    """The mask as a file: ``(media type, bytes)``.

    2D: a greyscale PNG, 0/255 for one channel, else bit ``c`` set for channel ``c``.
    3D: a gzipped NIfTI (``uint8``, ``(I, J, K)`` or ``(I, J, K, C)``) with the input's affine.
    """
    mask = result.mask
    if mask.ndim == 3:
        pixels = mask[0] * 255 if len(mask) == 1 else sum(mask[c].astype(np.uint8) << c for c in range(len(mask)))
        buffer = io.BytesIO()
        # zlib level 1: a third of the CPU of the default 6 for a mask, about 1.4x the bytes
        Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
        return "image/png", buffer.getvalue()
    data = mask[0] if len(mask) == 1 else np.moveaxis(mask, 0, -1)
    image = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.uint8), result.affine)
    image.set_qform(result.affine, code=1)
    image.set_sform(result.affine, code=1)
    return "application/gzip", gzip.compress(image.to_bytes(), compresslevel=6)
