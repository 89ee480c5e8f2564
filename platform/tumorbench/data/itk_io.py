"""MetaImage (``.mha``, ``.mhd`` + data file) and NRRD (``.nrrd``, ``.nhdr`` + data file) volumes, through SimpleITK.

These are what Grand Challenge datasets (nnU-Net v2 ``file_ending: .mha``), LUNA16 (``.mhd`` + ``.raw``)
and 3D Slicer (``.nrrd``) ship. SimpleITK is the reader nnU-Net itself uses for them; it returns
LPS geometry, turned here into the RAS affine every other reader returns.

Before any voxel is read, the header is checked: a 3D (or 4D: channels last) scalar volume of at most
:data:`MAX_VOXELS` voxels, and a detached header (``.mhd``, ``.nhdr``) naming one data file beside it
(never a path elsewhere, a file list or a pattern). :func:`missing_bytes` tells a cut-short raw data
file from its header alone, for planning's checks.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from tumorbench.data.image import LPS_TO_RAS, ImageData, degenerate, orientation_codes, spacing_from_affine
from tumorbench.errors import DataError

ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
MAX_VOXELS = 2**31  # 8 GiB as float32: a header declaring more is refused before anything is allocated
HEADER_BYTES = 1 << 16  # a detached header's text is read this far, no further
# SimpleITK's real scalar pixel types (by their name there) as numpy names them; complex, label and vector are not read
_SCALARS = {"sitkUInt8": "uint8", "sitkInt8": "int8", "sitkUInt16": "uint16", "sitkInt16": "int16"}
_SCALARS |= {"sitkUInt32": "uint32", "sitkInt32": "int32", "sitkUInt64": "uint64", "sitkInt64": "int64"}
_SCALARS |= {"sitkFloat32": "float32", "sitkFloat64": "float64"}
_MHD_FIELD = re.compile(r"^\s*(\w+)\s*=\s*(.*?)\s*$")
_NRRD_FIELD = re.compile(r"^\s*([\w ]+?)\s*:=?\s*(.*?)\s*$")


def is_itk(path: Any) -> bool:
    return isinstance(path, str | Path) and str(path).lower().endswith(ITK_SUFFIXES)


def _reader(path: Path):
    import SimpleITK as sitk

    if not path.is_file():
        raise DataError(path, "file not found")
    data_file(path)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints warnings to stderr; problems raise DataError
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:  # ITK's exception text: the reader's own reason
        raise DataError(path, f"not a readable MetaImage/NRRD header ({_itk_reason(exc)})") from exc
    return reader


def _itk_reason(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if line.lower().startswith("description")), lines[-1] if lines else "")
    return detail.split(":", 1)[-1].strip()[:200] or type(exc).__name__


def header(path: str | Path) -> dict[str, Any]:
    """The checked header: ``shape`` (I, J, K[, C]), ``affine`` (RAS), ``dtype``; no voxel read."""
    return open_header(Path(path))[1]


def open_header(path: Path):
    """SimpleITK's reader with the header read and checked, and :func:`header`'s dict."""
    reader = _reader(path)
    dims = reader.GetDimension()
    if dims not in (3, 4):
        raise DataError(path, f"expected a 3D volume (4D: channels last), got {dims} dimensions")
    if reader.GetNumberOfComponents() != 1:
        raise DataError(path, f"{reader.GetNumberOfComponents()} components per voxel: only scalar volumes are read")
    dtype = _dtype(path, reader)
    shape = tuple(int(s) for s in reader.GetSize())
    if math.prod(shape) > MAX_VOXELS:
        raise DataError(path, f"header declares {shape} = {math.prod(shape):,} voxels, over {MAX_VOXELS:,}")
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(dims, dims)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(reader.GetSpacing()[:3], dtype=float)  # columns scaled by spacing
    affine[:3, 3] = reader.GetOrigin()[:3]
    affine = LPS_TO_RAS @ affine  # ITK's world is LPS, as DICOM's
    if degenerate(affine):
        raise DataError(path, f"degenerate voxel-to-world geometry {affine.round(4).tolist()}")
    return reader, {"shape": shape, "affine": affine, "dtype": dtype}


def _dtype(path: Path, reader) -> str:
    import SimpleITK as sitk

    dtype = {getattr(sitk, name): numpy for name, numpy in _SCALARS.items()}.get(reader.GetPixelID())
    if dtype is None:
        name = sitk.GetPixelIDValueAsString(reader.GetPixelID())
        raise DataError(path, f"voxel type {name}: only real scalar volumes are read")
    return dtype


def read_itk(path: str | Path, dtype: Any = np.float32) -> ImageData:
    """A MetaImage or NRRD volume as (I, J, K[, C]) voxels with its RAS affine (header checked first)."""
    import SimpleITK as sitk

    path = Path(path)
    reader, info = open_header(path)
    try:
        image = reader.Execute()
    except RuntimeError as exc:  # cut-short data, a broken zlib stream
        raise DataError(path, f"corrupt or truncated image data ({_itk_reason(exc)})") from exc
    array = sitk.GetArrayFromImage(image)  # (K, J, I) for a 3D image: ITK's index order reversed
    array = np.ascontiguousarray(array.transpose(tuple(range(array.ndim))[::-1]))
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    affine = info["affine"]
    meta = {"path": str(path), "format": "itk", "orientation": orientation_codes(affine)}
    return ImageData(array.astype(dtype, copy=False), affine, spacing_from_affine(affine), meta)


# ----------------------------------------------------------------------------- detached data and raw length


def header_fields(path: Path) -> tuple[dict[str, str], int | None]:
    """A header's fields (lower-case keys, spaces dropped) and where its data starts in the same file: None
    when the header does not end within :data:`HEADER_BYTES` (no ``ElementDataFile`` line, no NRRD blank line)."""
    with open(path, "rb") as handle:
        head = handle.read(HEADER_BYTES)
    fields: dict[str, str] = {}
    nrrd = path.suffix.lower() in (".nrrd", ".nhdr")
    offset, position = None, 0
    for line in head.split(b"\n"):
        position += len(line) + 1
        text = line.decode("latin-1").rstrip("\r")
        if nrrd and not text.strip() and fields:  # NRRD: a blank line ends the header
            offset = position
            break
        match = (_NRRD_FIELD if nrrd else _MHD_FIELD).match(text)
        if match and not text.startswith("#"):
            fields[match.group(1).strip().lower().replace(" ", "")] = match.group(2)
        if not nrrd and match and match.group(1).lower() == "elementdatafile":  # the last MetaImage field
            offset = position
            break
    return fields, offset


def data_file(path: Path) -> Path | None:
    """The data file a header names (None: its data follows it), refused unless it is one existing file beside
    the header. ITK follows any path an ``.mha`` or ``.nrrd`` names too, so every suffix is checked."""
    suffix = path.suffix.lower()
    if suffix not in ITK_SUFFIXES:
        return None
    return _named_data_file(path, header_fields(path)[0])


def _named_data_file(path: Path, fields: dict[str, str]) -> Path | None:
    suffix = path.suffix.lower()
    name = fields.get("datafile") if suffix in (".nrrd", ".nhdr") else fields.get("elementdatafile")
    if not name:
        if suffix in (".mhd", ".nhdr"):
            raise DataError(path, "its header names no data file (ElementDataFile / data file)")
        return None
    if name.upper() == "LOCAL":
        return None
    if name.upper().startswith("LIST") or "%" in name or Path(name).name != name:
        raise DataError(path, f"data file {name!r}: only one file beside the header is read (no lists or paths)")
    data = path.with_name(name)
    if not data.is_file():
        raise DataError(path, f"its data file {name} is not beside it")
    return data


def with_data_file(path: Path) -> list[Path]:
    """The file and, for a detached header (``.mhd``, ``.nhdr``), the data file it names: all its bytes."""
    data = data_file(path)
    return [path] if data is None else [path, data]


def missing_bytes(path: str | Path, info: dict[str, Any]) -> int:
    """How many bytes of uncompressed voxel data the file (or its data file) lacks; 0 when whole or compressed."""
    path = Path(path)
    fields, offset = header_fields(path)
    compressed = fields.get("compresseddata", "false").lower() == "true" or fields.get("encoding", "raw") != "raw"
    if compressed or offset is None:  # a compressed stream's length says nothing: the loader reads it
        return 0
    data = _named_data_file(path, fields)
    held = data.stat().st_size if data is not None else path.stat().st_size - offset
    expected = math.prod(info["shape"]) * np.dtype(info["dtype"]).itemsize
    return max(0, expected - held)
