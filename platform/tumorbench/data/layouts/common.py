"""What every layout scanner shares: the row it yields, the problems it reports, which files are images."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tumorbench.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
# NIfTI, MetaImage (.mhd names a data file beside it) and NRRD (.nhdr likewise): tumorbench.data.itk_io
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm", ".dicom")
# A mask beside its image: ``<stem>_mask`` (LGG, BUSI), ``<stem>_mask_<n>`` for a further lesion (BUSI).
# What a lesion (the target of a tumour study) is called in SEG segments, RTSTRUCT ROIs and dataset.json labels.
LESION_NAME = re.compile(r"gtv|tumou?r|lesion|nodule|mass|metasta|cancer|carcinom|glioma|neoplas", re.IGNORECASE)
MASK_STEM = re.compile(r"^(?P<image>.+)_mask(?:_(?P<n>\d+))?$", re.IGNORECASE)
# What a zip made on a Mac or a folder browsed on Windows carries beside the data: ``__MACOSX/`` and
# ``._<name>`` AppleDouble files (resource forks named like the images), ``.DS_Store``, ``Thumbs.db``.
SYSTEM_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini", "$recycle.bin"})


class Problems:
    """Raises at once in strict mode, collects otherwise; ``notes`` say what was left out on purpose."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: list[str] = []
        self.notes: list[str] = []

    def add(self, path: Path | str, problem: str) -> None:
        error = DataError(path, problem)
        if self.strict:
            raise error
        self.items.append(str(error))


def is_system(path: Path) -> bool:
    """A hidden file or folder (``.DS_Store``, ``._<name>`` AppleDouble), or one an OS adds (``__MACOSX``)."""
    return path.name.startswith(".") or path.name.lower() in SYSTEM_NAMES


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not is_system(path) and path.is_file()


def is_volume(path: Path) -> bool:
    """A volume file: NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd``) or NRRD (``.nrrd``, ``.nhdr``)."""
    return path.name.lower().endswith(VOLUME_SUFFIXES) and not is_system(path) and path.is_file()


def data_files(root: Path) -> list[Path]:
    """Every file under ``root``, sorted, outside hidden and system folders and not one itself (:func:`is_system`).

    Linked folders are followed, as the layouts that list folders do (a set gathered by links on a cluster's
    scratch disk), each real folder once: a link back up the tree ends there, not in a loop.
    """
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not is_system(Path(d))]  # not walked into
        found += [Path(folder, f) for f in files if not is_system(Path(f))]
    return sorted(found)


def has_dicm_magic(path: Path) -> bool:
    """The DICOM Part 10 preamble: 128 bytes, then ``DICM`` (pydicom is not imported to look)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def looks_like_dicom(path: Path) -> bool:
    """A ``.dcm`` / ``.dicom`` suffix, or the DICM preamble."""
    return path.suffix.lower() in DICOM_SUFFIXES or has_dicm_magic(path)


SLICER_SEGMENTATION = ".seg.nrrd"  # 3D Slicer's segmentation file: a mask by its suffix


def stem(path: Path) -> str:
    """The name without its suffix; both of ``.nii.gz``; ``<x>.seg.nrrd`` (3D Slicer) is ``<x>_seg``, a mask."""
    name = path.name
    if name.lower().endswith(SLICER_SEGMENTATION):
        return f"{name[: -len(SLICER_SEGMENTATION)]}_seg"
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def visible_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not is_system(p) and p.is_dir())


def row(case_id, patient_id, layout, image, channels, mask=None, label=None, **extra) -> dict:
    return {
        "case_id": case_id,
        "patient_id": patient_id,
        "layout": layout,
        "image": tuple(str(p) for p in image),
        "channels": tuple(channels),
        "mask": None if mask is None else str(mask),
        "label": label,
        **extra,
    }
