"""Zipped uploads: one DICOM series or NIfTI volumes (BraTS channels), unpacked safely under a work folder."""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from tumorbench.data.catalog import BRATS_CHANNELS
from tumorbench.data.image import same_grid
from tumorbench.data.io import ImageData, read_image
from tumorbench.data.layouts.brats import CHANNEL_SUFFIXES
from tumorbench.data.layouts.common import is_system
from tumorbench.uploads.formats import SUFFIXES, UploadError, UploadLimits, sniff_format, too_big
from tumorbench.uploads.headers import check_dicom, check_nifti

_MODALITY_NAME = re.compile(
    rf"[_-]({'|'.join(s for names in CHANNEL_SUFFIXES.values() for s in names)})(\.nii(?:\.gz)?)$", re.IGNORECASE
)


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
        if info.is_dir() or any(is_system(PurePosixPath(part)) for part in name.parts):  # __MACOSX/, ._x
            continue
        members.append(info)
    declared = sum(info.file_size for info in members)
    if declared > limits.max_unpacked_bytes:
        raise too_big(label, "unpacked bytes", declared, limits.max_unpacked_bytes)
    if not members:
        raise UploadError(label, "zip holds no files", 422)
    return members


def _member_name(n: int, filename: str) -> str:
    """A numbered name keeping only a BraTS modality suffix (``00003_t1ce.nii.gz``), never the client's name."""
    found = _MODALITY_NAME.search(filename)
    return f"{n:05d}_{found.group(1).lower()}{found.group(2).lower()}" if found else f"{n:05d}"


def unpack(path: Path, work: Path, limits: UploadLimits, label: str) -> list[Path]:
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
                            raise too_big(label, "unpacked bytes", written, limits.max_unpacked_bytes)
                        sink.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
                raise UploadError(label, f"corrupt zip member #{n + 1} ({type(exc).__name__})", 422) from exc
            files.append(target)
    return files


def read_zip(path: Path, work: Path, limits: UploadLimits, label: str, uids: set[str]) -> ImageData:
    files = unpack(path, work, limits, label)
    kinds = {file: sniff_format(file) for file in files}
    if all(kind == "dicom" for kind in kinds.values()):
        checked = [check_dicom(file, limits, label, uids) for file in files]
        count = sum(values for values, _ in checked)
        if count > limits.max_voxels:
            raise too_big(label, "rows x columns x slices", count, limits.max_voxels)
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
        pattern = re.compile(rf"[_-]({'|'.join(CHANNEL_SUFFIXES[channel])})\.nii(\.gz)?$", re.IGNORECASE)
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
    count = sum(check_nifti(file, limits, label) for file in files)
    if count > limits.max_voxels:
        raise too_big(label, "voxels x channels", count, limits.max_voxels)
    volumes = [read_image(file) for file in files]
    first = volumes[0]
    for file, volume in zip(files[1:], volumes[1:]):
        if volume.array.shape != first.array.shape or not same_grid(volume.affine, first.affine):
            raise UploadError(label, f"{file.name[6:]} does not share the voxel grid of {files[0].name[6:]}", 422)
    array = first.array if len(volumes) == 1 else np.stack([v.array for v in volumes], axis=-1)
    names = list(BRATS_CHANNELS) if len(volumes) == len(BRATS_CHANNELS) else None  # _channel_order's order
    return ImageData(
        array, first.affine, first.spacing, {**first.meta, "channels": len(volumes), "channel_names": names}
    )
