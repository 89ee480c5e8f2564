"""The image type every reader returns: an array with its voxel-to-world geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np


@dataclass(frozen=True, eq=False)  # arrays make field-wise equality and hashing meaningless
class ImageData:
    """An image with its voxel-to-world geometry.

    Attributes:
        array: 3D volumes in (I, J, K) voxel-index order; 2D images channel-first (C, H, W).
        affine: 4x4 voxel index -> RAS+ world millimetres (identity-like for 2D images).
        spacing: Voxel size per spatial axis in mm.
        meta: "path", "format" ("nifti" | "itk" | "dicom" | "image2d"), "orientation" and
            format-specific keys; never patient-identifying tags.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray):
            raise TypeError(f"array must be a numpy array, got {type(self.array).__name__}")
        if np.shape(self.affine) != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {np.shape(self.affine)}")
        if not self.spacing or any(not s > 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive, got {self.spacing}")


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM patient (LPS) to NIfTI world (RAS) coordinates
AFFINE_TOLERANCE_MM = 1e-2  # the channels and the mask of one case share their voxel grid within this


def degenerate(affine: np.ndarray) -> bool:
    """A voxel-to-world affine no image can have: a value not finite, or axes that span no volume."""
    return not np.all(np.isfinite(affine)) or abs(np.linalg.det(np.asarray(affine)[:3, :3])) < 1e-12


def same_grid(affine: np.ndarray, other: np.ndarray) -> bool:
    """Whether two voxel-to-world affines are one grid (a mask on another grid would be misaligned)."""
    return bool(np.allclose(affine, other, atol=AFFINE_TOLERANCE_MM))


def ras_reorientation(shape: tuple[int, ...], affine: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """The closest-RAS reorientation of a volume (nibabel ``ornt``), its spatial shape and affine after it."""
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    ornt = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))
    return ornt, permute_axes(shape, ornt), affine @ inv_ornt_aff(ornt, shape)


def permute_axes(values: tuple, ornt: np.ndarray) -> tuple:
    """Per-axis values (shape, spacing) in the axis order ``ornt`` gives."""
    out = list(values)
    for axis, (target, _) in enumerate(ornt):
        out[int(target)] = values[axis]
    return tuple(out)


def grid_problem(
    what: str, shape: tuple, affine: np.ndarray, ref_shape: tuple, ref_affine: np.ndarray, ref: str = "its image"
) -> str | None:
    """Why a volume (``what``: "mask", "image channel") does not lie on the grid of ``ref``, or None.

    Shapes are compared as given (callers pass both in the same orientation), affines within
    :data:`AFFINE_TOLERANCE_MM`: one rule for planning (``data.integrity``), ``data check`` and the loader.
    """
    if tuple(shape) != tuple(ref_shape):
        return f"{what} shape {tuple(shape)} does not match shape {tuple(ref_shape)} of {ref}"
    if not same_grid(affine, ref_affine):
        return f"{what} voxel-to-world affine differs from that of {ref}: it would be misaligned (resample it onto it)"
    return None


def mask_grid_problem(image: ImageData, mask: ImageData) -> str | None:
    """Why ``mask`` does not lie on ``image``'s voxel grid, compared as the training loader compares them (2D:
    the pixel shape; volumes: shape and affine once both are reoriented to RAS), or None."""
    if image.meta.get("format") == "image2d":
        have, want = tuple(mask.array.shape[-2:]), tuple(image.array.shape[-2:])
        return None if have == want else f"mask shape {have} does not match image shape {want}"
    _, have, mask_affine = ras_reorientation(tuple(mask.array.shape[:3]), mask.affine)
    _, want, image_affine = ras_reorientation(tuple(image.array.shape[:3]), image.affine)
    return grid_problem("mask", have, mask_affine, want, image_affine, "its image (both in RAS orientation)")


def dicom_volume(array: np.ndarray, affine: np.ndarray, spacing: tuple[float, ...], **meta: Any) -> ImageData:
    """A volume read from DICOM (a series or one multi-frame file): ``meta`` plus format and orientation.

    ``meta``: ``path``, ``series_uid``, ``modality``, ``files`` and the reader's own keys.
    """
    return ImageData(array, affine, spacing, {"format": "dicom", "orientation": orientation_codes(affine), **meta})


def orientation_codes(affine: np.ndarray) -> str:
    """The affine's axis codes, e.g. "RAS" or "LPS"."""
    return "".join(nib.aff2axcodes(affine))


def spacing_from_affine(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size per axis: the lengths of the affine's columns."""
    return tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def dicom_planar_image(path: Any, ds: Any, pixels: np.ndarray) -> ImageData:
    """A planar DICOM image (radiograph: ``(1, rows, columns)``, rescaled; colour: ``(3, ...)``) with its
    patient or detector pixel spacing."""
    spacing, source = (1.0, 1.0), None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            spacing, source = (float(value[0]), float(value[1])), keyword
            break
    if pixels.ndim == 3:  # colour (ultrasound, photographs): (rows, columns, 3) RGB, no rescale
        array = np.moveaxis(pixels, -1, 0).astype(np.float32)
    else:
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        array = (pixels.astype(np.float64) * slope + intercept).astype(np.float32)[None]
    meta = {
        "path": str(path),
        "format": "image2d",
        "orientation": None,
        "source": "dicom",
        "modality": str(ds.get("Modality", "")),
        "spacing_known": source is not None,
        "spacing_source": source,
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "files": [str(path)],
    }
    return ImageData(array=array, affine=np.eye(4), spacing=spacing, meta=meta)
