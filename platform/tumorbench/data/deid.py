"""De-identification of DICOM trees after the DICOM PS3.15 Annex E Basic Application Confidentiality Profile.

The elements the profile removes (X) or empties (Z) are handled here: free-text comments
and descriptions, institution, device and physician identifiers, other patient IDs and names,
private tags, overlays and icons; dates are emptied, or shifted by a consistent per-patient
number of days (the Retain Longitudinal Temporal Information with Modified Dates option).
`dicognito <https://github.com/blairconrad/dicognito>`_ does the rest: every instance UID
(file meta and references inside sequences too) and the patient name and IDs are replaced by
values derived from the run's secret seed, so one run keeps patients, studies, series and
references together. Pixel data is never touched: burned-in text cannot be removed from the
header, so images likely to carry it are listed for review instead.

``identifying_tags`` is the check behind ``--require-deid``: it names the tags (never
their values) that a de-identified file must not carry.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from dicognito.anonymizer import Anonymizer
from dicognito.element_anonymizer import ElementAnonymizer
from dicognito.randomizer import Randomizer
from pydicom.dataset import Dataset

from tumorbench.data.deid_profile import EMPTIED, FREE_TEXT, PROJECTION_OR_CAPTURE, PSEUDONYMS, REMOVED
from tumorbench.data.deid_sidecars import carry_sidecars, check_sidecars
from tumorbench.errors import DataError

CHANGES_CSV = "deid_changes.csv"
CSV_COLUMNS = ["file", "status", "removed", "emptied", "replaced", "added", "review"]

_MIN_SHIFT_DAYS, _MAX_SHIFT_DAYS = 62, 730


@dataclass(frozen=True)
class DeidConfig:
    """How a tree is de-identified.

    Args:
        date_shift: Shift dates by a consistent per-patient number of days (62-730 back)
            instead of emptying them; times are then kept.
        seed: Secret that determines UIDs, pseudonyms and shifts (same seed, same output);
            None draws a random one, so a run cannot be linked to another.
        keep_paths: Write each file at its source-relative path; otherwise at
            ``<patient>/<study>/<series>/<instance>.dcm`` built from the new values, as
            folder and file names often carry names or IDs.
        overwrite: Write into a non-empty destination.
    """

    date_shift: bool = False
    seed: str | None = None
    keep_paths: bool = False
    overwrite: bool = False


@dataclass
class DeidReport:
    """What a run did: files written, skipped (with why), listed for burned-in text review."""

    written: int = 0
    ignored: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    review: list[tuple[str, str]] = field(default_factory=list)
    changes_csv: Path | None = None
    tag_counts: dict[str, int] = field(default_factory=dict)
    masks: int | None = None  # masks carried with labels.csv; None: no labels.csv


class _BasicProfile(ElementAnonymizer):
    """The Annex E removals and dates; runs before dicognito's handlers, which never see what it handles."""

    def __init__(self, shift_days: int | None) -> None:
        self.shift_days = shift_days

    def __call__(self, dataset: Dataset, element: pydicom.DataElement) -> bool:
        keyword = element.keyword
        if element.tag.is_private or keyword in REMOVED or _free_text(element):
            del dataset[element.tag]
            return True
        if keyword in EMPTIED or (element.VR == "PN" and keyword not in PSEUDONYMS):
            element.value = ""
            return True
        if element.VR in ("DA", "DT", "TM"):
            element.value = self._date(element)
            return True
        return False

    def _date(self, element: pydicom.DataElement) -> Any:
        if self.shift_days is None or not element.value:
            return ""
        if element.VR == "TM":
            return element.value
        values = element.value if isinstance(element.value, (list, pydicom.multival.MultiValue)) else [element.value]
        shifted = [_shift(str(v), self.shift_days) for v in values]
        return shifted if len(shifted) > 1 else shifted[0]

    def describe_actions(self) -> Iterator[str]:
        yield "Remove private tags and the Annex E X elements; empty Z elements, other person names and dates"


def _free_text(element: pydicom.DataElement) -> bool:
    return element.VR in ("LO", "LT", "ST", "UT", "SH") and bool(FREE_TEXT.search(element.keyword or ""))


def _shift(value: str, days: int) -> str:
    try:
        day = dt.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return ""  # a malformed date cannot be shifted; an empty one identifies nobody
    return (day + dt.timedelta(days=days)).strftime("%Y%m%d") + value[8:]


def shift_days(seed: str, patient_id: str) -> int:
    """The per-patient date shift in days (negative: dates move back) for a seed."""
    span = _MAX_SHIFT_DAYS - _MIN_SHIFT_DAYS
    return -(Randomizer(seed).to_int(f"date-shift/{patient_id}") % span + _MIN_SHIFT_DAYS)


def burned_in_reason(ds: Dataset) -> str | None:
    """Why an image may carry burned-in text (then it needs a look), or None."""
    flag = str(ds.get("BurnedInAnnotation", "") or "").upper()
    if flag == "YES":
        return "BurnedInAnnotation=YES"
    if flag == "NO":
        return None
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in PROJECTION_OR_CAPTURE:
        return f"modality {modality}"
    if str(ds.get("SOPClassUID", "")).startswith("1.2.840.10008.5.1.4.1.1.7"):
        return "secondary capture"
    return None


def identifying_tags(ds: Dataset) -> list[str]:
    """Keywords (never values) of the identifying elements a de-identified dataset still carries.

    Private tags, any non-empty element the profile removes or empties, other person names,
    and pseudonym elements unless ``PatientIdentityRemoved`` is YES.
    """
    found: set[str] = set()
    trusted = str(ds.get("PatientIdentityRemoved", "")).upper() == "YES"

    def visit(dataset: Dataset, element: pydicom.DataElement) -> None:
        keyword = element.keyword
        if element.tag.is_private:
            found.add("private tags")
        elif element.value in (None, "", b"") or (element.VR == "SQ" and not len(element.value)):
            return
        elif (
            keyword in REMOVED
            or keyword in EMPTIED
            or _free_text(element)
            or (element.VR == "PN" and keyword not in PSEUDONYMS)
            or (keyword in PSEUDONYMS and not trusted)
        ):
            found.add(keyword)

    ds.walk(visit)
    if not trusted:
        found.add("PatientIdentityRemoved (not YES)")
    return sorted(found)


def _dicom_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        yield from (p for p in candidates if _has_dicm(p))


def deid_problems(images: Iterable[Iterable[str | Path]]) -> list[str]:
    """One problem per DICOM file (in cases' image paths) that still carries identifying tags, naming the tags.

    NIfTI and 2D image files carry no DICOM header and pass.
    """
    problems = []
    for paths in images:
        for path in _dicom_files([paths] if isinstance(paths, (str, Path)) else paths):
            try:
                tags = identifying_tags(pydicom.dcmread(path, stop_before_pixels=True))
            except Exception as exc:  # damaged headers raise many types
                problems.append(str(DataError(path, f"unreadable DICOM header ({type(exc).__name__})")))
                continue
            if tags:
                problems.append(str(DataError(path, f"not de-identified: carries {', '.join(tags)}")))
    return problems


def require_deidentified(images: Iterable[Iterable[str | Path]], label: str | Path) -> None:
    """Raise :class:`DataError` when any DICOM file of the cases is not de-identified (``--require-deid``)."""
    problems = deid_problems(images)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(label, f"de-identified input required; {problems[0]}{more}. Run `tumorbench data deid` first")


def _flatten(ds: Dataset, prefix: str = "") -> dict[str, Any]:
    """Element path (``Seq[0].Keyword``) -> value, through every sequence item."""
    out: dict[str, Any] = {}
    for element in ds:
        key = prefix + (element.keyword or f"({element.tag.group:04X},{element.tag.element:04X})")
        if element.VR == "SQ":
            out[key] = len(element.value)
            for index, item in enumerate(element.value):
                out.update(_flatten(item, f"{key}[{index}]."))
        else:
            out[key] = element.value
    return out


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[str]]:
    """Per kind, the changed element paths without item indices; never the values."""
    kinds: dict[str, set[str]] = {"removed": set(), "emptied": set(), "replaced": set(), "added": set()}

    def inside_removed(key: str) -> bool:  # items of a removed sequence are covered by the sequence
        return any(key[: m.start()] not in after for m in re.finditer(r"\[", key))

    for key, value in before.items():
        if key not in after:
            if not inside_removed(key):
                kinds["removed"].add(key)
        elif after[key] != value:
            kinds["emptied" if after[key] in ("", None) else "replaced"].add(key)
    kinds["added"] = {key for key in after if key not in before}
    return {kind: sorted({re.sub(r"\[\d+\]", "", k) for k in keys}) for kind, keys in kinds.items()}


def _add_method(ds: Dataset, shifted: bool, review: str | None) -> None:
    codes = [("113100", "Basic Application Confidentiality Profile")]
    if shifted:
        codes.append(("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if shifted else "REMOVED"
    # Header identity is gone; pixels may still show text until someone has looked at them.
    ds.PatientIdentityRemoved = "NO" if review else "YES"


def deidentify_dataset(ds: Dataset, seed: str, *, date_shift: bool = False) -> dict[str, list[str]]:
    """De-identify one dataset in place with the run's seed; return the changed keywords per kind."""
    before = _flatten(ds.file_meta) | _flatten(ds)
    patient = str(ds.get("PatientID", "") or "")
    anonymizer = Anonymizer(seed=seed)
    anonymizer.add_element_handler(_BasicProfile(shift_days(seed, patient) if date_shift else None))
    ds.remove_private_tags()
    anonymizer.anonymize(ds)
    ds.preamble = b"\0" * 128  # free-form bytes of the source (a TIFF header, say) are not kept
    _add_method(ds, date_shift, burned_in_reason(ds))
    return _changes(before, _flatten(ds.file_meta) | _flatten(ds))


def _has_dicm(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _safe(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(value)) or "unknown"


def _target(dst: Path, rel: Path, ds: Dataset, keep_paths: bool) -> Path:
    if keep_paths:
        return dst / rel
    parts = (ds.get("PatientID", ""), ds.get("StudyInstanceUID", ""), ds.get("SeriesInstanceUID", ""))
    return dst.joinpath(*(_safe(p) for p in parts)) / f"{_safe(ds.get('SOPInstanceUID', 'instance'))}.dcm"


def _read(path: Path) -> Dataset:
    """Read a whole file; pydicom stops quietly at a cut-off, so check that an image is complete."""
    ds = pydicom.dcmread(path)
    if len(ds):
        last = ds.get_item(max(ds.keys()))  # still raw: its declared length is known
        if last.value is not None and last.length != 0xFFFFFFFF and len(last.value) < last.length:
            raise ValueError(f"the file ends inside element {last.tag} (truncated file)")
    sop_class = ds.get("SOPClassUID")
    if sop_class is None:
        raise ValueError("no SOPClassUID (truncated or incomplete file?)")
    if "Image Storage" not in getattr(sop_class, "name", ""):
        return ds
    if "Rows" not in ds or "PixelData" not in ds:
        raise ValueError("image without Rows or pixel data (truncated file?)")
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1))
        expected = ds.Rows * ds.Columns * frames * samples * int(ds.BitsAllocated) // 8
        if len(ds.PixelData) < expected:
            raise ValueError(f"pixel data has {len(ds.PixelData)} bytes, expected {expected} (truncated file?)")
    return ds


def _check_dirs(src: Path, dst: Path, overwrite: bool) -> None:
    if not src.is_dir():
        raise DataError(src, "no such folder" if not src.exists() else "not a folder")
    src_r, dst_r = src.resolve(), dst.resolve()
    if dst_r == src_r or src_r in dst_r.parents or dst_r in src_r.parents:
        raise DataError(dst, "destination must be outside the source folder (and not contain it)")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise DataError(dst, "destination is not empty (pass --overwrite)")


def deidentify_tree(src: str | Path, dst: str | Path, config: DeidConfig = DeidConfig()) -> DeidReport:
    """De-identify every DICOM file under ``src`` into ``dst``; ``src`` is only read.

    Files without the DICM preamble are ignored, except ``labels.csv`` and the masks it names, which are
    carried over without identifiers (``deid_sidecars``); a DICOM file that cannot be read is
    reported in ``skipped`` and the others are still written. ``dst/deid_changes.csv``
    lists per written file the changed tag keywords and any burned-in text review reason.

    Raises:
        DataError: ``src`` is missing or holds no DICOM file, ``dst`` is inside it or not empty.
    """
    src, dst = Path(src), Path(dst)
    _check_dirs(src, dst, config.overwrite)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    dicom = [p for p in files if _has_dicm(p)]
    if not dicom:
        raise DataError(src, f"no DICOM files found (looked at {len(files)} files for the DICM preamble)")
    sidecars = check_sidecars(src, dicom)  # refuses before anything is written
    seed = config.seed if config.seed is not None else os.urandom(16).hex()
    report, rows, moves = DeidReport(ignored=len(files) - len(dicom)), [], {}
    for n, path in enumerate(dicom):
        rel = path.relative_to(src)
        try:
            ds = _read(path)
            changes = deidentify_dataset(ds, seed, date_shift=config.date_shift)
            target = _target(dst, rel, ds, config.keep_paths)
            target.parent.mkdir(parents=True, exist_ok=True)
            pydicom.dcmwrite(target, ds, enforce_file_format=True)
            moves[rel.parent.as_posix()] = (target.parent.relative_to(dst).as_posix(), str(ds.get("PatientID", "")))
        except Exception as exc:  # damaged files raise many types; one must not stop the run
            report.skipped.append((rel.as_posix(), f"{type(exc).__name__}: {exc}"))
            rows.append({"file": f"(source file {n + 1}, not written)", "status": "skipped"})
            continue
        reason = burned_in_reason(ds) or ""
        out_rel = target.relative_to(dst).as_posix()
        if reason:
            report.review.append((out_rel, reason))
        report.written += 1
        for kind in ("removed", "emptied", "replaced", "added"):
            for name in changes[kind]:
                report.tag_counts[f"{kind} {name}"] = report.tag_counts.get(f"{kind} {name}", 0) + 1
        rows.append(
            {
                "file": out_rel,
                "status": "written",
                "review": reason,
                **{kind: ";".join(names) for kind, names in changes.items()},
            }
        )
    report.changes_csv = dst / CHANGES_CSV
    dst.mkdir(parents=True, exist_ok=True)
    if sidecars is not None:
        report.masks = carry_sidecars(sidecars, src, dst, moves, config.keep_paths)
        report.ignored -= 1 + report.masks
    with open(report.changes_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return report


def format_report(report: DeidReport) -> str:
    """Text summary of a run: counts, the most common changes, skipped files and the review list."""
    lines = [
        (
            f"written {report.written} DICOM files, skipped {len(report.skipped)}, "
            f"ignored {report.ignored} non-DICOM files; changes per file: {report.changes_csv}"
        )
    ]
    if report.masks is not None:
        lines.append(f"carried over labels.csv (patient IDs replaced, case_id dropped) and {report.masks} masks")
    for name, count in sorted(report.tag_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:40]:
        lines.append(f"  {count:6d} x {name}")
    lines += [f"skipped {rel}: {why}" for rel, why in report.skipped]
    if report.review:
        lines.append(f"{len(report.review)} images may carry burned-in text; review them before sharing:")
        lines += [f"  {rel} ({why})" for rel, why in report.review]
    return "\n".join(lines)
