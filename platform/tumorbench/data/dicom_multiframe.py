"""Multi-frame DICOM volumes: Enhanced CT / MR / PET, Legacy Converted Enhanced, breast tomosynthesis.

Modern scanners and PACS exports store a whole series as one file whose frames carry their own
positions in the per-frame functional groups. highdicom sorts the frames in space, checks that
they form one regularly spaced stack and applies the modality rescale (``Image.get_volume``);
this module turns its result into the project's convention (array ``(I, J, K)`` = columns, rows,
slices; ``K`` along row x column direction; LPS affine). Cine loops, several echoes or time
points, and frames without positions are not one volume: refused, naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tumorbench.data.image import LPS_TO_RAS, ImageData, dicom_volume, spacing_from_affine
from tumorbench.errors import DataError


def frame_count(ds: Any) -> int:
    """``NumberOfFrames`` of a header (1 when absent or empty)."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def read_multiframe(path: Path, origin: str, uid: str) -> ImageData:
    """One multi-frame file as :func:`~tumorbench.data.dicom.read_dicom_series` returns a series.

    float32 ``(I, J, K)`` in modality units, RAS affine; ``meta["frames"]`` counts the frames.

    Raises:
        DataError: The frames do not form one regularly spaced 3D stack (cine, several echoes,
            b-values or time points, missing positions), or the file cannot be decoded.
    """
    import highdicom as hd

    try:
        image = hd.imread(path)
    except Exception as exc:  # pydicom / highdicom raise many types for damaged or foreign files
        raise DataError(path, f"unreadable multi-frame DICOM ({type(exc).__name__}: {exc})") from exc
    try:
        volume = image.get_volume(dtype=np.float32)
    except Exception as exc:
        raise DataError(
            path,
            f"its {frame_count(image)} frames are not one regularly spaced 3D volume ({type(exc).__name__}: "
            f"{str(exc)[:200]}); cine loops and series of several echoes, b-values or time points are not read",
        ) from exc
    if volume.number_of_channel_dimensions or volume.array.ndim != 3:
        raise DataError(path, "multi-frame colour or multi-channel frames are not read as a volume")
    array = np.ascontiguousarray(volume.array.transpose(2, 1, 0))  # (slices, rows, columns) -> (I, J, K)
    affine = volume.affine[:, [2, 1, 0, 3]].copy()
    if np.dot(affine[:3, 2], np.cross(affine[:3, 0], affine[:3, 1])) < 0:
        # highdicom may stack against the row x column normal: read_dicom_series stacks along it
        array = np.ascontiguousarray(array[:, :, ::-1])
        affine[:3, 3] += affine[:3, 2] * (array.shape[2] - 1)
        affine[:3, 2] *= -1
    affine = LPS_TO_RAS @ affine
    spacing, modality = spacing_from_affine(affine), str(image.get("Modality", ""))
    files, frames = [str(path)], int(array.shape[2])
    return dicom_volume(
        array, affine, spacing, path=origin, series_uid=uid, modality=modality, files=files, frames=frames
    )
