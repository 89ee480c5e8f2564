"""Dataset catalogs: scan a dataset root into one DataFrame row per case.

Every layout yields the same columns, so splits, datasets, models and baselines
never look at folder structure again:

- ``case_id``: unique within the dataset.
- ``patient_id``: the unit of splitting (slices and nodules of one patient share it).
- ``layout``: the source layout the row came from.
- ``image``: tuple of paths, one per channel (one path may hold several channels).
- ``channels``: tuple of channel names.
- ``mask``: segmentation path or ``None``.
- ``label``: class name or ``None`` (unlabelled, or excluded by a policy).

Layout-specific extras (``slice_index``, ``naming``, ``enhancing_label``,
``malignancy``, ``series_uid``) ride along as further columns. Problems found
while scanning (a missing modality, a slice without its mask) raise a
:class:`~tumorbench.errors.DataError` in strict mode, and are collected in
``frame.attrs["problems"]`` otherwise, so ``data check`` can report all of them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from tumorbench.data.layouts import brats, case_folders, dicom, image_folder, labels_csv, lgg, lidc, msd, paired
from tumorbench.data.layouts.brats import BRATS_CHANNELS
from tumorbench.data.layouts.common import (
    IMAGE_SUFFIXES,
    VOLUME_SUFFIXES,
    Problems,
    data_files,
    is_image,
    is_system,
    is_volume,
    looks_like_dicom,
    visible_dirs,
)
from tumorbench.data.layouts.lidc import LidcPolicy
from tumorbench.errors import DataError

__all__ = ["BRATS_CHANNELS", "COLUMNS", "IMAGE_SUFFIXES", "LAYOUTS", "LidcPolicy", "data_dims", "detect_layout", "scan"]

LAYOUTS = ("brats", "msd", "paired", "case-folders", "lgg", "image-folder", "csv", "lidc", "dicom")
COLUMNS = ["case_id", "patient_id", "layout", "image", "channels", "mask", "label"]
# Layouts whose cases are read as volumes (a DICOM series is one, even of a single slice); the others' cases are
# volumes when their files are NIfTI (an nnU-Net dataset may hold PNG slices).
VOLUME_LAYOUTS = ("brats", "dicom")
_SCANNERS: dict[str, Callable[..., list[dict]]] = {
    "brats": brats.scan,
    "msd": msd.scan,
    "paired": paired.scan,
    "case-folders": case_folders.scan,
    "csv": labels_csv.scan,
    "lgg": lgg.scan,
    "image-folder": image_folder.scan,
    "lidc": lidc.scan,
    "dicom": dicom.scan,
}


def detect_layout(root: str | Path) -> tuple[str, str]:
    """Guess a dataset root's layout.

    Returns:
        The layout name and the evidence it was chosen on.

    Raises:
        DataError: The folder is missing, empty, or fits no known layout.
    """
    root = Path(root)
    if not root.is_dir():
        if root.is_file() and root.suffix.lower() == ".npz":  # a MedMNIST set is one file
            raise DataError(
                root,
                f"a NumPy archive, not a folder: `tumorbench data medmnist {root} --out DIR` "
                "writes a MedMNIST file as class folders; then pass --data DIR/train --test DIR/test",
            )
        raise DataError(root, "not a folder" if root.exists() else "no such folder")
    entries = [p for p in root.iterdir() if not is_system(p)]
    if not entries:
        raise DataError(root, "empty folder")
    found = _detect(root, entries)
    if found is None:
        subdirs = sorted(p for p in entries if p.is_dir())
        hint = _shards_hint(root, subdirs) if _shards(subdirs) else _one_down(subdirs) or _deeper(root)
        raise DataError(root, f"cannot detect a layout (known: {', '.join(LAYOUTS)}); pass --layout{hint}")
    return found


def _detect(root: Path, entries: list[Path]) -> tuple[str, str] | None:
    """The layout of a folder with these (visible) entries and why, or None."""
    if (root / "dataset.json").exists():
        return "msd", "dataset.json (Medical Segmentation Decathlon or nnU-Net)"
    if msd.is_test_split(root):
        return "msd", "imagesTs/ of a dataset.json dataset: its held-out cases, with labelsTs/"
    if (root / "files" / "malignancy.csv").exists() or any(lidc.LIDC_NAME.match(p.stem) for p in entries):
        return "lidc", "LIDC-IDRI-<patient>_<nodule>_<scan> crops"
    subdirs = sorted(p for p in entries if p.is_dir())
    for sub in subdirs:
        if brats.naming(sub):
            return "brats", f"BraTS naming in {sub.name}/"
    if brats.grouped(subdirs):  # BraTS 2018-2019: not classes, whose volumes (segmentations too) would be images
        return "brats", f"BraTS case folders in {', '.join(s.name + '/' for s in subdirs)} (groups of cases)"
    if any(image_folder.LUNG_MASKS.match(s.name) for s in subdirs) and _shards(subdirs):  # names first: no listing
        return None  # LUNA16's subsets with its lung masks: no image/mask pairs (the hint says how to convert)
    pairs = paired.folders(subdirs)
    if pairs is not None:  # before class folders: images/ and masks/ are not two classes
        return "paired", f"images in {pairs[0].name}/, masks in {pairs[1].name}/ paired by name"
    if not any(is_image(p) or is_volume(p) for sub in subdirs for p in sub.iterdir()) and paired.flat(root):
        return "paired", "images with their masks beside them in one folder"
    if case_folders.is_case_folder_set(subdirs):  # before class folders of volumes: a KiTS case is no class
        return "case-folders", "case folders of volumes, each with a segmentation named as one"
    masked = image_folder.masked_folders(subdirs)
    if masked:  # 2D images with _mask files: LGG case folders or BUSI classes
        return masked
    if full := paired.batches(subdirs):  # before class folders: LiTS' batches of volume-N + segmentation-N
        return "paired", f"images with their masks beside them in {len(full)} folder(s)"
    for path in data_files(root):
        if looks_like_dicom(path):
            # Name no file: DICOM paths often carry patient names or IDs.
            return "dicom", "DICOM files (.dcm suffix or DICM preamble)"
    table = labels_csv.find_table(root, entries)
    if table is not None:  # before class folders: Kaggle's train/ + train_labels.csv is not one class
        return "csv", f"images with their classes in {table.name}"
    if _shards(subdirs):  # subset0..subset9 (LUNA16): parts of one set, not classes
        return None
    if subdirs and any(is_image(p) for sub in subdirs for p in sub.iterdir()):
        return "image-folder", "one subfolder of images per class"
    if image_folder.patient_folders(subdirs):
        return "image-folder", "one subfolder per class, one folder of images per patient in each"
    if classes := image_folder.classes_per_patient(subdirs):
        shown = ", ".join(classes)
        return "image-folder", (
            f"{len(subdirs)} patient folders, each holding class folders ({shown}); if these are not classes "
            "(views, sequences), put each image's class in a CSV (--layout csv)"
        )
    with_volumes = [sub for sub in subdirs if any(is_volume(p) for p in sub.iterdir())]
    if with_volumes and len(subdirs) <= image_folder.MAX_CLASS_FOLDERS:
        # More folders of volumes are case folders of a layout not known here, not classes.
        return "image-folder", "one subfolder of volumes per class"
    return None


def _shards(subdirs: list[Path]) -> bool:
    """The folders of images or volumes are all numbered parts of one set (not LUNA16's ``CSVFILES/``, lung masks)."""
    held = [s for s in subdirs if not image_folder.LUNG_MASKS.match(s.name)]
    return image_folder.shards([s for s in held if any(is_image(p) or is_volume(p) for p in s.iterdir())])


def _shards_hint(root: Path, subdirs: list[Path]) -> str:
    parts = [s.name for s in subdirs if image_folder.SHARD_NAME.match(s.name)]
    names = ", ".join(parts[:3]) + (", ..." if len(parts) > 3 else "")
    if next(root.glob("annotations.csv"), None) or next(root.glob("*/annotations.csv"), None):
        return (
            f"; {names} with an annotations.csv: LUNA16's nodule list? `tumorbench data luna16 {root} --out DIR` "
            "draws its nodules as masks on each scan's grid; then pass --data DIR"
        )
    return (
        f"; {names} are numbered parts of one dataset, not classes: put each image's class in a CSV at the root "
        "(--layout csv: an image column and a label column, see docs/data.md), or pass --layout image-folder "
        "if the folders really are classes"
    )


READ_TYPES = "PNG, JPEG, TIFF, BMP, NIfTI, MetaImage, NRRD, DICOM"


def _deeper(root: Path, max_folders: int = 2000) -> str:
    """A hint when the first images sit two or more folders down (BreakHis:
    ``BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/<patient>/40X/``), or when no file is of a type read
    here (the figshare brain tumour set's ``.mat``: ``tumorbench data figshare``); naming no folder (they may be
    patients); a bounded walk. The classes are guessed at the first level that holds several folders."""
    suffixes: Counter[str] = Counter()
    for seen, (folder, dirs, files) in enumerate(os.walk(root)):
        if seen >= max_folders:
            return ""
        dirs[:] = sorted(d for d in dirs if not is_system(Path(d)))
        if any(is_image(Path(folder, f)) or is_volume(Path(folder, f)) for f in files):
            depth = len(Path(folder).relative_to(root).parts)
            break
        suffixes.update(Path(f).suffix.lower() or "(no suffix)" for f in files if not is_system(Path(f)))
    else:
        found = ", ".join(f"{suffix} {n}" for suffix, n in suffixes.most_common(5))
        return (
            f"; none of its files is of a type read here ({READ_TYPES}): {found}{_release(root, suffixes)}"
            if found
            else ""
        )
    if depth < 2:
        return ""
    level, node = 1, root
    while len(inner := visible_dirs(node)) == 1 and level < depth:  # a chain of single folders holds no classes
        level, node = level + 1, inner[0]
    entries = [p for p in node.iterdir() if not is_system(p)]
    if level > 2 and (found := _detect(node, entries)):  # a zip's wrapping folders: Kaggle's BraTS 2020
        return f"; {node.relative_to(root).as_posix()}/ is {found[0]}: pass that folder as --data"
    return (
        f"; its first images sit {depth} folders down: `tumorbench data labels {root} --label-level {level}` writes a "
        f"labels.csv that reads them, each image's class the folder at that level of its path (level {level}: the "
        "first with several folders; add --patient-level K where the folder K levels down is the patient; docs/data.md)"
    )


# Released sets whose files are converted, not read: their suffix, what they are, the command
_RELEASES = {
    ".mat": ("MATLAB .mat files: the figshare brain tumour set?", "figshare"),
    ".pgm": ("PGM films: mini-MIAS (mdb001.pgm ... with Info.txt)?", "mias"),
    ".npz": ("NumPy archives: MedMNIST?", "medmnist"),
}


def _release(root: Path, suffixes: Counter[str]) -> str:
    """A pointer to the ``tumorbench data`` command that converts a released set of this root's file types."""
    for suffix, (what, command) in _RELEASES.items():
        if suffix in suffixes:
            source = f"{root}/<file>.npz" if suffix == ".npz" else root  # MedMNIST's command takes one file
            return (
                f"; {what} `tumorbench data {command} {source} --out DIR` writes it as class folders (docs/data.md); "
                "then pass --data DIR"
            )
    return ""


def _one_down(subdirs: list[Path]) -> str:
    """A hint when the data sits one folder down (Kaggle sets: ``Training/`` and ``Testing/`` of class folders)."""
    found = []
    for sub in subdirs:  # one level only: never a walk down a whole tree
        entries = [p for p in sub.iterdir() if not is_system(p)]
        layout = _detect(sub, entries) if entries else None
        if layout is not None:
            found.append(f"{sub.name}/ is {layout[0]}")
    if not found:
        return ""
    hint = f"; one folder down, {', '.join(found)}: pass that folder as --data (a held-out one as --test)"
    if (
        len(found) > 1
        and all(layout.endswith("image-folder") for layout in found)
        and image_folder.SPLIT_NAMES.isdisjoint(sub.name.lower() for sub in subdirs)
    ):  # the same folder names in every class: patients (in several classes), or classes under a split
        hint += "; if these folders are classes holding one folder per patient, pass --layout image-folder"
    return hint


def scan(
    root: str | Path, layout: str = "auto", *, strict: bool = True, lidc_policy: LidcPolicy | None = None
) -> pd.DataFrame:
    """Scan a dataset root into a catalog, one row per case.

    Args:
        root: Dataset folder.
        layout: One of :data:`LAYOUTS`, or ``auto`` to detect it.
        strict: Raise on the first problem; otherwise collect problems in
            ``frame.attrs["problems"]`` and keep the usable cases.
        lidc_policy: Malignancy binarization for the ``lidc`` layout.

    Returns:
        The catalog, with ``attrs`` ``root``, ``layout``, ``layout_evidence``, ``problems`` and ``notes``
        (what was left out on purpose, e.g. RTSTRUCT files beside DICOM images).

    Raises:
        DataError: Unknown layout, a folder that does not fit it, no cases,
            or (strict) any problem with a case.
    """
    root = Path(root).resolve()
    if layout == "auto":
        layout, evidence = detect_layout(root)
    elif layout not in _SCANNERS:
        raise DataError(root, f"unknown layout {layout!r} (known: auto, {', '.join(LAYOUTS)})")
    else:
        if not root.is_dir():
            raise DataError(root, "no such folder")
        evidence = "given"
    problems = Problems(strict)
    rows = _SCANNERS[layout](root, problems, lidc_policy=lidc_policy)
    if not rows:
        raise DataError(
            root, f"no cases found for layout {layout!r}" + (f" ({problems.items[0]})" if problems.items else "")
        )
    frame = pd.DataFrame(rows)
    frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]
    for column in ("mask", "label"):
        # pandas infers a string dtype that turns None into NaN; keep None for "absent".
        frame[column] = pd.Series([v if isinstance(v, str) else None for v in frame[column]], dtype=object)
    duplicated = frame["case_id"][frame["case_id"].duplicated()].tolist()
    if duplicated:
        raise DataError(root, f"case ids not unique: {duplicated[:5]}")
    frame.attrs.update(
        root=str(root),
        layout=layout,
        layout_evidence=evidence,
        problems=problems.items,
        notes=problems.notes,
        lidc_policy=(lidc_policy or LidcPolicy()).describe() if layout == "lidc" else None,
    )
    return frame.reset_index(drop=True)


def data_dims(frame: pd.DataFrame) -> int:
    """3 when a catalog's cases are read as volumes (volume layouts, class folders of NIfTI files), else 2.

    DICOM series are volumes unless every one is a planar image (radiograph, ultrasound), read as 2D.
    """
    if frame.attrs.get("layout") == "dicom" and len(frame) and frame.get("planar", pd.Series([False])).all():
        return 2
    if frame.attrs.get("layout") in VOLUME_LAYOUTS:
        return 3
    first = frame["image"].iloc[0][0] if len(frame) else ""
    return 3 if str(first).lower().endswith(VOLUME_SUFFIXES) else 2
