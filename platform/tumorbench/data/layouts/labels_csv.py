"""``csv``: image files anywhere under the root, their classes (and patients) in a CSV beside them.

The shape of ISIC (``ISIC_2019_Training_GroundTruth.csv``: one-hot columns per diagnosis), HAM10000
(``HAM10000_metadata.csv``: ``lesion_id``, ``image_id``, ``dx``), Kaggle's histopathology set
(``train/`` + ``train_labels.csv``: ``id``, ``label``) and hospital exports. Read as class folders, ``train/``
was one class. The CSV at the root with an image column and a label column is the table: a listed image is found
by its path under the root, its file name, or its name without suffix; a row whose image is missing is a problem,
an image the table does not list is left out (said in a note). Columns, first found wins:

- image: ``image``, ``image_id``, ``image_name``, ``id``, ``file``, ``filename``, ``path``, ``isic_id``,
  ``image_path``, ``image_file``, ``image_file_path``, ``image_index``, ``img``, ``img_path``, ``file_path``;
- label: ``label``, ``class``, ``target``, ``diagnosis``, ``dx``, ``benign_malignant``, ``pathology``,
  ``class_name``; else one-hot columns (every value 0 or 1, one 1 per row): the column holding the 1;
- patient: ``patient_id``, ``patient``, ``subject_id``, ``subject``, ``patient_number``, else ``lesion_id``
  (HAM10000: the images of one lesion stay in one fold); without one each image is its own patient;
- mask (optional): ``mask``, ``mask_path``, ``segmentation``, ``mask_file``, ``mask_file_path``,
  ``roi_mask_file_path`` (CBIS-DDSM): a path under the root.

Column names match whatever their case, spaces, ``_`` and ``-`` (``Patient ID``, ``image file path``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from tumorbench.data.layouts.common import Problems, data_files, is_image, is_volume, row, stem
from tumorbench.errors import DataError

# Matched by :func:`_key`: case, spaces, ``_`` and ``-`` do not count (``Patient ID`` is ``patient_id``).
IMAGE_COLUMNS = (
    "image", "image_id", "image_name", "id", "file", "filename", "path", "isic_id",
    "image_path", "image_file", "image_file_path", "image_index", "img", "img_path", "file_path",
)  # fmt: skip
LABEL_COLUMNS = ("label", "class", "target", "diagnosis", "dx", "benign_malignant", "pathology", "class_name")
PATIENT_COLUMNS = ("patient_id", "patient", "subject_id", "subject", "patient_number", "lesion_id")
MASK_COLUMNS = ("mask", "mask_path", "segmentation", "mask_file", "mask_file_path", "roi_mask_file_path")
SKIPPED_NAMES = ("submission", "sample", "test")  # Kaggle's sample_submission.csv lists the test images
MAX_FILES = 1_000_000


def _key(name: str) -> str:
    return re.sub(r"[\s_-]+", "", str(name).lower())


def column(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    """The frame's first column named as one of ``names`` (in their order), whatever its case and separators."""
    keyed: dict[str, str] = {}
    for column in frame.columns:
        keyed.setdefault(_key(column), column)
    return next((keyed[_key(n)] for n in names if _key(n) in keyed), None)


def _one_hot(frame: pd.DataFrame, skip: set[str]) -> list[str]:
    """Columns whose values are all 0 or 1, with exactly one 1 per row (ISIC's ground truth), else []."""
    columns = [c for c in frame.columns if c not in skip]
    numeric = frame[columns].apply(pd.to_numeric, errors="coerce")
    binary = [c for c in columns if numeric[c].notna().all() and numeric[c].isin((0, 1)).all()]
    if len(binary) < 2 or not (numeric[binary].sum(axis=1) == 1).all():
        return []
    return binary


def read_table(path: Path, nrows: int | None = None) -> tuple[pd.DataFrame, str, str | list[str]] | None:
    """The CSV, its image column and its label column (or one-hot columns); None when it has not both."""
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, sep=None, engine="python", nrows=nrows, encoding="utf-8-sig"
        )
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return None
    image = column(frame, IMAGE_COLUMNS)
    if image is None or frame.empty:
        return None
    label = column(frame, LABEL_COLUMNS)
    if label is not None:
        return frame, image, label
    known = {image, column(frame, PATIENT_COLUMNS), column(frame, MASK_COLUMNS)} - {None}
    one_hot = _one_hot(frame, known)
    return (frame, image, one_hot) if one_hot else None


def find_table(root: Path, entries: list[Path]) -> Path | None:
    """The root's one CSV with an image and a label column (a Kaggle sample submission is not one)."""
    found = [
        p
        for p in sorted(entries)
        if p.is_file()
        and p.suffix.lower() == ".csv"
        and not any(word in p.name.lower() for word in SKIPPED_NAMES)
        and read_table(p, nrows=50) is not None
    ]
    return found[0] if len(found) == 1 else None


def _index(root: Path) -> dict[str, Path]:
    """Relative path, file name and name without suffix -> image file (the first found keeps a name)."""
    index: dict[str, Path] = {}
    for n, path in enumerate(p for p in data_files(root) if is_image(p) or is_volume(p)):
        if n >= MAX_FILES:
            raise DataError(root, f"more than {MAX_FILES:,} image files under the root")
        for key in (path.relative_to(root).as_posix(), path.name, stem(path)):
            index.setdefault(key, path)
    return index


def scan(root: Path, problems: Problems, **_) -> list[dict]:
    table = find_table(root, list(root.iterdir()))
    if table is None:
        raise DataError(root, "needs one CSV at the root with an image column and a label column (docs/data.md)")
    read = read_table(table)
    if read is None:  # the first rows looked like a table of labels, the whole file does not
        raise DataError(table, "the label column is not one-hot in every row (one 1, the rest 0)")
    frame, image_col, label = read
    patient_col, mask_col = column(frame, PATIENT_COLUMNS), column(frame, MASK_COLUMNS)
    labels = frame[label] if isinstance(label, str) else frame[label].astype(float).idxmax(axis=1)
    index, rows, used = _index(root), [], set()
    for i, record in enumerate(frame.to_dict("records")):
        key = str(record[image_col]).strip().replace("\\", "/")
        path = index.get(key) or index.get(Path(key).name) or index.get(stem(Path(key)))
        if path is None:
            problems.add(table, f"row {i + 2}: no image file for {image_col} {key!r} under the root")
            continue
        if path in used:
            problems.add(table, f"row {i + 2}: image {key!r} listed twice")
            continue
        used.add(path)
        case = path.relative_to(root).as_posix()
        mask = None
        if mask_col and str(record[mask_col]).strip():
            mask = root / str(record[mask_col]).strip()
            if not mask.exists():
                problems.add(mask, f"mask of {case} listed in {table.name} but missing")
                mask = None
        patient = str(record[patient_col]).strip() if patient_col else ""
        label_value = str(labels.iloc[i]).strip()
        rows.append(row(case, patient or case, "csv", [path], ("image",), mask=mask, label=label_value or None))
    unlisted = len(set(index.values()) - used - {Path(r["mask"]) for r in rows if r["mask"]})
    if unlisted:
        problems.notes.append(f"{unlisted} image file(s) under the root not listed in {table.name}: not used")
    return rows


def path_levels(
    root: Path, folders: list[tuple[str, ...]], label_level: int, patient_level: int | None, items: str
) -> list[tuple[str, str | None]]:
    """``(label, patient)`` of each path's folders below ``root``: the ``label_level``-th and ``patient_level``-th
    (1: the top one; None: no patient). Paths with fewer folders are refused together, counted, none named: folder
    names may be patients."""
    for what, level in (("label", label_level), ("patient", patient_level)):
        if level is not None and (short := sum(len(parts) < level for parts in folders)):
            raise DataError(root, f"{short} {items} sit fewer than {level} folder(s) below it: no {what} there")
    return [(parts[label_level - 1], parts[patient_level - 1] if patient_level else None) for parts in folders]


def labels_from_image_folders(root: Path, label_level: int = 1, patient_level: int | None = None) -> pd.DataFrame:
    """``image``, ``label`` (and ``patient_id``, ``mask``) of every image or volume under ``root``, from its folders.

    The label is the ``label_level``-th folder of the image's path below the root, the patient the
    ``patient_level``-th: BreakHis' ``benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/x.png`` is ``benign`` at level 1,
    ``adenosis`` at 3 and its patient at 4. A ``<stem>_mask`` file beside an image is its mask, not an image
    (:func:`~tumorbench.data.layouts.image_folder.split_masks`, folder by folder). The table is what the ``csv``
    layout reads.
    """
    from tumorbench.data.layouts.image_folder import split_masks

    files = [p for p in data_files(root) if is_image(p) or is_volume(p)]
    if len(files) > MAX_FILES:
        raise DataError(root, f"more than {MAX_FILES:,} image files under the root")
    by_folder: dict[Path, list[Path]] = {}
    for path in files:
        by_folder.setdefault(path.parent, []).append(path)
    images: list[Path] = []
    masks: dict[Path, Path] = {}  # image -> its mask
    for found in by_folder.values():
        kept_images, kept, orphans = split_masks(found)
        images += kept_images + orphans  # a mask without its image is listed as an image, as any other file
        masks |= {path: kept[stem(path)] for path in kept_images if stem(path) in kept}
    images.sort()
    if not images:
        raise DataError(root, "no image files under it (PNG, JPEG, TIFF, BMP, NIfTI, MetaImage, NRRD)")
    levels = path_levels(
        root, [p.relative_to(root).parts[:-1] for p in images], label_level, patient_level, f"of {len(images)} image(s)"
    )
    rows = []
    for path, (label, patient) in zip(images, levels):
        record = {"image": path.relative_to(root).as_posix(), "label": label}
        if patient_level is not None:
            record["patient_id"] = patient
        if masks:
            record["mask"] = masks[path].relative_to(root).as_posix() if path in masks else ""
        rows.append(record)
    return pd.DataFrame(rows)
