"""Untrusted image files (HTTP uploads): sniff the format, check declared sizes, unpack zips safely, read.

Formats are recognised by their bytes, never by the client's file name: PNG / JPEG /
TIFF / BMP, NIfTI-1/2 (``.nii`` or gzipped), a single DICOM file, or a zip holding
one DICOM series or several NIfTI volumes (one per channel, BraTS naming, or one
4D volume). Declared sizes (image header, NIfTI header, DICOM rows x columns,
zip member sizes) are checked *before* any pixel is decoded, so a small file that
declares an enormous image is refused without allocating it.
"""

from __future__ import annotations

import re
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image

from tumorbench.data.catalog import BRATS_CHANNELS
from tumorbench.data.io import ImageData, read_image
from tumorbench.errors import DataError

# Suffix the readers in tumorbench.data.io dispatch on, per sniffed format.
SUFFIXES = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "bmp": ".bmp", "nifti": ".nii", "nifti-gz": ".nii.gz",
            "dicom": ".dcm", "zip": ".zip"}
_BRATS_SUFFIXES = {"t1": ("t1", "t1n"), "t1ce": ("t1ce", "t1c"), "t2": ("t2", "t2w"), "flair": ("flair", "t2f")}
_AFFINE_TOLERANCE_MM = 1e-2  # as LoadCased: channels of one case must share their grid


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


def read_upload(path: str | Path, limits: UploadLimits = UploadLimits(), *, label: str | None = None) -> ImageData:
    """Read an untrusted file after checking its format and declared size.

    Args:
        path: The file (any name; the format is sniffed).
        limits: Size limits.
        label: Name used in error messages instead of the (temporary) path.

    Raises:
        UploadError: 415 unknown format, 413 declared size over the limits, 422 unreadable,
            truncated or non-finite data.
    """
    path = Path(path)
    label = label or path.name
    kind = sniff_format(path)
    if kind is None:
        raise UploadError(label, "unsupported or unrecognised file format (expected PNG, JPEG, TIFF, BMP, NIfTI, "
                                 "DICOM or a zip of a DICOM series / NIfTI volumes)", 415)
    with tempfile.TemporaryDirectory(prefix="tumorbench-read-") as tmp:
        work = Path(tmp)
        try:
            if kind == "zip":
                image = _read_zip(path, work / "unpacked", limits, label)
            else:
                typed = work / f"upload{SUFFIXES[kind]}"  # read_image picks its reader by suffix
                typed.symlink_to(path.resolve())
                _check_declared_size(typed, kind, limits, label)
                image = read_image(typed)
        except UploadError:
            raise
        except DataError as exc:
            raise UploadError(label, _relabel(exc.problem, work, path, label), 422) from exc
    return _checked(image, label)


def _relabel(problem: str, work: Path, path: Path, label: str) -> str:
    # Messages from the readers name temporary files; show the upload's name instead.
    for name in (str(work), str(path.resolve()), str(path)):
        problem = re.sub(re.escape(name) + r"[^\s:,)]*", label, problem)
    return problem


def _checked(image: ImageData, label: str) -> ImageData:
    if image.array.size == 0:
        raise UploadError(label, f"empty image (shape {image.array.shape})", 422)
    bad = int(np.size(image.array) - np.count_nonzero(np.isfinite(image.array)))
    if bad:
        raise UploadError(label, f"{bad} pixel values are NaN or infinite", 422)
    return ImageData(image.array, image.affine, image.spacing, {**image.meta, "path": label})


def _too_big(label: str, what: str, count: int, limit: int) -> UploadError:
    return UploadError(label, f"declares {what} = {count:,} values, over the limit of {limit:,}", 413)


def _check_declared_size(path: Path, kind: str, limits: UploadLimits, label: str) -> int:
    """Values the file declares (from its header only); raises 413 over the limit."""
    if kind in ("png", "jpeg", "tiff", "bmp"):
        try:
            with Image.open(path) as img:
                count = img.size[0] * img.size[1] * getattr(img, "n_frames", 1)
        except Image.DecompressionBombError as exc:
            raise UploadError(label, f"decompression bomb: {exc}", 413) from exc
        except Exception as exc:  # PIL raises many types for a bad header
            raise UploadError(label, f"unreadable image header ({type(exc).__name__}: {exc})", 422) from exc
        if count > limits.max_pixels:
            raise _too_big(label, "width x height", count, limits.max_pixels)
        return count
    if kind in ("nifti", "nifti-gz"):
        try:
            shape = nib.load(path).shape  # header only; voxels stay on disk
        except Exception as exc:
            raise UploadError(label, f"unreadable NIfTI header ({type(exc).__name__}: {exc})", 422) from exc
        count = int(np.prod(shape, dtype=object))
        if count > limits.max_voxels:
            raise _too_big(label, f"shape {tuple(shape)}", count, limits.max_voxels)
        return count
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        count = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("SamplesPerPixel", 1))
    except Exception as exc:
        raise UploadError(label, f"unreadable DICOM header ({type(exc).__name__}: {exc})", 422) from exc
    if count > limits.max_voxels:
        raise _too_big(label, "rows x columns x frames", count, limits.max_voxels)
    return count


def _safe_members(archive: zipfile.ZipFile, limits: UploadLimits, label: str) -> list[zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise UploadError(label, f"zip holds {len(infos)} members, over the limit of {limits.max_files}", 413)
    members = []
    for info in infos:
        name = PurePosixPath(info.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or re.match(r"^[A-Za-z]:", info.filename):
            raise UploadError(label, f"zip member {info.filename!r} points outside the archive", 422)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadError(label, f"zip member {info.filename!r} is a symbolic link", 422)
        if info.is_dir() or name.parts[0] == "__MACOSX" or name.name.startswith("."):
            continue
        members.append(info)
    declared = sum(info.file_size for info in members)
    if declared > limits.max_unpacked_bytes:
        raise _too_big(label, "unpacked bytes", declared, limits.max_unpacked_bytes)
    if not members:
        raise UploadError(label, "zip holds no files", 422)
    return members


def _unpack(path: Path, work: Path, limits: UploadLimits, label: str) -> list[Path]:
    """Extract every member under ``work`` as a flat numbered file, counting the real bytes."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(label, f"corrupt or truncated zip ({exc})", 422) from exc
    work.mkdir()
    written, files = 0, []
    with archive:
        for n, info in enumerate(_safe_members(archive, limits, label)):
            target = work / f"{n:05d}_{re.sub(r'[^A-Za-z0-9._-]', '_', PurePosixPath(info.filename).name)}"
            try:
                with archive.open(info) as source, open(target, "wb") as sink:
                    while chunk := source.read(1 << 20):
                        written += len(chunk)  # declared sizes can lie: count what comes out
                        if written > limits.max_unpacked_bytes:
                            raise _too_big(label, "unpacked bytes", written, limits.max_unpacked_bytes)
                        sink.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise UploadError(label, f"corrupt zip member {info.filename!r} ({exc})", 422) from exc
            files.append(target)
    return files


def _read_zip(path: Path, work: Path, limits: UploadLimits, label: str) -> ImageData:
    files = _unpack(path, work, limits, label)
    kinds = {file: sniff_format(file) for file in files}
    if all(kind == "dicom" for kind in kinds.values()):
        count = sum(_check_declared_size(file, "dicom", limits, label) for file in files)
        if count > limits.max_voxels:
            raise _too_big(label, "rows x columns x slices", count, limits.max_voxels)
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
            raise UploadError(label, f"cannot order {len(files)} NIfTI files as channels: name them *_t1, *_t1ce, "
                                     f"*_t2, *_flair (or BraTS 2023 -t1n -t1c -t2w -t2f), or upload one 4D NIfTI", 422)
        order.append(matches[0])
    if len(order) != len(files):
        raise UploadError(label, f"zip holds {len(files)} NIfTI files, expected the 4 BraTS modalities", 422)
    return order


def _stack_nifti(files: list[Path], kinds: dict, limits: UploadLimits, label: str) -> ImageData:
    files = [file.rename(file.with_name(file.name + SUFFIXES[kinds[file]])) if not file.name.lower().endswith(
        (".nii", ".nii.gz")) else file for file in files]
    files = _channel_order(files, label)
    count = sum(_check_declared_size(file, "nifti", limits, label) for file in files)
    if count > limits.max_voxels:
        raise _too_big(label, "voxels x channels", count, limits.max_voxels)
    volumes = [read_image(file) for file in files]
    first = volumes[0]
    for file, volume in zip(files[1:], volumes[1:]):
        if volume.array.shape != first.array.shape or not np.allclose(volume.affine, first.affine,
                                                                       atol=_AFFINE_TOLERANCE_MM):
            raise UploadError(label, f"{file.name[6:]} does not share the voxel grid of {files[0].name[6:]}", 422)
    array = first.array if len(volumes) == 1 else np.stack([v.array for v in volumes], axis=-1)
    return ImageData(array, first.affine, first.spacing, {**first.meta, "channels": len(volumes)})
