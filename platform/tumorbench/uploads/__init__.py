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
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tumorbench.data.dicom_masks import mask_modality
from tumorbench.data.io import ImageData, read_image
from tumorbench.errors import DataError
from tumorbench.uploads.formats import SUFFIXES, UploadError, UploadLimits, quiet_pydicom, sniff_format
from tumorbench.uploads.headers import check_declared_size
from tumorbench.uploads.zipped import read_zip, unpack

__all__ = [
    "SUFFIXES",
    "UploadError",
    "UploadLimits",
    "quiet_pydicom",
    "read_upload",
    "scrub",
    "sniff_format",
    "typed_upload",
    "unpack",
]
_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")  # DICOM UIDs: digits and 4+ dots; spacings and sizes have fewer
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def typed_upload(path: Path) -> Path:
    """Rename an upload to carry its sniffed format's suffix (``read_upload`` then reads it in place).

    Returns the new path (unchanged for a zip, an unknown format or a name that has the suffix).
    """
    kind = sniff_format(path)
    if kind is None or kind == "zip" or path.name.lower().endswith(SUFFIXES[kind]):
        return path
    return path.rename(path.with_name(path.name + SUFFIXES[kind]))


def read_upload(
    path: str | Path, limits: UploadLimits = UploadLimits(), *, label: str | None = None, dtype: Any = np.float32
) -> ImageData:
    """Read an untrusted file after checking its format, declared size and geometry.

    Args:
        path: The file (any name; the format is sniffed).
        limits: Size limits.
        label: Name used in error messages instead of the (temporary) path.
        dtype: As :func:`tumorbench.data.io.read_image`: ``None`` keeps 8-bit images ``uint8`` (the serving
            fast path ships them so; a float copy cost 9% of the ingress's CPU).

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
            "unsupported or unrecognised file format (expected PNG, JPEG, TIFF, BMP, NIfTI, MetaImage (.mha), "
            "NRRD, DICOM or a zip of a DICOM series / NIfTI volumes)",
            415,
        )
    uids: set[str] = set()  # DICOM UIDs seen: hashed out of any message
    with contextlib.ExitStack() as stack:
        named = [path.resolve(), path]  # paths the readers' messages may quote: shown as the label
        try:
            if kind == "zip":
                work = _scratch(stack, named)
                image = read_zip(path, work / "unpacked", limits, label, uids)
            else:
                typed = path  # read_image picks its reader by suffix: a typed link when the name has none
                if not path.name.lower().endswith(SUFFIXES[kind]):
                    typed = _scratch(stack, named) / f"upload{SUFFIXES[kind]}"
                    typed.symlink_to(path.resolve())
                check_declared_size(typed, kind, limits, label, uids)  # refuses a Deflated file before any read
                if kind == "dicom" and (outline := mask_modality(typed)):  # it would be read at a series beside it
                    raise UploadError(
                        label, f"a DICOM {outline} object outlines a series and holds no image: upload the series", 415
                    )
                image = read_image(typed, dtype=dtype)
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
