"""Header-level checks of every volume case of a 3D set, for planning: data length and grids, no voxels read.

The fingerprint reads a sample of volumes whole; reading every volume of a large 3D set would take
minutes, so a truncated volume or a mask on another grid outside the sample used to stop a Train
worker mid-study. These checks cost a header read each (and a ``.nii.gz``'s 4-byte length trailer):

- the data the header declares is all there (``.nii``: the file's size; ``.nii.gz``: gzip's ISIZE
  trailer, and when it disagrees -- a truncated file, or a stream of several members -- the stream is
  decompressed in bounded chunks to count its bytes; uncompressed MetaImage / NRRD: the data file's size);
- every sequence and the mask lie on the first sequence's voxel grid once reoriented to RAS, as the
  loader (:class:`~tumorbench.transforms.custom.LoadCased`) requires.

DICOM series are checked by :func:`tumorbench.data.dicom.check_series`, and their masks on the series' grid
(a SEG or RTSTRUCT read onto it); compressed MetaImage / NRRD data is left to the loader.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tumorbench.data import itk_io
from tumorbench.data.image import grid_problem, ras_reorientation
from tumorbench.data.layouts.common import VOLUME_SUFFIXES
from tumorbench.errors import DataError

CHUNK = 1 << 20  # bytes decompressed at a time when a gzip stream has to be counted


def volume_grid(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """``(shape, affine)`` of a NIfTI, MetaImage or NRRD volume in RAS, after checking that its data is complete.

    Raises:
        DataError: An unreadable header, or data shorter than the header declares, naming the file.
    """
    from tumorbench.data.io import open_nifti

    if itk_io.is_itk(path):
        info = itk_io.header(path)
        if missing := itk_io.missing_bytes(path, info):
            raise DataError(path, f"truncated image data: {missing:,} bytes short of what its header declares")
        _, ras_shape, affine = ras_reorientation(info["shape"][:3], info["affine"])
        return tuple(ras_shape), affine
    img = open_nifti(path)
    proxy = img.dataobj  # its offset: the header's vox_offset, or where nibabel reads a file that says 0
    shape = tuple(int(s) for s in proxy.shape)
    expected = int(proxy.offset) + math.prod(shape) * np.dtype(proxy.dtype).itemsize
    held = _data_length(Path(path), expected)
    if held < expected:
        raise DataError(path, f"truncated NIfTI: {held:,} bytes of the {expected:,} its header declares")
    _, ras_shape, affine = ras_reorientation(shape[:3], np.asarray(img.affine, dtype=float))
    return tuple(ras_shape), affine


def _data_length(path: Path, expected: int) -> int:
    """Bytes the file holds once decompressed, counted up to ``expected`` at most (time bounded by the header's
    size, whatever the stream holds); ``expected`` when a gzip trailer says so (no decompression)."""
    if not path.name.lower().endswith(".gz"):
        return path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(-4, 2)
        if int.from_bytes(handle.read(4), "little") == expected % 2**32:
            return expected
    total = 0
    try:  # gzip.open reads every member: what nibabel would read
        with gzip.open(path, "rb") as stream:
            while total < expected and (block := stream.read(CHUNK)):  # enough: the data is all there
                total += len(block)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(path, f"corrupt or truncated gzip stream ({type(exc).__name__}: {exc})") from exc
    return total


def volume_case_problem(row: dict[str, Any]) -> str | None:
    """Why a 3D case cannot be used, from its headers (no voxel decoded), or None: a DICOM series as
    :func:`tumorbench.data.dicom.check_series` checks it and its mask by :func:`_check_series_mask`,
    volume files by :func:`case_grid_problem`."""
    from tumorbench.data.dicom import check_series

    series = [p for p in row["image"] if not _is_volume_file(str(p))]
    uid = row.get("series_uid") if isinstance(row.get("series_uid"), str) else None
    try:
        grids = [check_series(path, series_uid=uid) for path in series]  # a series folder or a DICOM file
        if grids and grids[0] is not None and isinstance(row.get("mask"), str):
            _check_series_mask(row["mask"], *grids[0])
    except DataError as exc:
        return str(exc)
    return case_grid_problem(row)


def _check_series_mask(mask: str, affine: np.ndarray, shape: tuple[int, int, int]) -> None:
    """A DICOM series' mask, refused as the loader would refuse it: a volume file on another grid (in RAS), a
    SEG or RTSTRUCT that cannot be read onto the series it references (read whole: a few KB of bits or contours)."""
    from tumorbench.data.dicom_masks import mask_modality, read_dicom_mask

    if _is_volume_file(mask):
        _, ras_shape, ras_affine = ras_reorientation(shape, affine)
        problem = grid_problem("mask", *volume_grid(mask), tuple(ras_shape), ras_affine, "its series (both in RAS)")
        if problem:
            raise DataError(mask, problem)
    elif mask_modality(Path(mask)):
        read_dicom_mask(mask)


def case_grid_problem(row: dict[str, Any]) -> str | None:
    """Why a 3D case's volume files cannot be used together (the file and the problem), or None."""
    paths = [p for p in row["image"] if _is_volume_file(p)]
    if not paths:
        return None
    mask = row.get("mask")
    try:
        ref_shape, ref_affine = volume_grid(paths[0])
        others = [(p, "image channel") for p in paths[1:]]
        others += [(mask, "mask")] if isinstance(mask, str) and _is_volume_file(mask) else []
        for path, what in others:
            problem = grid_problem(what, *volume_grid(path), ref_shape, ref_affine, "its first image (both in RAS)")
            if problem:
                return str(DataError(path, problem))
    except DataError as exc:
        return str(exc)
    return None


def _is_volume_file(path: Any) -> bool:
    """A volume file whose header is checked here: NIfTI, MetaImage or NRRD (not DICOM)."""
    return isinstance(path, str) and path.lower().endswith(VOLUME_SUFFIXES)
