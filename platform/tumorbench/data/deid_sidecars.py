"""The non-DICOM files a de-identified DICOM tree needs: ``labels.csv`` and the masks it names.

``labels.csv`` (the ``dicom`` layout's sidecar) is carried over rewritten, never copied as is:

- ``series_dir`` and ``mask`` follow the series to its new folder (unchanged with ``--keep-paths``);
- ``patient_id`` values must be the series' original PatientIDs; each becomes the run's pseudonym.
  A value that cannot be mapped (a name, an ID from another system) is refused: it may identify
  someone, and keeping it would also undo the pseudonyms;
- ``case_id`` is dropped (it usually repeats the patient's folder or ID); cases are then named after
  their series folder;
- any other cell that contains an original PatientID or PatientName is refused.

Masks keep their voxels and NIfTI header byte for byte; a gzip container is rewritten without its
stored file name and time (gzip keeps the original file name, which often carries the patient ID).
Every other non-DICOM file is left behind: free-form files cannot be checked for identity.
Refusals name the file, row and column, never the value. ``check_sidecars`` runs before any file is
written, so a refused run writes nothing.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from tumorbench.errors import DataError

LABELS = "labels.csv"
DROPPED = ("case_id",)


@dataclass
class SidecarPlan:
    """What ``check_sidecars`` found: the labels rows and, per source series folder, its original identity."""

    rows: list[dict[str, str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    identity: dict[str, tuple[str, str]] = field(default_factory=dict)  # series folder -> (PatientID, PatientName)


def _identity(src: Path, dicom: list[Path]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for path in dicom:
        rel = path.parent.relative_to(src).as_posix()
        if rel not in out:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                out[rel] = (str(ds.get("PatientID", "") or ""), str(ds.get("PatientName", "") or ""))
            except Exception:  # an unreadable file is reported by the DICOM pass
                continue
    return out


def _tokens(identity: dict[str, tuple[str, str]]) -> set[str]:
    """Original identifiers to look for: IDs, full names and name parts of 3+ characters."""
    found = set()
    for pid, name in identity.values():
        found |= {pid} | {name} | {part for part in name.replace("^", " ").split() if len(part) >= 3}
    return {token.lower() for token in found if token}


def check_sidecars(src: Path, dicom: list[Path]) -> SidecarPlan | None:
    """Read and check ``src/labels.csv`` before anything is written; None when there is none.

    Raises:
        DataError: a row names no series folder, a patient value is not a series' PatientID,
            another cell carries an original identifier, or a mask is missing.
    """
    path = src / LABELS
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        plan = SidecarPlan(rows=[dict(r) for r in reader], columns=list(reader.fieldnames or []))
    if "series_dir" not in plan.columns:
        raise DataError(path, "labels file needs a series_dir column to be carried over; remove it or add the column")
    plan.identity = _identity(src, dicom)
    originals = {pid for pid, _ in plan.identity.values() if pid}
    tokens = _tokens(plan.identity)
    for number, row in enumerate(plan.rows, start=2):  # line 1 is the header
        where = f"row {number}"
        if row.get("series_dir", "") not in plan.identity:
            raise DataError(path, f"{where}: series_dir is not a folder of DICOM files under the source")
        if row.get("patient_id") and row["patient_id"] not in originals:
            raise DataError(
                path,
                f"{where}: patient_id is not the PatientID of any series, so it cannot be mapped to a pseudonym; "
                "remove the column or use the headers' PatientIDs",
            )
        if row.get("mask") and not (src / row["mask"]).is_file():
            raise DataError(path, f"{where}: the mask it names is missing")
        for column, value in row.items():
            if column in ("series_dir", "mask", "patient_id", *DROPPED) or not value:
                continue
            if any(token in value.lower() for token in tokens):
                raise DataError(path, f"{where}, column {column}: holds an original patient ID or name; remove it")
    return plan


def _copy_mask(source: Path, target: Path, tokens: set[str]) -> None:
    """Copy a mask; a .gz is re-packed without its stored name; refuse one whose bytes hold an identifier."""
    data = source.read_bytes()
    raw = gzip.decompress(data) if source.name.endswith(".gz") else data
    if any(token.encode() in raw.lower() for token in tokens):
        raise DataError(source, "mask header holds an original patient ID or name (NIfTI descrip or aux_file?)")
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.name.endswith(".gz"):
        with open(target, "wb") as handle, gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as gz:
            gz.write(raw)
    else:
        target.write_bytes(raw)


def _mask_name(series_dir: str, mask: str) -> str:
    suffix = "".join(Path(mask).suffixes[-2:]) if mask.endswith(".gz") else Path(mask).suffix
    return f"{series_dir}_mask{suffix}"


def carry_sidecars(plan: SidecarPlan, src: Path, dst: Path, moves: dict[str, tuple[str, str]], keep_paths: bool) -> int:
    """Write ``dst/labels.csv`` and its masks; ``moves``: source series folder -> (new folder, new PatientID).

    Returns:
        The number of mask files carried over.
    """
    pseudonym = {plan.identity[folder][0]: new_pid for folder, (_, new_pid) in moves.items() if folder in plan.identity}
    tokens = _tokens(plan.identity)
    columns = [c for c in plan.columns if c not in DROPPED]
    rows, masks = [], {}  # source mask -> its path under dst
    for number, row in enumerate(plan.rows, start=2):
        if row["series_dir"] not in moves:  # every file of the series was skipped
            raise DataError(src / LABELS, f"row {number}: its series was not written, so the row cannot be carried")
        new_dir = row["series_dir"] if keep_paths else moves[row["series_dir"]][0]
        out = {c: row.get(c, "") for c in columns} | {"series_dir": new_dir}
        if row.get("patient_id"):
            if row["patient_id"] not in pseudonym:
                raise DataError(src / LABELS, f"row {number}: no series of its patient was written")
            out["patient_id"] = pseudonym[row["patient_id"]]
        if row.get("mask") and row["mask"] not in masks:  # rows may share a mask: copied once
            masks[row["mask"]] = row["mask"] if keep_paths else _mask_name(new_dir, row["mask"])
            _copy_mask(src / row["mask"], dst / masks[row["mask"]], tokens)
        if row.get("mask"):
            out["mask"] = masks[row["mask"]]
        rows.append(out)
    with open(dst / LABELS, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return len(masks)
