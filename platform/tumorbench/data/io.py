"""Readers for NIfTI volumes and 2D images, and :func:`read_image`, which dispatches to them and to the others.

DICOM series are read in :mod:`tumorbench.data.dicom`, MetaImage and NRRD volumes in :mod:`tumorbench.data.itk_io`.
Every reader returns an :class:`ImageData`; every unusable input raises :class:`~tumorbench.errors.DataError`
naming the file (or series) and the problem.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation
from PIL import Image, ImageFile

from tumorbench.data.dicom import read_dicom_series
from tumorbench.data.dicom_masks import mask_modality, read_dicom_mask
from tumorbench.data.image import (
    ImageData,
    degenerate,
    orientation_codes,
    permute_axes,
    ras_reorientation,
    spacing_from_affine,
)
from tumorbench.data.itk_io import ITK_SUFFIXES, read_itk, with_data_file
from tumorbench.data.layouts.common import DICOM_SUFFIXES, has_dicm_magic
from tumorbench.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_GREY_MODES = ("L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def image_content_hash(path: str | Path) -> str:
    """Return the sha256 hex digest of a file's bytes, or of a folder's files (a DICOM series).

    A folder's digest covers its files' relative names and bytes in sorted order; a detached MetaImage or
    NRRD header's covers its data file's bytes too (a voxel changed in ``scan.raw`` changes ``scan.mhd``'s).
    """
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else with_data_file(path)
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode())
        try:
            with open(file, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            raise DataError(file, f"cannot read file ({exc.strerror or exc})") from exc
    return digest.hexdigest()


# ----------------------------------------------------------------------------- NIfTI


def open_nifti(path: str | Path) -> nib.spatialimages.SpatialImage:
    """A NIfTI image with its header checked (affine, dimensions); its voxels are not read yet."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for bad headers / gzip streams
        raise DataError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    affine = np.asarray(img.affine, dtype=float)
    if degenerate(affine):
        raise DataError(path, f"degenerate voxel-to-world affine {affine.tolist()}")
    if len(img.shape) < 3:
        raise DataError(path, f"expected a 3D volume, got shape {img.shape}")
    return img


def read_nifti(path: str | Path, *, canonical: bool = False, dtype: Any = np.float32) -> ImageData:
    """Read a NIfTI volume (.nii / .nii.gz).

    Args:
        path: The file.
        canonical: Reorient array and affine to RAS (see :func:`to_canonical`).
        dtype: Array dtype; header scaling (scl_slope/inter) is applied first.
    """
    img = open_nifti(path)
    try:
        data = np.asarray(img.dataobj)
    except Exception as exc:  # truncated gzip, short file, zlib errors all surface here
        raise DataError(path, f"corrupt or truncated NIfTI data ({type(exc).__name__}: {exc})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:  # (X, Y, Z, 1) exports are common
        data = data[..., 0]
    affine = np.asarray(img.affine, dtype=float)
    image = ImageData(
        array=data.astype(dtype, copy=False),
        affine=affine,
        spacing=spacing_from_affine(affine),
        meta={"path": str(path), "format": "nifti", "orientation": orientation_codes(affine)},
    )
    return to_canonical(image) if canonical else image


def to_canonical(image: ImageData) -> ImageData:
    """Flip/permute a 3D image's array and affine to the closest RAS orientation.

    The reorientation depends only on the affine, so an image and its label map sharing
    an affine move identically and keep their world coordinates.
    """
    if image.meta.get("format") == "image2d" or image.array.ndim < 3:
        raise DataError(image.meta.get("path", "<image>"), "canonical reorientation needs a 3D volume")
    ornt, _, affine = ras_reorientation(image.array.shape[:3], image.affine)
    array = np.ascontiguousarray(apply_orientation(image.array, ornt))
    meta = {**image.meta, "orientation": orientation_codes(affine)}
    return ImageData(array=array, affine=affine, spacing=permute_axes(tuple(image.spacing), ornt), meta=meta)


# ----------------------------------------------------------------------------- 2D images


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    # Another library may have switched this global on; truncated pixels must never pass.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _to_channels(img: Image.Image, dtype: Any) -> np.ndarray:
    """``(C, H, W)`` in ``dtype``; ``None``: 8-bit pixels stay ``uint8`` (no float copy), others ``float32``."""
    if img.mode in ("1", "LA"):
        img = img.convert("L")
    if img.mode in _GREY_MODES:
        array = np.asarray(img)[None]  # 16/32-bit values kept as they are
    else:
        array = np.moveaxis(np.asarray(img if img.mode == "RGB" else img.convert("RGB")), -1, 0)  # P, RGBA, CMYK...
    if dtype is None:
        dtype = np.uint8 if array.dtype == np.uint8 else np.float32
    return array.astype(dtype, copy=False)


def has_second_frame(img: Image.Image) -> bool:
    """Whether an opened image has a second frame, found with one ``seek(1)``.

    ``n_frames`` walks a TIFF's whole chain of frame directories (seconds for a small file
    chaining thousands of one-pixel frames); ``seek(1)`` reads one. After True the image
    is left on frame 1: callers refuse it.
    """
    try:
        img.seek(1)
    except EOFError:
        return False
    return True


def read_image_2d(path: str | Path, dtype: Any = np.float32) -> ImageData:
    """Read a PNG / JPEG / TIFF / BMP image as a (C, H, W) array (C = 1 or 3), ``float32`` by default
    (``dtype=None``: 8-bit images as ``uint8``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with _strict_truncation(), Image.open(path) as img:
            if has_second_frame(img):
                raise DataError(path, "multi-frame image (2 or more frames) is not supported")
            img.load()
            mode, kind, array = img.mode, img.format, _to_channels(img, dtype)
        if kind == "PNG":
            with _strict_truncation(), Image.open(path) as check:
                check.verify()  # load() stops at the last IDAT; a cut-off trailer would pass
    except DataError:
        raise
    except Exception as exc:  # UnidentifiedImageError, OSError("truncated"), SyntaxError...
        reason = f"{type(exc).__name__}: {exc}"
        raise DataError(path, f"corrupt, truncated or unsupported image ({reason})") from exc
    meta = {"path": str(path), "format": "image2d", "orientation": None, "mode": mode}
    return ImageData(array=array, affine=np.eye(4), spacing=(1.0, 1.0), meta=meta)


# ----------------------------------------------------------------------------- dispatch


def read_image(
    path: str | Path,
    *,
    canonical: bool = False,
    dtype: Any = np.float32,
    series_uid: str | None = None,
) -> ImageData:
    """Read any supported image, choosing the reader by suffix (or the DICM preamble).

    Args:
        path: A NIfTI, MetaImage or NRRD file, a DICOM file or folder, or a 2D image.
        canonical: Reorient 3D volumes to RAS; ignored for 2D images.
        dtype: Array dtype of the result; ``None``: 8-bit 2D images as ``uint8``, everything else ``float32``.
        series_uid: The DICOM series to read when a folder holds several.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        image = read_dicom_series(path, series_uid=series_uid)
    elif name.endswith(NIFTI_SUFFIXES):
        return read_nifti(path, canonical=canonical, dtype=np.float32 if dtype is None else dtype)
    elif name.endswith(ITK_SUFFIXES):
        image = read_itk(path, dtype=np.float32 if dtype is None else dtype)
    elif name.endswith(IMAGE_2D_SUFFIXES):
        image = read_image_2d(path, dtype)
    elif name.endswith(DICOM_SUFFIXES) or has_dicm_magic(path):
        if not path.is_file():
            raise DataError(path, "file not found")
        # a SEG or RTSTRUCT (a catalog's mask) reads as a label map at the grid of the series it outlines
        image = read_dicom_mask(path) if mask_modality(path) else read_dicom_series([path], series_uid=series_uid)
    elif not path.exists():
        raise DataError(path, "file not found")
    else:
        raise DataError(path, f"unsupported file type {path.suffix or '(no suffix)'!r}")
    if canonical and image.meta["format"] != "image2d":
        image = to_canonical(image)
    if dtype is not None and image.array.dtype != np.dtype(dtype):
        image = ImageData(image.array.astype(dtype), image.affine, image.spacing, image.meta)
    return image
