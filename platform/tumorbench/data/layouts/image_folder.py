"""``image-folder``: one subfolder of images (2D files or NIfTI volumes) per class, masks beside them (BUSI)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tumorbench.data.layouts.common import MASK_STEM, Problems, is_image, is_volume, row, stem, visible_dirs
from tumorbench.errors import DataError

# More subfolders than this, each with _mask files, are case folders (one per patient), not classes.
MAX_CLASS_FOLDERS = 10


def read_image_patients(path: Path) -> dict[str, str]:
    """``patients.csv`` of a class-folder (or ``paired``) set: image (path relative to the root, or file name; a
    ``paired`` case name too) -> patient id."""
    if not path.exists():
        return {}
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    image_column = next((c for c in ("image", "path", "file") if c in frame.columns), None)
    if image_column is None or "patient_id" not in frame.columns:
        raise DataError(path, f"needs an image (or path) column and a patient_id column, has {list(frame.columns)}")
    keys = frame[image_column].str.strip().str.replace("\\", "/", regex=False)
    if keys.duplicated().any():
        raise DataError(path, f"{int(keys.duplicated().sum())} image(s) listed twice")
    if (frame["patient_id"].str.strip() == "").any():
        raise DataError(path, f"{int((frame['patient_id'].str.strip() == '').sum())} row(s) without a patient_id")
    return dict(zip(keys, frame["patient_id"].str.strip(), strict=True))


def scan(root: Path, problems: Problems, **_) -> list[dict]:
    patients = read_image_patients(root / "patients.csv")
    rows, unmapped = [], 0
    kinds = set()
    for class_dir in visible_dirs(root):
        files = sorted(p for p in class_dir.iterdir() if is_image(p) or is_volume(p))
        images, masks, orphans = split_masks(files)
        kinds |= {"volumes" if is_volume(p) else "2D images" for p in images}
        if not images:
            problems.add(class_dir, "class folder without images")
        for orphan in orphans:
            problems.add(orphan, "mask without its image")
        for path in images:
            case_id = f"{class_dir.name}/{path.name}"
            # Without patients.csv, each image is its own patient (slices of one patient can leak across folds).
            patient = patients.get(case_id, patients.get(path.name))
            unmapped += bool(patients) and patient is None
            mask = masks.get(stem(path))
            rows.append(
                row(case_id, patient or case_id, "image-folder", [path], ("image",), mask=mask, label=class_dir.name)
            )
    if unmapped:
        problems.add(root / "patients.csv", f"{unmapped} image(s) not listed: each is its own patient")
    if len(kinds) > 1:
        problems.add(root, "class folders mix 2D images and NIfTI volumes: one study takes one or the other")
    return rows


def split_masks(files: list[Path]) -> tuple[list[Path], dict[str, Path], list[Path]]:
    """A class folder's images, the mask of each image that has one, and masks without their image.

    Masks sit beside their image as ``<stem>_mask`` (BUSI breast ultrasound), with ``_mask_1``,
    ``_mask_2`` for further lesions: a mask is never an image of the class. The mask kept for an
    image is ``_mask``, else its lowest-numbered one (classification ignores masks).
    """
    stems = {stem(p) for p in files}
    images, found, orphans = [], {}, []
    for path in files:
        match = MASK_STEM.match(stem(path))
        if match is None:
            images.append(path)
        elif match["image"] in stems:
            found.setdefault(match["image"], []).append((int(match["n"] or 0), path))
        else:
            orphans.append(path)
    return images, {image: min(masks)[1] for image, masks in found.items()}, orphans


def masked_folders(subdirs: list[Path]) -> tuple[str, str] | None:
    """``lgg`` or ``image-folder`` (and why) for subfolders holding images with ``_mask`` files, else None.

    LGG case folders name their slices ``<folder>_<n>``; a few folders whose images are named
    otherwise (BUSI: ``benign/benign (1).png`` + ``benign (1)_mask.png``) are classes.
    """
    masked = [sub for sub in subdirs if any(MASK_STEM.match(p.stem) for p in sub.iterdir() if is_image(p))]
    if not masked:
        return None
    for sub in masked:
        if any(p.stem.startswith(f"{sub.name}_") for p in sub.iterdir() if MASK_STEM.match(p.stem)):
            return "lgg", f"slices with _mask files in {sub.name}/"
    if len(subdirs) > MAX_CLASS_FOLDERS:
        return "lgg", f"{len(subdirs)} folders of images with _mask files: one case folder per patient"
    names = ", ".join(sub.name for sub in subdirs)
    return "image-folder", (
        f"class folders ({names}) of images with _mask files; if each folder is one patient, pass --layout lgg"
    )
