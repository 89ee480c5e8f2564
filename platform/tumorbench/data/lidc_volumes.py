"""LIDC-IDRI's CTs as NIfTI volumes with their nodules' consensus masks (``tumorbench data lidc-idri --volumes``).

Each series becomes ``images/<patient>_<scan>.nii.gz`` (HU, int16) and ``masks/<patient>_<scan>.nii.gz`` (1 inside a
nodule) on the series' own grid, with ``patients.csv`` naming each case's patient (a patient's scans share a fold):
the ``paired`` layout, for 3D nodule segmentation (``compare.py --data OUT/volumes``). A nodule's voxels are those
at least half of its readers put inside it (the 50% consensus of the LIDC literature and pylidc); a series without
nodules is a case with an empty mask.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from tumorbench.errors import DataError

CONSENSUS = 0.5


def consensus(by_reader: dict[int, dict[int, np.ndarray]], level: float = CONSENSUS) -> dict[int, np.ndarray]:
    """The slices' voxels at least ``level`` of the readers put inside the nodule (``by_reader``: reader -> slice ->
    mask)."""
    need = max(1, math.ceil(level * len(by_reader) - 1e-9))
    counts: dict[int, np.ndarray] = {}
    for mine in by_reader.values():
        for k, mask in mine.items():
            counts[k] = counts.get(k, 0) + mask.astype(np.uint8)
    return {k: count >= need for k, count in counts.items() if (count >= need).any()}


def write_volume(folder: Path, name: str, files: list[Path], nodules: list[dict[int, np.ndarray]]) -> None:
    """The series (``files``, in the order the nodules' slice numbers count) and its nodules' masks under
    ``folder``; DataError when the slices are not one volume (a missing slice, mixed sizes...)."""
    from tumorbench.data.dicom import read_dicom_series
    from tumorbench.data.writers import write_nifti

    try:
        image = read_dicom_series(files)
    except DataError as exc:  # its label names the series' UID: the folder is enough
        raise DataError(Path(files[0]).parent, exc.problem) from None
    k_of = {str(path): k for k, path in enumerate(image.meta["files"])}
    mask = np.zeros(image.array.shape, np.uint8)
    for nodule in nodules:
        for k, plane in nodule.items():
            mask[:, :, k_of[str(files[k])]] |= plane.T.astype(np.uint8)  # (row, column) -> (i column, j row)
    hu = np.clip(np.rint(image.array), -32768, 32767).astype(np.int16)
    write_nifti(folder / "images" / f"{name}.nii.gz", hu, image.affine)
    write_nifti(folder / "masks" / f"{name}.nii.gz", mask, image.affine)


def write_patients(folder: Path, cases: dict[str, str]) -> None:
    """``patients.csv``: each written case's patient (written last: the set is complete once it is there); none
    when no volume was written (each series' problem is listed)."""
    if not cases:
        return
    with open(folder / "patients.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "patient_id"])
        writer.writerows((f"{case}.nii.gz", patient) for case, patient in sorted(cases.items()))
