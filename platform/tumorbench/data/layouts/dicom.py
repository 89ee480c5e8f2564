"""``dicom``: a tree of DICOM series; labels, patients and masks from an optional ``labels.csv``."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from tumorbench.data.layouts.common import Problems, row
from tumorbench.errors import DataError


def scan(root: Path, problems: Problems, **_) -> list[dict]:
    from tumorbench.data.dicom import DICOMDIR_KIND, find_dicom_series, is_planar
    from tumorbench.data.dicom_multiframe import frame_count

    skipped: Counter = Counter()
    outlines: dict[str, list[Path]] = {}  # SEG / RTSTRUCT objects by the series they outline
    series = find_dicom_series(root, skipped, outlines)
    if any(kind != DICOMDIR_KIND for kind in skipped):
        kinds = ", ".join(f"{n} x {kind.removeprefix('a ')}" for kind, n in sorted(skipped.items()))
        problems.notes.append(f"skipped DICOM files that hold no image to read: {kinds}")
    _note_outlines(outlines, series, problems)
    labels = _read_series_labels(root / "labels.csv")
    rows, identified, unnamed = [], 0, 0
    shared = Counter(files[0].parent for files in series.values())  # a flat export: several series in one folder
    seen: Counter = Counter()
    for uid, files in sorted(series.items(), key=lambda item: str(item[1][0])):
        series_dir = files[0].parent
        rel = series_dir.relative_to(root).as_posix()
        seen[series_dir] += 1
        name = f"{rel}/series-{seen[series_dir]}" if shared[series_dir] > 1 else rel  # read by its series_uid
        header = _dicom_identity(files[0])
        identified += str(header.get("PatientIdentityRemoved", "")).upper() != "YES"
        extra = labels.get(rel, {})
        mask = _series_mask(root, rel, extra, outlines.get(uid, []), problems)
        patient = extra.get("patient_id") or str(header.get("PatientID", "") or "").strip()
        unnamed += not patient
        # several radiographs (a mammogram's four views) or ultrasound images in one series: each image a case
        several = len(files) > 1 and is_planar(1, header)
        views = [(f"{name}/image-{k}", [f]) for k, f in enumerate(files, 1)] if several else []
        for case_id, image in views or [(extra.get("case_id", name), [series_dir])]:
            rows.append(
                row(
                    case_id,
                    patient or rel.split("/")[0],  # no PatientID: the top folder, a patient's in most exports
                    "dicom",
                    image,
                    ((str(header.get("Modality", "") or "") or "image").lower(),),
                    mask=None if views else mask,  # a folder's mask is no one view's
                    label=extra.get("label") or None,
                    series_uid=uid,
                    n_slices=frame_count(header) if views or len(files) == 1 else len(files),  # enhanced: its frames
                    planar=several or is_planar(len(files), header),  # read as a 2D image
                )
            )
    if not labels:
        _note_lidc(root, {Path(r["image"][0]) for r in rows}, problems)
    if len({r["planar"] for r in rows}) > 1:
        problems.add(root, "series mix planar images (radiographs, ultrasound: 2D) and volumes: one study takes one")
    _note_folders_and_patients(rows, sum(n > 1 for n in shared.values()), unnamed, problems)
    if identified and os.environ.get(KEEP_IDENTIFIERS_ENV) != "1":
        problems.add(root, identified_problem(identified, len(rows)))
    return rows


def _series_mask(root: Path, rel: str, extra: dict, outlines: list[Path], problems: Problems) -> Path | None:
    """The series' mask: the one ``labels.csv`` names, else the first SEG / RTSTRUCT outlining it."""
    if extra.get("mask") is None:
        return sorted(outlines)[0] if outlines else None
    mask = root / extra["mask"]
    if not mask.exists():
        problems.add(mask, f"mask of series {rel} listed in labels.csv but missing")
        return None
    return mask


# Set to 1 where the results stay where the identifiers may be (inside the hospital): raw DICOM is then read as it is
KEEP_IDENTIFIERS_ENV = "TUMORBENCH_KEEP_IDENTIFIERS"


def identified_problem(identified: int, series: int) -> str:
    """Why series not marked de-identified are refused: their PatientID and folder names would be in the results."""
    return (
        f"{identified} of {series} series not marked de-identified (PatientIdentityRemoved is not YES): their "
        "PatientID and folder names would be written into splits, predictions and the report. Run `tumorbench "
        f"data deid` on this folder first (docs/data.md), or set {KEEP_IDENTIFIERS_ENV}=1 where the results stay "
        "inside the hospital"
    )


def _note_folders_and_patients(rows: list[dict], shared: int, unnamed: int, problems: Problems) -> None:
    """Say when cases or the folds' patients are a guess: folders of several series, series without a PatientID,
    or one PatientID for every series."""
    if shared:
        problems.notes.append(
            f"{shared} folder(s) holding several series: each series a case (<folder>/series-<k>, in file order), "
            "which labels.csv cannot tell apart; `tumorbench data deid` writes one folder per series"
        )
    if unnamed:
        problems.notes.append(
            f"{unnamed} series without a PatientID: each grouped with the series under the same top folder as one "
            "patient; give patient_id in labels.csv if the top folders are not patients"
        )
    if len(rows) > 1 and len({r["patient_id"] for r in rows}) == 1:
        problems.notes.append(
            f"all {len(rows)} series carry the same PatientID (an export that blanked it?): one patient for the "
            "folds; give patient_id in labels.csv if they are several patients"
        )


def _note_lidc(root: Path, folders: set[Path], problems: Problems) -> None:
    """Point to ``data lidc-idri`` when LIDC-IDRI's reading XML lies beside the series (its nodules are not read
    here); one XML's first bytes per series folder are looked at."""
    found = 0
    for folder in folders:
        for xml in sorted(folder.glob("*.xml"))[:1]:
            with open(xml, "rb") as handle:
                found += b"LidcReadMessage" in handle.read(4096)
    if found:
        problems.notes.append(
            f"{found} series with LIDC-IDRI's reading XML beside it: its nodules are read by `tumorbench data "
            f"lidc-idri {root} --out DIR` (nodule crops with malignancy; --volumes for 3D masks), not here"
        )


def _note_outlines(outlines: dict[str, list[Path]], series: dict[str, list[Path]], problems: Problems) -> None:
    """Say how many SEG / RTSTRUCT objects became masks; one whose series is not here is a problem."""
    used = sum(len(files) for uid, files in outlines.items() if uid in series)
    if used:
        several = sum(len(files) > 1 for uid, files in outlines.items() if uid in series)
        extra = f"; {several} series with several, the first by file name used" if several else ""
        problems.notes.append(f"{used} DICOM SEG / RTSTRUCT object(s) read as the masks of their series{extra}")
    for uid, files in outlines.items():
        if uid not in series:  # name the file only: its series UID would identify the study
            problems.add(files[0], "a SEG / RTSTRUCT whose image series is not in the dataset")


def _dicom_identity(path: Path) -> Any:
    # Only the tags a catalog needs: PatientID groups series for splitting (PatientIdentityRemoved says whether it is
    # a pseudonym); Modality and orientation say 2D or 3D.
    import pydicom

    try:
        tags = ["PatientID", "PatientIdentityRemoved", "Modality", "ImageOrientationPatient", "NumberOfFrames"]
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
    except Exception as exc:  # pydicom raises many types for damaged files
        raise DataError(path, f"unreadable DICOM header: {exc}") from exc


def _read_series_labels(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "series_dir" not in frame.columns:
        raise DataError(path, "labels file needs a series_dir column")
    return {row["series_dir"]: {k: v for k, v in row.items() if v != ""} for row in frame.to_dict("records")}


def labels_from_folders(root: Path, label_level: int = 1, patient_level: int | None = None) -> pd.DataFrame:
    """``series_dir`` and ``label`` (and ``patient_id``) of every series under ``root``, from its folders: the
    label is the ``label_level``-th folder of the series' path (1: its top folder, ``benign/case7/...`` ->
    ``benign``), the patient the ``patient_level``-th; for a tree of DICOM series kept in class folders."""
    from tumorbench.data.dicom import find_dicom_series
    from tumorbench.data.layouts.labels_csv import path_levels

    root = Path(root)
    series = []
    for files in find_dicom_series(root).values():
        rel = files[0].parent.relative_to(root)
        if not rel.parts:
            raise DataError(files[0].parent, "a series at the root itself: no class folder above it")
        series.append(rel)
    levels = path_levels(root, [rel.parts for rel in series], label_level, patient_level, "series")
    rows = [
        {"series_dir": rel.as_posix(), "label": label} | ({"patient_id": patient} if patient_level else {})
        for rel, (label, patient) in zip(series, levels)
    ]
    if not rows:
        raise DataError(root, "no DICOM series found")
    return pd.DataFrame(rows).sort_values("series_dir", ignore_index=True)
