"""What an upload is and may be: its sniffed format, the limits it is held to, and the error it gets."""

from __future__ import annotations

import logging
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

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
    "metaimage": ".mha",
    "nrrd": ".nrrd",
}


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


def too_big(label: str, what: str, count: int, limit: int) -> UploadError:
    return UploadError(label, f"declares {what} = {count:,} values, over the limit of {limit:,}", 413)


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
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if head.lstrip().startswith((b"ObjectType", b"NDims")):  # MetaImage's text header (ITK writes ObjectType first)
        return "metaimage"
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
