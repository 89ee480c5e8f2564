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

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tumorbench.errors import DataError

LAYOUTS = ("brats", "msd", "lgg", "image-folder", "lidc", "dicom")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
COLUMNS = ["case_id", "patient_id", "layout", "image", "channels", "mask", "label"]

BRATS_CHANNELS = ("t1", "t1ce", "t2", "flair")
# (suffix per canonical channel, segmentation suffix, separator) for each naming scheme.
_BRATS_SCHEMES = {
    "2023": ({"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}, "seg", "-"),
    "2018/2021": ({c: c for c in BRATS_CHANNELS}, "seg", "_"),
}
LGG_CHANNELS = ("pre-contrast", "flair", "post-contrast")
LIDC_MASK_KINDS = ("union", "intersection")
_LIDC_NAME = re.compile(r"^LIDC-IDRI-(\d+)_(\d+)_(\d+)$")
# A mask beside its image: ``<stem>_mask`` (LGG, BUSI), ``<stem>_mask_<n>`` for a further lesion (BUSI).
_MASK_STEM = re.compile(r"^(?P<image>.+)_mask(?:_(?P<n>\d+))?$", re.IGNORECASE)
# More subfolders than this, each with _mask files, are case folders (one per patient), not classes.
MAX_CLASS_FOLDERS = 10


@dataclass(frozen=True)
class LidcPolicy:
    """How mean radiologist malignancy ratings (1-5) become classes.

    The default is the usual one in the literature: mean <= 2 benign,
    mean >= 4 malignant, anything between is excluded (label ``None``).

    Args:
        benign_max: Highest mean rating still called benign.
        malignant_min: Lowest mean rating called malignant.
        mask: Which multi-reader mask to use: ``union`` or ``intersection``.
    """

    benign_max: float = 2.0
    malignant_min: float = 4.0
    mask: str = "union"

    def __post_init__(self) -> None:
        if not 1.0 <= self.benign_max < self.malignant_min <= 5.0:
            raise ValueError(f"LIDC policy needs 1 <= benign_max < malignant_min <= 5, got {self}")
        if self.mask not in LIDC_MASK_KINDS:
            raise ValueError(f"LIDC mask must be one of {LIDC_MASK_KINDS}, got {self.mask!r}")

    def classify(self, rating: float) -> str | None:
        """Return ``benign``, ``malignant`` or ``None`` (excluded) for a mean rating."""
        if rating <= self.benign_max:
            return "benign"
        if rating >= self.malignant_min:
            return "malignant"
        return None

    def describe(self) -> str:
        return (
            f"mean malignancy <= {self.benign_max:g} benign, >= {self.malignant_min:g} malignant, "
            f"between excluded; {self.mask} mask"
        )


class _Problems:
    """Raises at once in strict mode, collects otherwise."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: list[str] = []

    def add(self, path: Path | str, problem: str) -> None:
        error = DataError(path, problem)
        if self.strict:
            raise error
        self.items.append(str(error))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _visible_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _row(case_id, patient_id, layout, image, channels, mask=None, label=None, **extra) -> dict:
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


# --- BraTS -----------------------------------------------------------------


def _nifti(case_dir: Path, stem: str) -> Path:
    """``<stem>.nii.gz``, else ``<stem>.nii`` when only that exists (BraTS 2020 ships uncompressed volumes)."""
    packed = case_dir / f"{stem}.nii.gz"
    plain = case_dir / f"{stem}.nii"
    return plain if plain.exists() and not packed.exists() else packed


def _brats_naming(case_dir: Path) -> str | None:
    for scheme, (suffixes, _, sep) in _BRATS_SCHEMES.items():
        if _nifti(case_dir, f"{case_dir.name}{sep}{suffixes['flair']}").exists():
            return scheme
    return None


def _brats_year(case_id: str, scheme: str) -> str:
    if scheme == "2023":
        return "2023"
    lowered = case_id.lower()
    if lowered.startswith("brats18") or lowered.startswith("brats2018"):
        return "2018"
    if lowered.startswith("brats2021") or lowered.startswith("brats21"):
        return "2021"
    return "2018/2021"


def _scan_brats(root: Path, problems: _Problems, **_) -> list[dict]:
    rows = []
    for case_dir in _visible_dirs(root):
        scheme = _brats_naming(case_dir)
        if scheme is None:
            if any(case_dir.glob("*.nii*")):
                problems.add(case_dir, "no FLAIR volume in BraTS naming (_flair.nii[.gz] or -t2f.nii[.gz])")
            continue
        suffixes, seg_suffix, sep = _BRATS_SCHEMES[scheme]
        paths = {c: _nifti(case_dir, f"{case_dir.name}{sep}{suffixes[c]}") for c in BRATS_CHANNELS}
        missing = [c for c, p in paths.items() if not p.exists()]
        if missing:
            names = ", ".join(paths[c].name for c in missing)
            problems.add(case_dir, f"missing modality {', '.join(missing)} (expected {names})")
            continue
        seg = _nifti(case_dir, f"{case_dir.name}{sep}{seg_suffix}")
        rows.append(
            _row(
                case_dir.name,
                case_dir.name,
                "brats",
                paths.values(),
                BRATS_CHANNELS,
                mask=seg if seg.exists() else None,
                naming=_brats_year(case_dir.name, scheme),
                enhancing_label=3 if scheme == "2023" else 4,
            )
        )
    return rows


# --- Medical Segmentation Decathlon ---------------------------------------


def _scan_msd(root: Path, problems: _Problems, **_) -> list[dict]:
    spec_path = root / "dataset.json"
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(spec_path, f"cannot read the Decathlon dataset description: {exc}") from exc
    modalities = spec.get("modality") or {"0": "image"}
    channels = tuple(modalities[k] for k in sorted(modalities, key=int))
    entries = [(e, True) for e in spec.get("training", [])]
    entries += [({"image": e} if isinstance(e, str) else e, False) for e in spec.get("test", [])]
    rows = []
    for entry, labelled in entries:
        image = (root / entry["image"]).resolve()
        if not image.exists():
            problems.add(image, "listed in dataset.json but missing")
            continue
        mask = (root / entry["label"]).resolve() if labelled and entry.get("label") else None
        if mask is not None and not mask.exists():
            problems.add(mask, f"label of {image.name} listed in dataset.json but missing")
            mask = None
        case_id = image.name.split(".")[0]
        rows.append(_row(case_id, case_id, "msd", [image], channels, mask=mask))
    return rows


# --- LGG (Buda et al.) ----------------------------------------------------


def _lgg_patient(folder_name: str) -> str:
    # Folders are TCGA_<site>_<patient>_<scan date>; one patient may have several dates.
    parts = folder_name.split("_")
    return "_".join(parts[:3]) if len(parts) >= 4 and parts[0] == "TCGA" else folder_name


def _scan_lgg(root: Path, problems: _Problems, **_) -> list[dict]:
    rows = []
    for folder in _visible_dirs(root):
        files = {p.name: p for p in folder.iterdir() if _is_image(p)}
        for _, path in sorted(files.items()):
            if path.stem.endswith("_mask"):
                if path.name.replace("_mask", "") not in files:
                    problems.add(path, "mask without its image")
                continue
            mask = folder / f"{path.stem}_mask{path.suffix}"
            if not mask.exists():
                problems.add(path, f"slice without its mask (expected {mask.name})")
                continue
            index = path.stem.rsplit("_", 1)[-1]
            # LGG names slices after their folder; other case folders may all hold a "slice_1"
            case_id = path.stem if path.stem.startswith(f"{folder.name}_") else f"{folder.name}/{path.stem}"
            rows.append(
                _row(
                    case_id,
                    _lgg_patient(folder.name),
                    "lgg",
                    [path],
                    LGG_CHANNELS,
                    mask=mask,
                    slice_index=int(index) if index.isdigit() else -1,
                    study=folder.name,
                )
            )
    return rows


# --- class folders ---------------------------------------------------------


def _read_image_patients(path: Path) -> dict[str, str]:
    """``patients.csv`` of a class-folder set: image (path relative to the root, or file name) -> patient id."""
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


def _scan_image_folder(root: Path, problems: _Problems, **_) -> list[dict]:
    patients = _read_image_patients(root / "patients.csv")
    rows, unmapped = [], 0
    for class_dir in _visible_dirs(root):
        images, masks, orphans = _split_masks(sorted(p for p in class_dir.iterdir() if _is_image(p)))
        if not images:
            problems.add(class_dir, "class folder without images")
        for orphan in orphans:
            problems.add(orphan, "mask without its image")
        for path in images:
            case_id = f"{class_dir.name}/{path.name}"
            # Without patients.csv, each image is its own patient (slices of one patient can leak across folds).
            patient = patients.get(case_id, patients.get(path.name))
            unmapped += bool(patients) and patient is None
            mask = masks.get(path.stem)
            rows.append(
                _row(case_id, patient or case_id, "image-folder", [path], ("image",), mask=mask, label=class_dir.name)
            )
    if unmapped:
        problems.add(root / "patients.csv", f"{unmapped} image(s) not listed: each is its own patient")
    return rows


def _split_masks(files: list[Path]) -> tuple[list[Path], dict[str, Path], list[Path]]:
    """A class folder's images, the mask of each image that has one, and masks without their image.

    Masks sit beside their image as ``<stem>_mask`` (BUSI breast ultrasound), with ``_mask_1``,
    ``_mask_2`` for further lesions: a mask is never an image of the class. The mask kept for an
    image is ``_mask``, else its lowest-numbered one (classification ignores masks).
    """
    stems = {p.stem for p in files}
    images, found, orphans = [], {}, []
    for path in files:
        match = _MASK_STEM.match(path.stem)
        if match is None:
            images.append(path)
        elif match["image"] in stems:
            found.setdefault(match["image"], []).append((int(match["n"] or 0), path))
        else:
            orphans.append(path)
    return images, {stem: min(masks)[1] for stem, masks in found.items()}, orphans


def _masked_folders(subdirs: list[Path]) -> tuple[str, str] | None:
    """``lgg`` or ``image-folder`` (and why) for subfolders holding images with ``_mask`` files, else None.

    LGG case folders name their slices ``<folder>_<n>``; a few folders whose images are named
    otherwise (BUSI: ``benign/benign (1).png`` + ``benign (1)_mask.png``) are classes.
    """
    masked = [sub for sub in subdirs if any(_MASK_STEM.match(p.stem) for p in sub.iterdir() if _is_image(p))]
    if not masked:
        return None
    for sub in masked:
        if any(p.stem.startswith(f"{sub.name}_") for p in sub.iterdir() if _MASK_STEM.match(p.stem)):
            return "lgg", f"slices with _mask files in {sub.name}/"
    if len(subdirs) > MAX_CLASS_FOLDERS:
        return "lgg", f"{len(subdirs)} folders of images with _mask files: one case folder per patient"
    names = ", ".join(sub.name for sub in subdirs)
    return "image-folder", (
        f"class folders ({names}) of images with _mask files; if each folder is one patient, pass --layout lgg"
    )


# --- LIDC nodule crops ------------------------------------------------------


def _read_lidc_ratings(path: Path) -> dict[tuple[int, int, int], float]:
    ratings = {}
    with path.open(newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            try:
                patient, scan, nodule = int(row[1]), int(row[2]), int(row[3])
                ratings[(patient, scan, nodule)] = float(row[-1])
            except (IndexError, ValueError) as exc:
                raise DataError(path, f"line {line_no}: not a malignancy row ({exc})") from exc
    return ratings


def _scan_lidc(root: Path, problems: _Problems, lidc_policy: LidcPolicy | None = None, **_) -> list[dict]:
    policy = lidc_policy or LidcPolicy()
    ratings_path = root / "files" / "malignancy.csv"
    ratings = _read_lidc_ratings(ratings_path) if ratings_path.exists() else {}
    if not ratings:
        problems.add(ratings_path, "no malignancy ratings: nodules will be unlabelled")
    rows = []
    for path in sorted(p for p in root.iterdir() if _is_image(p)):
        match = _LIDC_NAME.match(path.stem)
        if match is None:
            continue  # a mask or another file
        patient, nodule, scan = (int(g) for g in match.groups())
        mask = path.with_name(f"{path.stem}_{policy.mask}{path.suffix}")
        if not mask.exists():
            problems.add(path, f"nodule crop without its {policy.mask} mask ({mask.name})")
            mask = None
        rating = ratings.get((patient, scan, nodule))
        if ratings and rating is None:
            problems.add(path, f"no malignancy rating for patient {patient}, scan {scan}, nodule {nodule}")
        rows.append(
            _row(
                path.stem,
                f"LIDC-IDRI-{patient:04d}",
                "lidc",
                [path],
                ("ct",),
                mask=mask,
                label=None if rating is None else policy.classify(rating),
                malignancy=rating,
                nodule=nodule,
                scan=scan,
            )
        )
    return rows


# --- DICOM trees -------------------------------------------------------------


def _scan_dicom(root: Path, problems: _Problems, **_) -> list[dict]:
    from tumorbench.data.dicom import find_dicom_series

    series = find_dicom_series(root)
    labels = _read_series_labels(root / "labels.csv")
    rows = []
    for uid, files in sorted(series.items(), key=lambda item: str(item[1][0])):
        series_dir = files[0].parent
        rel = series_dir.relative_to(root).as_posix()
        header = _dicom_identity(files[0])
        extra = labels.get(rel, {})
        mask = extra.get("mask")
        if mask is not None:
            mask = root / mask
            if not mask.exists():
                problems.add(mask, f"mask of series {rel} listed in labels.csv but missing")
                mask = None
        rows.append(
            _row(
                extra.get("case_id", rel),
                extra.get("patient_id") or header.get("patient_id") or rel,
                "dicom",
                [series_dir],
                (header.get("modality", "image").lower(),),
                mask=mask,
                label=extra.get("label") or None,
                series_uid=uid,
                n_slices=len(files),
            )
        )
    return rows


def _dicom_identity(path: Path) -> dict[str, str]:
    # Only the two tags a catalog needs; PatientID groups series for splitting.
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "Modality"])
    except Exception as exc:  # pydicom raises many types for damaged files
        raise DataError(path, f"unreadable DICOM header: {exc}") from exc
    return {"patient_id": str(ds.get("PatientID", "") or ""), "modality": str(ds.get("Modality", "") or "image")}


def _read_series_labels(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "series_dir" not in frame.columns:
        raise DataError(path, "labels file needs a series_dir column")
    return {row["series_dir"]: {k: v for k, v in row.items() if v != ""} for row in frame.to_dict("records")}


# --- detection ---------------------------------------------------------------


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in {".dcm", ".dicom"}:
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def detect_layout(root: str | Path) -> tuple[str, str]:
    """Guess a dataset root's layout.

    Returns:
        The layout name and the evidence it was chosen on.

    Raises:
        DataError: The folder is missing, empty, or fits no known layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a folder" if root.exists() else "no such folder")
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise DataError(root, "empty folder")
    if (root / "dataset.json").exists():
        return "msd", "dataset.json (Medical Segmentation Decathlon)"
    if (root / "files" / "malignancy.csv").exists() or any(_LIDC_NAME.match(p.stem) for p in entries):
        return "lidc", "LIDC-IDRI-<patient>_<nodule>_<scan> crops"
    subdirs = sorted(p for p in entries if p.is_dir())
    for sub in subdirs:
        if _brats_naming(sub):
            return "brats", f"BraTS naming in {sub.name}/"
    masked = _masked_folders(subdirs)
    if masked:
        return masked
    for path in root.rglob("*"):
        if path.is_file() and _looks_like_dicom(path):
            # Name no file: DICOM paths often carry patient names or IDs.
            return "dicom", "DICOM files (.dcm suffix or DICM preamble)"
    if subdirs and any(_is_image(p) for sub in subdirs for p in sub.iterdir()):
        return "image-folder", "one subfolder of images per class"
    raise DataError(root, f"cannot detect a layout (known: {', '.join(LAYOUTS)}); pass --layout{_one_down(subdirs)}")


def _one_down(subdirs: list[Path]) -> str:
    """A hint when the data sits one folder down (Kaggle sets: ``Training/`` and ``Testing/`` of class folders)."""
    found = []
    for sub in subdirs:
        try:
            found.append(f"{sub.name}/ is {detect_layout(sub)[0]}")
        except DataError:
            continue
    if not found:
        return ""
    return f"; one folder down, {', '.join(found)}: pass that folder as --data (a held-out one as --test)"


_SCANNERS: dict[str, Callable[..., list[dict]]] = {
    "brats": _scan_brats,
    "msd": _scan_msd,
    "lgg": _scan_lgg,
    "image-folder": _scan_image_folder,
    "lidc": _scan_lidc,
    "dicom": _scan_dicom,
}


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
        The catalog, with ``attrs`` ``root``, ``layout`` and ``layout_evidence``.

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
    problems = _Problems(strict)
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
        lidc_policy=(lidc_policy or LidcPolicy()).describe() if layout == "lidc" else None,
    )
    return frame.reset_index(drop=True)
