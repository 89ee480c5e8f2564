"""Declared sizes and geometry of one upload, from its header only: checked before any pixel is decoded."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.filereader import read_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    UncompressedTransferSyntaxes,
)

from tumorbench.data import itk_io
from tumorbench.data.image import degenerate
from tumorbench.data.io import has_second_frame
from tumorbench.uploads.formats import UploadError, UploadLimits, too_big

_PIXEL_TAGS = {"PixelData": None, "FloatPixelData": 32, "DoubleFloatPixelData": 64}  # tag -> forced bits
MAX_FRAMES = 4096  # an enhanced volume's frames (whole-body thin-slice CT ~2,000; tomosynthesis ~100)


def check_declared_size(path: Path, kind: str, limits: UploadLimits, label: str, uids: set[str]) -> int:
    """Values the file declares (from its header only); raises 413 over the limit, 415/422 when malformed."""
    if kind in ("png", "jpeg", "tiff", "bmp"):
        return _check_image(path, limits, label)
    if kind in ("nifti", "nifti-gz"):
        return check_nifti(path, limits, label)
    if kind in ("metaimage", "nrrd"):
        return check_itk(path, kind, limits, label)
    return check_dicom(path, limits, label, uids)[0]


def check_itk(path: Path, kind: str, limits: UploadLimits, label: str) -> int:
    """A MetaImage or NRRD upload: a header that ends, data in the same file, sizes within the limits.

    Checked from the header text before SimpleITK reads it (a forged ``CompressedDataSize`` would be allocated
    as declared); compressed data inflates into the buffer the checked ``DimSize`` declares, no further.
    """
    fields, offset = itk_io.header_fields(path)
    if offset is None:
        raise UploadError(label, f"{kind} header does not end within its first {itk_io.HEADER_BYTES:,} bytes", 422)
    detached = fields.get("elementdatafile", "").upper() != "LOCAL" if kind == "metaimage" else "datafile" in fields
    if detached:
        raise UploadError(label, f"a {kind} header whose data is in another file: upload one file holding both", 415)
    declared = fields.get("compresseddatasize")
    if declared is not None and not (declared.isdigit() and int(declared) <= path.stat().st_size - offset):
        raise UploadError(label, "CompressedDataSize is not a byte count within the file", 422)
    sizes = fields.get("dimsize" if kind == "metaimage" else "sizes", "")
    if not sizes.split() or not all(v.isdigit() for v in sizes.split()):
        raise UploadError(label, f"{kind} header's sizes are not whole numbers", 422)
    shape = tuple(int(v) for v in sizes.split())
    if (count := math.prod(shape)) > limits.max_voxels:
        raise too_big(label, f"shape {shape}", count, limits.max_voxels)
    itk_io.header(path)  # SimpleITK's own reading of it: dimensions, voxel type, geometry
    return count


def _check_image(path: Path, limits: UploadLimits, label: str) -> int:
    try:
        with Image.open(path) as img:
            (width, height), mode, bands = img.size, img.mode, len(img.getbands())
            multi_frame = has_second_frame(img)
    except Image.DecompressionBombError as exc:
        raise UploadError(label, f"decompression bomb: {exc}", 413) from exc
    except Exception as exc:  # PIL raises many types for a bad header
        raise UploadError(label, f"unreadable image header ({type(exc).__name__}: {exc})", 422) from exc
    if multi_frame:
        raise UploadError(label, "multi-frame image (2 or more frames) is not supported: upload one frame", 422)
    grey = mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;")
    channels = max(bands, 1 if grey else 3)  # palette and other modes decode to RGB
    count = width * height * channels
    if count > limits.max_pixels:
        raise too_big(label, f"width x height x channels ({width} x {height} x {channels})", count, limits.max_pixels)
    return count


def check_nifti(path: Path, limits: UploadLimits, label: str) -> int:
    try:
        img = nib.load(path)  # header only; voxels stay on disk
        shape, dtype, affine = img.shape, img.get_data_dtype(), np.asarray(img.affine, dtype=float)
        zooms = [float(z) for z in img.header.get_zooms()[:3]]
    except Exception as exc:
        raise UploadError(label, f"unreadable NIfTI header ({type(exc).__name__}: {exc})", 422) from exc
    if dtype.fields is not None or dtype.kind not in "biuf":
        name = img.header.get_value_label("datatype") if hasattr(img.header, "get_value_label") else str(dtype)
        raise UploadError(
            label,
            f"NIfTI voxel type {name} is not supported: store real integer or float values "
            f"(colour or modalities as a 4th axis)",
            415,
        )
    count = int(np.prod(shape, dtype=object))
    if count > limits.max_voxels:
        raise too_big(label, f"shape {tuple(shape)}", count, limits.max_voxels)
    if not all(math.isfinite(z) and z > 0 for z in zooms):
        raise UploadError(label, f"NIfTI voxel sizes (pixdim) {zooms} must be finite and positive", 422)
    if degenerate(affine):
        raise UploadError(label, "NIfTI voxel-to-world affine is degenerate or not finite", 422)
    return count


def check_dicom(path: Path, limits: UploadLimits, label: str, uids: set[str]) -> tuple[int, str | None]:
    """(values, SeriesInstanceUID) of one DICOM file, checked before its pixel data is decoded."""
    try:
        meta = read_file_meta_info(path)  # group 0002 only: nothing inflated yet
    except Exception as exc:
        raise UploadError(label, f"unreadable DICOM file meta ({type(exc).__name__})", 422) from exc
    if meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
        return 0, None  # a DICOMDIR index beside the series; the reader skips it
    syntax = meta.get("TransferSyntaxUID")
    if syntax == DeflatedExplicitVRLittleEndian:  # inflated whole before any size could be checked
        raise UploadError(
            label,
            "Deflated Explicit VR Little Endian DICOM is not accepted: send the file "
            "uncompressed (or JPEG / RLE encapsulated)",
            415,
        )
    if syntax is None:
        raise UploadError(label, "DICOM file meta has no TransferSyntaxUID", 422)
    try:
        ds = pydicom.dcmread(path, defer_size=4096)  # large elements (the pixels) are not read
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1) or 1)
        pixel_tag = next((tag for tag in _PIXEL_TAGS if tag in ds), None)
        bits = _PIXEL_TAGS.get(pixel_tag) or int(ds.get("BitsAllocated", 0) or 0)
        length = ds.get_item(pixel_tag, keep_deferred=True).length if pixel_tag else 0
        series = str(ds.get("SeriesInstanceUID", "") or "") or None
    except Exception as exc:  # its text may quote tag values: the type only
        raise UploadError(label, f"unreadable DICOM header ({type(exc).__name__})", 422) from exc
    if series:
        uids.add(series)
    count = rows * columns * frames * samples
    if min(rows, columns, frames, samples) < 1:
        raise UploadError(
            label, f"DICOM header declares {rows} x {columns} pixels x {frames} frame(s) x {samples} sample(s)", 422
        )
    if count > limits.max_voxels:
        raise too_big(label, "rows x columns x frames x samples", count, limits.max_voxels)
    # An enhanced multi-frame object (Enhanced CT / MR, tomosynthesis) is one volume whose frames carry their
    # positions: read whole (data.dicom_multiframe), bounded by max_voxels above. Cine loops have no such groups.
    volume = frames > 1 and samples == 1 and "PerFrameFunctionalGroupsSequence" in ds
    if volume and frames > MAX_FRAMES:  # each frame's functional groups are parsed and sorted in Python
        raise too_big(label, "frames of a multi-frame DICOM", frames, MAX_FRAMES)
    if (frames != 1 and not volume) or samples not in (1, 3):  # colour (3) only for planar images
        raise UploadError(
            label,
            f"only single-frame greyscale or RGB DICOM images and enhanced multi-frame volumes are supported "
            f"(the header declares {frames} frame(s) of {samples} sample(s) per pixel)",
            422,
        )
    if pixel_tag is None or bits not in (1, 8, 16, 32, 64):
        raise UploadError(label, "DICOM file has no pixel data or an unsupported BitsAllocated", 422)
    expected = math.ceil(count * bits / 8)
    if syntax in UncompressedTransferSyntaxes and not expected <= length <= expected + 1:  # +1: even-length pad
        raise UploadError(
            label,
            f"DICOM pixel data holds {length:,} bytes but the header declares {rows} x {columns} "
            f"x {frames} frame(s) x {samples} sample(s) x {bits} bits = {expected:,} bytes",
            422,
        )
    _check_dicom_geometry(ds, label)
    return count, series


def _dicom_numbers(ds: pydicom.Dataset, keyword: str) -> list[float] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return [float(v) for v in (value if isinstance(value, (MultiValue, list, tuple)) else [value])]


def _check_dicom_geometry(ds: pydicom.Dataset, label: str) -> None:
    """Spacing, position and rescale values that are present must be finite (spacings positive)."""
    for keyword, positive in (
        ("PixelSpacing", True),
        ("ImagePositionPatient", False),
        ("ImageOrientationPatient", False),
        ("SliceThickness", False),
        ("SpacingBetweenSlices", False),
        ("RescaleSlope", False),
        ("RescaleIntercept", False),
    ):
        try:
            values = _dicom_numbers(ds, keyword)
        except (TypeError, ValueError):
            raise UploadError(label, f"DICOM {keyword} is not a number", 422) from None
        if values is None:
            continue
        if not all(math.isfinite(v) for v in values) or (positive and not all(v > 0 for v in values)):
            need = "finite and positive" if positive else "finite"
            raise UploadError(label, f"DICOM {keyword} must be {need}", 422)
