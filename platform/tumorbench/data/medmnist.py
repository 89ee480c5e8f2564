"""MedMNIST (``breastmnist.npz``, ``nodulemnist3d_64.npz``, ...) made class-folder sets: its train and test split.

A MedMNIST file is a NumPy ``.npz`` of ``train_images``, ``train_labels``, ``val_*`` and ``test_*``: small 2D
images (28 to 224 pixels) or 3D volumes (28 or 64 voxels), one integer class each. :func:`convert` writes
``out/train`` (train and val: studies make their own folds) and ``out/test``, one folder per class named from
:data:`CLASS_NAMES` for the tumour sets (else ``class_<n>``): PNGs, or NIfTI volumes at an unknown (1 mm)
spacing. MedMNIST gives no patients, so none is written: each image is its own patient, and near-duplicate
images share a fold (the ``image-folder`` default without ``patients.csv``).

The arrays are streamed from the archive in chunks after their ``.npy`` headers are checked (no pickled objects,
C order, a bounded shape), so a 224-pixel set of 13 GB converts in bounded memory.
"""

from __future__ import annotations

import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumorbench.data.class_set import ClassFolderWriter, Written
from tumorbench.errors import DataError

# MedMNIST v2's label names of its tumour and lesion sets (medmnist.INFO), in label order
CLASS_NAMES = {
    "breastmnist": ("malignant", "normal_or_benign"),
    "nodulemnist3d": ("benign", "malignant"),
    "dermamnist": (
        "actinic_keratoses_and_intraepithelial_carcinoma",
        "basal_cell_carcinoma",
        "benign_keratosis_like_lesions",
        "dermatofibroma",
        "melanoma",
        "melanocytic_nevi",
        "vascular_lesions",
    ),
    "pathmnist": (
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth_muscle",
        "normal_colon_mucosa",
        "cancer_associated_stroma",
        "colorectal_adenocarcinoma_epithelium",
    ),
}
SPLITS = {"train": "train", "val": "train", "test": "test"}  # val joins train: studies make their own folds
MAX_SIDE = 1024
CHUNK_BYTES = 64 << 20


@dataclass
class Summary(Written):
    split: Counter = field(default_factory=Counter)  # images per output set
    dims: int = 2


@dataclass(frozen=True)
class Member:
    """One ``.npy`` of the archive: its name, shape and dtype, read from its header."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def members(path: Path) -> dict[str, Member]:
    """The archive's arrays by name (``train_images``...), each header checked; nothing else is read."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"not a NumPy .npz archive ({type(exc).__name__})") from exc
    found = {}
    with archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as handle:
                shape, dtype = _header(path, name, handle)
            found[name] = Member(info.filename, shape, dtype)
    return found


def _header(path: Path, name: str, handle) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        shape, fortran, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(handle)
    except ValueError as exc:
        raise DataError(path, f"{name} is not a .npy array ({exc})") from exc
    if dtype.hasobject or fortran or dtype.kind not in "uifb":
        raise DataError(path, f"{name}: {dtype} {'Fortran-ordered ' if fortran else ''}array, not plain numbers")
    if len(shape) > 1 and max(shape[1:]) > MAX_SIDE:
        raise DataError(path, f"{name} has shape {shape}: items larger than {MAX_SIDE} per side")
    return shape, dtype


def rows(path: Path, member: Member) -> Iterator[np.ndarray]:
    """The member's items (first axis) one by one, read ``CHUNK_BYTES`` at a time after the header."""
    item_shape = member.shape[1:]
    item_bytes = int(np.prod(item_shape, dtype=np.int64)) * member.dtype.itemsize
    per_chunk = max(1, CHUNK_BYTES // max(item_bytes, 1))
    with zipfile.ZipFile(path) as archive, archive.open(member.name) as handle:
        _header(path, member.name, handle)
        left = member.shape[0]
        while left:
            count = min(per_chunk, left)
            data = handle.read(count * item_bytes)
            if len(data) != count * item_bytes:
                raise DataError(path, f"{member.name} ends {left - len(data) // max(item_bytes, 1)} item(s) early")
            yield from np.frombuffer(data, member.dtype).reshape(count, *item_shape)
            left -= count


def _labels(path: Path, found: dict[str, Member], split: str) -> np.ndarray:
    member = found[f"{split}_labels"]
    if member.shape[1:] not in ((), (1,)):
        raise DataError(path, f"{split}_labels has shape {member.shape}: several labels per image (multi-label)")
    labels = np.array([item.reshape(-1)[0] for item in rows(path, member)], dtype=np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(path, f"{split}_labels holds a negative class {labels.min()}")
    return labels


def convert(path: str | Path, out: str | Path) -> Summary:
    """Write the MedMNIST file ``path`` into ``out/train`` and ``out/test`` (see the module docstring)."""
    path, out = Path(path), Path(out)
    found = members(path)
    splits = [s for s in SPLITS if f"{s}_images" in found and f"{s}_labels" in found]
    if not splits:
        raise DataError(
            path, f"no <split>_images with <split>_labels in it (MedMNIST: train, val, test); has {list(found)}"
        )
    names = CLASS_NAMES.get(re.sub(r"_\d+$", "", path.stem.lower()))
    writers = {name: ClassFolderWriter(out / name, "medmnist", patients=False) for name in set(SPLITS.values())}
    summary = Summary()
    for split in splits:
        images, labels = found[f"{split}_images"], _labels(path, found, split)
        if images.shape[0] != len(labels):
            raise DataError(path, f"{split}: {images.shape[0]} images but {len(labels)} labels")
        summary.dims = 3 if len(images.shape) == 5 or (len(images.shape) == 4 and images.shape[-1] not in (1, 3)) else 2
        for index, (image, label) in enumerate(zip(rows(path, images), labels)):
            if names is not None and label >= len(names):
                raise DataError(path, f"{split}_labels holds class {label}; {path.stem} has {len(names)}")
            name = names[label] if names is not None else f"class_{label}"
            writers[SPLITS[split]].add(name, f"{split}_{index:05d}", _image(image, summary.dims), None, "")
            summary.images += 1
            summary.classes[name] += 1
            summary.split[SPLITS[split]] += 1
    for name, writer in writers.items():
        if summary.split[name]:
            writer.close()
    return summary


def _image(item: np.ndarray, dims: int) -> np.ndarray:
    """A 2D item as (H, W) or (H, W, 3) for PNG; a 3D one as (I, J, K), channel last dropped when single."""
    if item.ndim == dims + 1 and item.shape[-1] == 1:
        item = item[..., 0]
    return item
