"""``image-folder``: one subfolder of images (2D files or volumes) per class, masks beside them (BUSI)."""

from __future__ import annotations

import re
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


# Top folders named for a split, not a class: their class folders sit one level down (Kaggle's Training/).
SPLIT_NAMES = frozenset({"train", "training", "test", "testing", "val", "valid", "validation", "dev"})


# Folders named as numbered parts of one dataset (LUNA16's ``subset0``..``subset9``, ``batch_2``, ``part3``):
# never detected as classes (a scan's subset says nothing of it); ``--layout image-folder`` still reads them so.
SHARD_NAME = re.compile(r"^(subset|batch|part|chunk|fold|split|shard)[ _-]?\d+$", re.IGNORECASE)


# LUNA16's lung segmentations (seg-lungs-LUNA16/), beside its subsets and named as their scans: no part, no class
LUNG_MASKS = re.compile(r"^seg[ _-]?lungs", re.IGNORECASE)


def shards(subdirs: list[Path]) -> bool:
    """Whether every folder is named as a numbered part of one dataset (:data:`SHARD_NAME`), not a class."""
    return bool(subdirs) and all(SHARD_NAME.match(d.name) for d in subdirs)


# Folders beside the classes that hold images without a class (Br35H's ``pred/``): read, unlabelled, never a class.
UNLABELLED_NAMES = frozenset(
    {"pred", "predict", "prediction", "predictions", "unlabeled", "unlabelled", "unknown", "unclassified"}
)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image(p) or is_volume(p))


def _patient_structure(subdirs: list[Path]) -> bool:
    """Folders without images of their own, each holding folders of images."""
    if not subdirs or any(_images(d) for d in subdirs):
        return False
    inner = [visible_dirs(d) for d in subdirs]
    return all(inner) and all(_images(p) for folders in inner for p in folders)


def patient_folders(subdirs: list[Path]) -> bool:
    """Class folders holding one folder of images per patient (``tumour/patient_07/slice_3.png``), as detection
    sees them: not when the top folders are a split (``Training/`` + ``Testing/``: named so, or the same few
    class names one level down in each), which the catalog's one-folder-down hint handles.
    """
    if len(subdirs) > MAX_CLASS_FOLDERS or not _patient_structure(subdirs):
        return False
    if any(d.name.lower() in SPLIT_NAMES for d in subdirs):
        return False
    inner = [frozenset(p.name for p in visible_dirs(d)) for d in subdirs]
    return len(set(inner)) > 1 or len(inner[0]) > MAX_CLASS_FOLDERS


def classes_per_patient(subdirs: list[Path]) -> list[str]:
    """The class names when the folders are patients each holding class folders of images (IDC breast
    histopathology: ``10253/0/*.png``, ``10253/1/*.png``), else []: more folders than there can be classes
    (:data:`MAX_CLASS_FOLDERS`), no images of their own, and inner folders named from two to that many names.
    """
    if len(subdirs) <= MAX_CLASS_FOLDERS or any(d.name.lower() in SPLIT_NAMES for d in subdirs):
        return []
    if not _patient_structure(subdirs):
        return []
    names = sorted({p.name for d in subdirs for p in visible_dirs(d)})
    return names if 2 <= len(names) <= MAX_CLASS_FOLDERS else []


def _class_groups(root: Path) -> dict[str, list[tuple[Path, str | None]]]:
    """Class folder name -> its folders of images, each with the patient its folder names (None: none named)."""
    top = visible_dirs(root)
    if classes := classes_per_patient(top):  # <patient>/<class>/: the patient is the top folder
        return {c: [(d / c, d.name) for d in top if (d / c).is_dir()] for c in classes}
    if _patient_structure(top):  # <class>/<patient>/, detected or --layout image-folder on such folders
        return {d.name: [(p, p.name) for p in visible_dirs(d)] for d in top}
    return {d.name: [(d, None)] for d in top}


def scan(root: Path, problems: Problems, **_) -> list[dict]:
    patients = read_image_patients(root / "patients.csv")
    rows, unmapped, further = [], 0, 0
    kinds = set()
    for name, groups in _class_groups(root).items():
        # a patient folder's name is the patient (merged across classes)
        label = None if name.lower() in UNLABELLED_NAMES else name
        found = 0
        for folder, patient_folder in groups:
            files = _images(folder)
            images, masks, orphans = split_masks(files)
            further += len(files) - len(images) - len(masks) - len(orphans)  # BUSI's _mask_1, _mask_2
            kinds |= {"volumes" if is_volume(p) else "2D images" for p in images}
            found += len(images)
            for orphan in orphans:
                problems.add(orphan, "mask without its image")
            for path in images:
                case_id = path.relative_to(root).as_posix()
                # Without patients.csv or patient folders, each image is its own patient (slices of one
                # patient can leak across folds).
                patient = patients.get(case_id, patients.get(path.name)) or patient_folder
                unmapped += bool(patients) and patient is None
                mask = masks.get(stem(path))
                rows.append(
                    row(case_id, patient or case_id, "image-folder", [path], ("image",), mask=mask, label=label)
                )
        if not found:
            problems.add(root / name, "class folder without images")
        elif label is None:
            problems.notes.append(f"{name}/: {found} image(s) read unlabelled (named for no class)")
    if unmapped:
        problems.add(root / "patients.csv", f"{unmapped} image(s) not listed: each is its own patient")
    if len(kinds) > 1:
        problems.add(root, "class folders mix 2D images and volumes: one study takes one or the other")
    if further:
        problems.notes.append(
            f"{further} further lesion mask(s) (_mask_1, _mask_2, ...) not read: an image's mask is its _mask alone, "
            "so a segmentation study scores against its first lesion (merge them into the _mask file to score all)"
        )
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
