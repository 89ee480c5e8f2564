"""Untrusted image files (HTTP uploads): sniff the format, check declared sizes, unpack zips safely, read.

Formats are recognised by their bytes, never by the client's file name: PNG / JPEG /
TIFF / BMP, NIfTI-1/2 (``.nii`` or gzipped), a single DICOM file, or a zip holding
one DICOM series or several NIfTI volumes (one per channel, BraTS naming, or one
4D volume). Declared sizes (image header, NIfTI header, DICOM rows x columns,
zip member sizes) are checked *before* any pixel is decoded, so a small file that
declares an enormous image is refused without allocating it. The work per upload is
bounded before decoding too: Deflated DICOM (inflated before any header could be
checked) is refused, DICOM pixel data must be exactly as long as the header declares,
multi-frame images are found with one ``seek(1)``, and malformed geometry (zero or
non-finite spacing, degenerate affines, RGB or complex NIfTI voxels) is refused with a
clear message. Messages never carry file names, UIDs or other tag values of the upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import stat
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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

from tumorbench.data.catalog import BRATS_CHANNELS
from tumorbench.data.io import ImageData, has_second_frame, read_image
from tumorbench.errors import DataError

# Suffix the readers in tumorbench.data.io dispatch on, per sniffed format.
SUFFIXES = {
    "png": ".png",
    "jpeg": ".jpg",
    "tiff": ".tif",
    "bmp": ".bmp",
    "nifti": ".nii",
    "nifti-gz": ".nii.gz",
    "dicom": ".dcm",
    "zip": ".zip",
}
_BRATS_SUFFIXES = {"t1": ("t1", "t1n"), "t1ce": ("t1ce", "t1c"), "t2": ("t2", "t2w"), "flair": ("flair", "t2f")}
_AFFINE_TOLERANCE_MM = 1e-2  # as LoadCased: channels of one case must share their grid
_PIXEL_TAGS = {"PixelData": None, "FloatPixelData": 32, "DoubleFloatPixelData": 64}  # tag -> forced bits
_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")  # DICOM UIDs: digits and 4+ dots; spacings and sizes have fewer
_MODALITY_NAME = re.compile(r"[_-](t1|t1ce|t1n|t1c|t2|t2w|flair|t2f)(\.nii(?:\.gz)?)$", re.IGNORECASE)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class UploadError(DataError):
    """An upload that cannot be used; ``status`` is the HTTP status it deserves (413, 415, 422)."""

    def __init__(self, path: str | Path, problem: str, status: int = 422) -> None:
        super().__init__(path, problem)
        self.status = status

    def __reduce__(self):
        return type(self), (self.path, self.problem, self.status)


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may declare or unpack to.

    Args:
        max_pixels: Width x height (x frames) of a 2D image.
        max_voxels: Voxels x channels of a volume (a NIfTI header, a DICOM series, zipped volumes).
        max_files: Members of a zip.
        max_unpacked_bytes: Total unpacked size of a zip.
    """

    max_pixels: int = 40_000_000
    max_voxels: int = 128 * 1024**2
    max_files: int = 2048
    max_unpacked_bytes: int = 1024**3

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_voxels", "max_files", "max_unpacked_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class _DropAndCount(logging.Filter):
    """Drops pydicom's log records (they quote raw tag values: a malformed UID, a name) and counts them."""

    count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        type(self).count += 1
        return False


def quiet_pydicom() -> int:
    """Silence pydicom's warnings and log records in this process; returns how many were dropped so far.

    pydicom reports invalid values as ``"Invalid value for VR UI: '<the value>'"``, both through
    ``warnings`` and its logger, so an upload's tag values would reach the server log. Called by
    :func:`read_upload`; the count is what a server may report instead.
    """
    pydicom_logger = logging.getLogger("pydicom")
    if not any(isinstance(f, _DropAndCount) for f in pydicom_logger.filters):
        pydicom_logger.addFilter(_DropAndCount())
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")  # again each time: catch_warnings resets filters
    return _DropAndCount.count


def sniff_format(path: str | Path) -> str | None:
    """The format of a file from its first bytes (a key of :data:`SUFFIXES`), or None."""
    with open(path, "rb") as handle:
        head = handle.read(544)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x1f\x8b"):
        with open(path, "rb") as handle:
            compressed = handle.read(64 * 1024)
        try:  # a cut-off stream still yields its first bytes; the reader reports the truncation
            inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(compressed, 544)
        except zlib.error:
            return None
        return "nifti-gz" if _is_nifti_header(inner) else None
    return "nifti" if _is_nifti_header(head) else None


def _is_nifti_header(head: bytes) -> bool:
    size = [int.from_bytes(head[:4], order) for order in ("little", "big")] if len(head) >= 4 else []
    if len(head) < 348:  # truncated: the header size field is all there is to go on
        return 348 in size or 540 in size
    return (348 in size and head[344:347] in (b"n+1", b"ni1")) or (540 in size and head[4:7] in (b"n+2", b"ni2"))


def typed_upload(path: Path) -> Path:
    """Rename an upload to carry its sniffed format's suffix (``read_upload`` then reads it in place).

    Returns the new path (unchanged for a zip, an unknown format or a name that has the suffix).
    """
    kind = sniff_format(path)
    if kind is None or kind == "zip" or path.name.lower().endswith(SUFFIXES[kind]):
        return path
    return path.rename(path.with_name(path.name + SUFFIXES[kind]))


def read_upload(path: str | Path, limits: UploadLimits = UploadLimits(), *, label: str | None = None) -> ImageData:
    """Read an untrusted file after checking its format, declared size and geometry.

    Args:
        path: The file (any name; the format is sniffed).
        limits: Size limits.
        label: Name used in error messages instead of the (temporary) path.

    Raises:
        UploadError: 415 unknown or refused format, 413 declared size over the limits, 422 unreadable,
            truncated, inconsistent or non-finite data. Messages name the upload by ``label`` only.
    """
    path = Path(path)
    label = label or path.name
    quiet_pydicom()
    kind = sniff_format(path)
    if kind is None:
        raise UploadError(
            label,
            "unsupported or unrecognised file format (expected PNG, JPEG, TIFF, BMP, NIfTI, "
            "DICOM or a zip of a DICOM series / NIfTI volumes)",
            415,
        )
    uids: set[str] = set()  # DICOM UIDs seen: hashed out of any message
    with contextlib.ExitStack() as stack:
        named = [path.resolve(), path]  # paths the readers' messages may quote: shown as the label
        try:
            if kind == "zip":
                work = _scratch(stack, named)
                image = _read_zip(path, work / "unpacked", limits, label, uids)
            else:
                typed = path  # read_image picks its reader by suffix: a typed link when the name has none
                if not path.name.lower().endswith(SUFFIXES[kind]):
                    typed = _scratch(stack, named) / f"upload{SUFFIXES[kind]}"
                    typed.symlink_to(path.resolve())
                _check_declared_size(typed, kind, limits, label, uids)
                image = read_image(typed)
        except UploadError as exc:
            raise UploadError(label, scrub(exc.problem, uids), exc.status) from exc
        except DataError as exc:
            raise UploadError(label, scrub(_relabel(exc.problem, named, label), uids), 422) from exc
        except (ValueError, TypeError, ArithmeticError, np.linalg.LinAlgError) as exc:
            # A value the checks above do not cover; its text may quote tag values, so only its type is shown.
            raise UploadError(label, f"malformed {kind} file ({type(exc).__name__})", 422) from exc
    return _checked(image, label)


def scrub(text: str, uids: set[str] = frozenset()) -> str:
    """``text`` without DICOM UIDs (known ones become a short hash) or quoted values."""
    for uid in sorted(uids, key=len, reverse=True):
        text = text.replace(uid, "uid#" + hashlib.sha256(uid.encode()).hexdigest()[:8])
    return _QUOTED.sub("'…'", _UID.sub("<uid>", text))


def _scratch(stack: contextlib.ExitStack, named: list[Path]) -> Path:
    """A temporary folder removed when ``stack`` closes (and named in messages as the upload)."""
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tumorbench-read-")))
    named.insert(0, work)
    return work


def _relabel(problem: str, named: list[Path], label: str) -> str:
    # Messages from the readers name temporary files; show the upload's name instead.
    for name in map(str, named):
        problem = re.sub(re.escape(name) + r"[^\s:,)]*", label, problem)
    return problem


def _checked(image: ImageData, label: str) -> ImageData:
    if image.array.size == 0:
        raise UploadError(label, f"empty image (shape {image.array.shape})", 422)
    if not np.all(np.isfinite(image.affine)) or not all(math.isfinite(s) and s > 0 for s in image.spacing):
        raise UploadError(label, "voxel spacing or orientation is zero or not finite", 422)
    bad = int(np.size(image.array) - np.count_nonzero(np.isfinite(image.array)))
    if bad:
        raise UploadError(label, f"{bad} pixel values are NaN or infinite", 422)
    return ImageData(image.array, image.affine, image.spacing, {**image.meta, "path": label})


def _too_big(label: str, what: str, count: int, limit: int) -> UploadError:
    return UploadError(label, f"declares {what} = {count:,} values, over the limit of {limit:,}", 413)


def _check_declared_size(path: Path, kind: str, limits: UploadLimits, label: str, uids: set[str]) -> int:
    """Values the file declares (from its header only); raises 413 over the limit, 415/422 when malformed."""
    if kind in ("png", "jpeg", "tiff", "bmp"):
        return _check_image(path, limits, label)
    if kind in ("nifti", "nifti-gz"):
        return _check_nifti(path, limits, label)
    return _check_dicom(path, limits, label, uids)[0]


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
        raise _too_big(label, f"width x height x channels ({width} x {height} x {channels})", count, limits.max_pixels)
    return count


def _check_nifti(path: Path, limits: UploadLimits, label: str) -> int:
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
        raise _too_big(label, f"shape {tuple(shape)}", count, limits.max_voxels)
    if not all(math.isfinite(z) and z > 0 for z in zooms):
        raise UploadError(label, f"NIfTI voxel sizes (pixdim) {zooms} must be finite and positive", 422)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise UploadError(label, "NIfTI voxel-to-world affine is degenerate or not finite", 422)
    return count


def _check_dicom(path: Path, limits: UploadLimits, label: str, uids: set[str]) -> tuple[int, str | None]:
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
        raise _too_big(label, "rows x columns x frames x samples", count, limits.max_voxels)
    if frames != 1 or samples != 1:
        raise UploadError(
            label,
            f"only single-frame greyscale DICOM slices are supported (the header declares "
            f"{frames} frame(s) of {samples} sample(s) per pixel)",
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


def _safe_members(archive: zipfile.ZipFile, limits: UploadLimits, label: str) -> list[zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise UploadError(label, f"zip holds {len(infos)} members, over the limit of {limits.max_files}", 413)
    members = []
    for n, info in enumerate(infos, 1):  # members by number: their names may carry patient names
        name = PurePosixPath(info.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or re.match(r"^[A-Za-z]:", info.filename):
            raise UploadError(label, f"zip member #{n} points outside the archive", 422)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadError(label, f"zip member #{n} is a symbolic link", 422)
        if info.is_dir() or name.parts[0] == "__MACOSX" or name.name.startswith("."):
            continue
        members.append(info)
    declared = sum(info.file_size for info in members)
    if declared > limits.max_unpacked_bytes:
        raise _too_big(label, "unpacked bytes", declared, limits.max_unpacked_bytes)
    if not members:
        raise UploadError(label, "zip holds no files", 422)
    return members


def _member_name(n: int, filename: str) -> str:
    """A numbered name keeping only a BraTS modality suffix (``00003_t1ce.nii.gz``), never the client's name."""
    found = _MODALITY_NAME.search(filename)
    return f"{n:05d}_{found.group(1).lower()}{found.group(2).lower()}" if found else f"{n:05d}"


def _unpack(path: Path, work: Path, limits: UploadLimits, label: str) -> list[Path]:
    """Extract every member under ``work`` as a flat numbered file, counting the real bytes."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(label, f"corrupt or truncated zip ({type(exc).__name__})", 422) from exc
    work.mkdir()
    written, files = 0, []
    with archive:
        for n, info in enumerate(_safe_members(archive, limits, label)):
            target = work / _member_name(n, info.filename)
            try:
                with archive.open(info) as source, open(target, "wb") as sink:
                    while chunk := source.read(1 << 20):
                        written += len(chunk)  # declared sizes can lie: count what comes out
                        if written > limits.max_unpacked_bytes:
                            raise _too_big(label, "unpacked bytes", written, limits.max_unpacked_bytes)
                        sink.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
                raise UploadError(label, f"corrupt zip member #{n + 1} ({type(exc).__name__})", 422) from exc
            files.append(target)
    return files


def _read_zip(path: Path, work: Path, limits: UploadLimits, label: str, uids: set[str]) -> ImageData:
    files = _unpack(path, work, limits, label)
    kinds = {file: sniff_format(file) for file in files}
    if all(kind == "dicom" for kind in kinds.values()):
        checked = [_check_dicom(file, limits, label, uids) for file in files]
        count = sum(values for values, _ in checked)
        if count > limits.max_voxels:
            raise _too_big(label, "rows x columns x slices", count, limits.max_voxels)
        sizes: dict[str, int] = {}
        for _, series in checked:
            if series:
                sizes[series] = sizes.get(series, 0) + 1
        if len(sizes) > 1:
            raise UploadError(
                label,
                f"zip holds {len(sizes)} DICOM series ({', '.join(map(str, sizes.values()))} files): upload one series",
                422,
            )
        return read_image(work)
    if all(kind in ("nifti", "nifti-gz") for kind in kinds.values()):
        return _stack_nifti(files, kinds, limits, label)
    found = sorted({str(kind) for kind in kinds.values()})
    raise UploadError(label, f"a zip must hold one DICOM series or NIfTI volumes only; found {', '.join(found)}", 415)


def _channel_order(files: list[Path], label: str) -> list[Path]:
    """Order per-modality NIfTI files as BraTS channels (t1, t1ce, t2, flair)."""
    if len(files) == 1:
        return files
    order = []
    for channel in BRATS_CHANNELS:
        pattern = re.compile(rf"[_-]({'|'.join(_BRATS_SUFFIXES[channel])})\.nii(\.gz)?$", re.IGNORECASE)
        matches = [file for file in files if pattern.search(file.name)]
        if len(matches) != 1:
            raise UploadError(
                label,
                f"cannot order {len(files)} NIfTI files as channels: name them *_t1, *_t1ce, "
                f"*_t2, *_flair (or BraTS 2023 -t1n -t1c -t2w -t2f), or upload one 4D NIfTI",
                422,
            )
        order.append(matches[0])
    if len(order) != len(files):
        raise UploadError(label, f"zip holds {len(files)} NIfTI files, expected the 4 BraTS modalities", 422)
    return order


def _stack_nifti(files: list[Path], kinds: dict, limits: UploadLimits, label: str) -> ImageData:
    files = [
        file.rename(file.with_name(file.name + SUFFIXES[kinds[file]]))
        if not file.name.lower().endswith((".nii", ".nii.gz"))
        else file
        for file in files
    ]
    files = _channel_order(files, label)
    count = sum(_check_nifti(file, limits, label) for file in files)
    if count > limits.max_voxels:
        raise _too_big(label, "voxels x channels", count, limits.max_voxels)
    volumes = [read_image(file) for file in files]
    first = volumes[0]
    for file, volume in zip(files[1:], volumes[1:]):
        if volume.array.shape != first.array.shape or not np.allclose(
            volume.affine, first.affine, atol=_AFFINE_TOLERANCE_MM
        ):
            raise UploadError(label, f"{file.name[6:]} does not share the voxel grid of {files[0].name[6:]}", 422)
    array = first.array if len(volumes) == 1 else np.stack([v.array for v in volumes], axis=-1)
    return ImageData(array, first.affine, first.spacing, {**first.meta, "channels": len(volumes)})
