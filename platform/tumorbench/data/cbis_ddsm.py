"""CBIS-DDSM (TCIA's curated DDSM mammograms) made two class-folder sets, its own train and test split.

The download is one folder per film (``Mass-Training_P_00001_LEFT_CC/<study>/<series>/1-1.dcm``) and one per
lesion's ROI (``..._LEFT_CC_1/``, holding its cropped image and its mask), beside four tables
(``mass_case_description_train_set.csv``, ``calc_case_description_test_set.csv``, ...) with one row per lesion:
``patient_id``, ``pathology`` (``MALIGNANT``, ``BENIGN``, ``BENIGN_WITHOUT_CALLBACK``), ``image file path`` and
``ROI mask file path``. Three traps, handled here:

- the tables' paths name series by UID while a download names them by description (``1.000000-full mammogram
  images-24515``): only each path's first folder, the film's or ROI's, is matched;
- an ROI folder's two files are not reliably named or ordered: the mask is the one of the film's size;
- the films are large (3,000 x 5,000 at 16 bits): each is written at most ``max_side`` pixels high or wide.

:func:`convert` writes ``out/train`` and ``out/test`` (:mod:`~tumorbench.data.class_set`): ``benign/`` and
``malignant/`` films (malignant when any of its lesions is), each with the union of its lesions' masks, and a
``patients.csv``; a film one of whose lesion masks is missing gets no mask (a classification case only). The
official split is by lesion type, so a patient can have films in both: counted, and ``one_set`` writes every
film into one set instead, for patient-level folds.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tumorbench.data.class_set import ClassFolderWriter, Written, in_processes, to_uint16
from tumorbench.data.layouts.common import data_files, looks_like_dicom
from tumorbench.data.layouts.labels_csv import column
from tumorbench.errors import DataError

FOLDER = re.compile(r"^(Mass|Calc)-(Training|Test)_P_\d+_(LEFT|RIGHT)_(CC|MLO)(_\d+)?$", re.IGNORECASE)
PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}
COLUMNS = ("patient_id", "pathology", "image_file_path", "roi_mask_file_path")
MAX_SIDE = 1024


@dataclass
class Summary(Written):
    lesions: int = 0
    with_mask: int = 0
    split: Counter = field(default_factory=Counter)  # films per split
    missing: list[str] = field(default_factory=list)  # films a table lists that are not there
    masks_missing: int = 0  # lesions whose ROI folder holds no file of the film's size
    skipped: list[str] = field(default_factory=list)  # "<film>: <problem>"
    in_both: int = 0  # patients with films in train and in test (the split is by lesion type, not patient)


def _table(path: Path) -> pd.DataFrame | None:
    """The CSV's :data:`COLUMNS` when it has them all (whatever their spelling), else None (another table)."""
    try:
        header = pd.read_csv(path, nrows=0)
    except (OSError, ValueError, UnicodeDecodeError):  # pandas' ParserError is a ValueError
        return None
    names = {column(header, (name,)): name for name in COLUMNS}
    if None in names:
        return None
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(path, f"unreadable CSV ({type(exc).__name__}: {exc})") from exc
    return table.rename(columns=names)[list(COLUMNS)]


def read_tables(root: Path) -> pd.DataFrame:
    """Every lesion row of the root's CBIS-DDSM tables: ``patient``, ``label``, ``film``, ``roi``, ``split``."""
    frames = []
    for path in (p for p in data_files(root) if p.suffix.lower() == ".csv"):
        table = _table(path)
        if table is None:
            continue  # TCIA's manifest, a metadata export
        pathology = table["pathology"].str.strip().str.upper()
        unknown = sorted(set(pathology) - set(PATHOLOGY))
        if unknown:
            raise DataError(path, f"pathology {unknown[0]!r}, not one of {', '.join(PATHOLOGY)}")
        frames.append(
            pd.DataFrame(
                {
                    "patient": table["patient_id"].str.strip(),
                    "label": pathology.map(PATHOLOGY),
                    "film": table["image_file_path"].map(_first_folder),
                    "roi": table["roi_mask_file_path"].map(_first_folder),
                    "split": "test" if "test" in path.stem.lower() else "train",
                }
            )
        )
    if not frames:
        raise DataError(root, f"no CBIS-DDSM table under it (a CSV with the columns {', '.join(COLUMNS)})")
    return pd.concat(frames, ignore_index=True)


def _first_folder(path: str) -> str:
    return str(path).strip().strip('"').replace("\\", "/").split("/")[0]


def dicom_folders(root: Path) -> dict[str, list[Path]]:
    """DICOM files by the film or ROI folder (:data:`FOLDER`) they sit under, however deep the download put it."""
    found: dict[str, list[Path]] = defaultdict(list)
    for path in data_files(root):
        folder = next((part for part in path.relative_to(root).parts[:-1] if FOLDER.match(part)), None)
        if folder is not None and looks_like_dicom(path):
            found[folder].append(path)
    return found


def _shape(path: Path) -> tuple[int, int]:
    """Rows and columns from the header; (0, 0) for a file that is not readable DICOM (it matches no film)."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    except Exception:  # pydicom raises InvalidDicomError, OSError, ValueError... for damaged files
        return 0, 0


def _mask(files: list[Path], shape: tuple[int, int]) -> np.ndarray | None:
    """The ROI folder's mask: its file of the film's size (the other is the cropped lesion), as 0/1."""
    from tumorbench.data.io import read_image

    for path in files:
        if _shape(path) == shape:
            return read_image(path).array[0] > 0
    return None


def resized(image: np.ndarray, max_side: int, *, mask: bool = False) -> np.ndarray:
    """At most ``max_side`` high or wide, aspect kept: area-averaged (a mask: more than half covered; integers
    rounded)."""
    from PIL import Image

    scale = max_side / max(image.shape)
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    small = np.asarray(Image.fromarray(image.astype(np.float32), "F").resize(size, Image.Resampling.BOX))
    if mask:
        return small > 0.5
    return small if image.dtype.kind == "f" else np.rint(small).astype(image.dtype)


def _film(files: list[Path], rois: list[list[Path]], max_side: int) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The film's pixels (largest file of its folder), the union of its lesions' masks (None if one is missing)
    and how many masks were missing."""
    from tumorbench.data.io import read_image

    path = max(files, key=lambda p: p.stat().st_size)
    image = read_image(path, dtype=None).array[0]
    union, missing = np.zeros(image.shape, bool), 0
    for roi in rois:
        mask = _mask(roi, image.shape)
        if mask is None:
            missing += 1
        else:
            union |= mask
    image = resized(image if image.dtype == np.uint8 else to_uint16(image)[0], max_side)
    return image, None if missing else resized(union.astype(np.uint8), max_side, mask=True), missing


def _one(job: tuple[list[Path], list[list[Path]], int]) -> tuple | str:
    """One film in a worker: :func:`_film`'s result, or the problem that kept it from being read."""
    try:
        return _film(*job)
    except DataError as exc:
        return exc.problem


def convert(
    root: str | Path, out: str | Path, max_side: int = MAX_SIDE, *, one_set: bool = False, workers: int = 1
) -> Summary:
    """Write every film the root's tables list into ``out/train`` and ``out/test`` (see the module docstring);
    ``one_set``: all into ``out``, for patient-level folds over the whole set. Films are read and resized in
    ``workers`` processes (0.6 s a film on one core here); one that cannot be read is skipped and listed."""
    from tqdm import tqdm

    root, out = Path(root), Path(out)
    lesions, folders = read_tables(root), dicom_folders(root)
    if one_set:
        lesions["split"] = "all"
    summary = Summary(lesions=len(lesions))
    pseudonyms: dict[str, int] = {}  # one per patient across both sets
    writers = {
        split: ClassFolderWriter(out if one_set else out / split, "cbis", pseudonyms) for split in set(lesions["split"])
    }
    films = [(film, rows) for film, rows in lesions.groupby("film", sort=True)]
    summary.missing = [film for film, _ in films if film not in folders]
    films = [(film, rows) for film, rows in films if film in folders]
    jobs = [(folders[film], [folders.get(roi, []) for roi in rows["roi"]], max_side) for film, rows in films]
    results = tqdm(in_processes(_one, jobs, workers), total=len(jobs), desc="CBIS-DDSM films", unit="film", leave=False)
    for (film, rows), result in zip(films, results):
        if isinstance(result, str):
            summary.skipped.append(f"{film}: {result}")
            continue
        image, mask, missing = result
        label = "malignant" if (rows["label"] == "malignant").any() else "benign"
        split = rows["split"].iloc[0]
        writers[split].add(label, film, image, mask, rows["patient"].iloc[0])
        summary.images += 1
        summary.classes[label] += 1
        summary.split[split] += 1
        summary.with_mask += mask is not None
        summary.masks_missing += missing
    if not jobs:
        raise DataError(root, f"none of the {len(summary.missing)} films its tables list is there (DICOM folders)")
    if not summary.images:
        raise DataError(root, f"none of the {len(jobs)} films found could be read; the first: {summary.skipped[0]}")
    for split, writer in writers.items():
        if summary.split[split]:
            writer.close()
    written = lesions[lesions["film"].isin([film for film, _ in films])]
    summary.patients = len(pseudonyms)
    summary.in_both = int((written.groupby("patient")["split"].nunique() > 1).sum())
    return summary
