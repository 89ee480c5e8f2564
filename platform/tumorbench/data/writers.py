"""Writers for NIfTI volumes and DICOM series with correct world geometry.

Both writers take a voxel-index -> RAS+ millimetre affine, the convention of
:mod:`tumorbench.data.io`, so anything written here reads back with the same
array and affine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from tumorbench.data.image import degenerate
from tumorbench.errors import DataError

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}
# Fixed dates keep repeated runs with one uid_seed byte-identical.
_SYNTHETIC_DATE = "20000101"


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray, *, dtype: Any = None) -> Path:
    """Write a NIfTI-1 volume with qform and sform code 1 (scanner RAS).

    Args:
        path: Target file (``.nii`` or ``.nii.gz``); parent folders are created.
        array: Voxel data in (I, J, K[, ...]) order.
        affine: 4x4 voxel index -> RAS+ millimetres.
        dtype: On-disk dtype; the array's own dtype when None.

    Returns:
        The written path.
    """
    path = Path(path)
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or degenerate(affine):
        raise DataError(path, f"cannot write: degenerate affine {affine.tolist()}")
    data = np.asarray(array)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(data.dtype)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def _ds(value: float) -> DSfloat:
    # DS strings are limited to 16 characters; auto_format keeps the most precision that fits.
    return DSfloat(float(value), auto_format=True)


def _stored_dtype(out_dir: Path, stored: np.ndarray) -> np.dtype:
    low, high = float(stored.min()), float(stored.max())
    if low >= 0 and high <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    if low >= np.iinfo(np.int16).min and high <= np.iinfo(np.int16).max:
        return np.dtype(np.int16)
    raise DataError(
        out_dir,
        f"values map to stored pixels {low:.0f}..{high:.0f}, outside 16 bits; change rescale_slope / rescale_intercept",
    )


def _geometry(out_dir: Path, affine_ras: np.ndarray) -> dict[str, Any]:
    """Per-series DICOM geometry from a voxel -> RAS affine (columns step i, rows step j)."""
    affine = np.asarray(affine_ras, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise DataError(out_dir, f"cannot write DICOM: affine must be a finite 4x4, got {affine.tolist()}")
    lps = _LPS_FROM_RAS @ affine
    steps = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(steps < 1e-9):
        raise DataError(out_dir, f"cannot write DICOM: zero voxel step in affine {affine.tolist()}")
    along_i, along_j = lps[:3, 0] / steps[0], lps[:3, 1] / steps[1]
    if abs(float(along_i @ along_j)) > 1e-4:
        raise DataError(out_dir, "cannot write DICOM: the i and j axes of the affine are not perpendicular")
    normal = np.cross(along_i, along_j)
    return {
        "lps": lps,
        "iop": [*along_i, *along_j],
        "pixel_spacing": [steps[1], steps[0]],  # DICOM order: between rows (j), between columns (i)
        "slice_step": abs(float(lps[:3, 2] @ normal)),
    }


def _uid(uid_seed: str | None, *parts: object) -> str:
    if uid_seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[str(uid_seed), *(str(p) for p in parts)])


def _series_header(
    modality: str,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    series_description: str,
    geometry: dict[str, Any],
    slope: float,
    intercept: float,
    unsigned: bool,
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = _SOP_CLASS[modality]
    ds.Modality = modality
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.Manufacturer = "tumorbench synthetic"
    ds.PatientID = patient_id
    ds.PatientName = f"SYNTH^{patient_id}"
    ds.PatientIdentityRemoved, ds.DeidentificationMethod = "YES", "synthetic phantom: of no person"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = _SYNTHETIC_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyID, ds.SeriesNumber, ds.AccessionNumber = "1", 1, ""
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = [_ds(v) for v in geometry["iop"]]
    ds.PixelSpacing = [_ds(v) for v in geometry["pixel_spacing"]]
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(geometry["slice_step"])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0 if unsigned else 1
    ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
    if modality == "CT":
        ds.RescaleType = "HU"
        ds.KVP = _ds(120)
        ds.WindowCenter, ds.WindowWidth = _ds(40), _ds(400)  # soft-tissue window
    else:
        ds.ScanningSequence, ds.SequenceVariant, ds.MagneticFieldStrength = "SE", "NONE", _ds(1.5)
    return ds


def write_dicom_series(
    out_dir: str | Path,
    volume: np.ndarray,
    affine_ras: np.ndarray,
    *,
    patient_id: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
    modality: str = "CT",
    series_description: str = "",
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    uid_seed: str | None = None,
) -> list[Path]:
    """Write a 3D volume as one DICOM Part 10 file per k slice (``slice_000.dcm``...).

    Slice k holds ``volume[:, :, k]`` with rows along j and columns along i, so
    :func:`tumorbench.data.dicom.read_dicom_series` returns the same array and affine,
    provided the k axis points along the slice normal (i x j in LPS); otherwise the
    reader returns the slices reversed with the equivalent flipped affine.

    Args:
        out_dir: Series folder, created if needed.
        volume: (I, J, K) values in modality units (HU for CT).
        affine_ras: Voxel index -> RAS+ mm; i and j must be perpendicular.
        patient_id: PatientID; PatientName becomes ``SYNTH^<patient_id>``.
        study_uid: StudyInstanceUID; derived from ``uid_seed`` (or random) when None.
        series_uid: SeriesInstanceUID; likewise.
        modality: ``CT`` or ``MR``.
        series_description: SeriesDescription text.
        rescale_slope: Stored pixel p means ``p * slope + intercept``.
        rescale_intercept: See ``rescale_slope``.
        uid_seed: Makes every generated UID (and so the files) deterministic.

    Returns:
        The written files, in k order.
    """
    out_dir = Path(out_dir)
    modality = modality.upper()
    if modality not in _SOP_CLASS:
        raise DataError(out_dir, f"cannot write DICOM: modality must be one of {sorted(_SOP_CLASS)}, got {modality!r}")
    volume = np.asarray(volume, dtype=np.float64)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise DataError(out_dir, f"cannot write DICOM: expected a non-empty 3D volume, got shape {volume.shape}")
    if not np.all(np.isfinite(volume)) or rescale_slope == 0:
        raise DataError(out_dir, "cannot write DICOM: volume has NaN/inf values or rescale_slope is 0")
    geometry = _geometry(out_dir, affine_ras)
    stored = np.rint((volume - rescale_intercept) / rescale_slope)
    dtype = _stored_dtype(out_dir, stored)
    stored = stored.astype(dtype)
    header = _series_header(
        modality,
        patient_id,
        study_uid or _uid(uid_seed, "study"),
        series_uid or _uid(uid_seed, "series"),
        _uid(uid_seed, "frame"),
        series_description,
        geometry,
        rescale_slope,
        rescale_intercept,
        unsigned=dtype == np.uint16,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(volume.shape[2] - 1)))
    paths = []
    for k in range(volume.shape[2]):
        paths.append(
            _write_slice(
                out_dir / f"slice_{k:0{width}d}.dcm",
                header,
                stored[:, :, k],
                k,
                geometry["lps"],
                _uid(uid_seed, "sop", header.SeriesInstanceUID, k),
            )
        )
    return paths


def _write_slice(path: Path, header: Dataset, pixels_ij: np.ndarray, k: int, lps: np.ndarray, sop_uid: str) -> Path:
    ds = Dataset()
    ds.update(header)
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    position = lps @ np.array([0.0, 0.0, float(k), 1.0])
    ds.ImagePositionPatient = [_ds(v) for v in position[:3]]
    ds.SliceLocation = _ds(position[2])
    rows_cols = np.ascontiguousarray(pixels_ij.T)  # pixel[row=j, col=i]
    ds.Rows, ds.Columns = rows_cols.shape
    ds.PixelData = rows_cols.astype(rows_cols.dtype.newbyteorder("<"), copy=False).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = header.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.preamble = b"\0" * 128
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path
