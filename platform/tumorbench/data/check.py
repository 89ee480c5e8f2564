"""Dataset checks: read every case once, summarize it and collect every problem.

``check_dataset`` never stops at the first bad file: each problem (a corrupt
image, an image/mask shape mismatch, a missing modality) is recorded with its
path, and the summary still covers every usable case.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tumorbench.data import io
from tumorbench.data.catalog import LidcPolicy, scan
from tumorbench.data.image import mask_grid_problem
from tumorbench.data.near_duplicates import MAX_DISTANCE, find_near_duplicates
from tumorbench.data.splits import find_duplicates
from tumorbench.errors import DataError

_MAX_LISTED = 10  # per-case lines in the text report; --json has them all


@dataclass
class CaseInfo:
    """What reading one case found."""

    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    orientation: str | None = None
    n_channels: int | None = None
    has_tumor: bool | None = None
    mask_labels: tuple[int, ...] = ()
    problems: list[str] = field(default_factory=list)


def _spatial(image: io.ImageData) -> tuple[tuple[int, ...], int]:
    """Spatial shape and channel count of a read image (2D images are channel-first)."""
    if image.meta.get("format") == "image2d":
        return tuple(image.array.shape[1:]), image.array.shape[0]
    return tuple(image.array.shape[:3]), (image.array.shape[3] if image.array.ndim == 4 else 1)


def inspect_case(row: dict[str, Any]) -> CaseInfo:
    """Read a case's images and mask; record shapes, spacing, tumor presence and problems."""
    info = CaseInfo()
    channels, first = 0, None
    for path in row["image"]:
        try:
            image = io.read_image(path)
        except DataError as exc:
            info.problems.append(str(exc))
            continue
        shape, n = _spatial(image)
        channels += n
        if info.shape is None:
            info.shape, info.spacing = shape, tuple(round(float(s), 3) for s in image.spacing)
            info.orientation, first = image.meta.get("orientation"), image
        elif shape != info.shape:
            info.problems.append(
                str(DataError(path, f"shape {shape} differs from the case's first image {info.shape}"))
            )
        if not np.isfinite(image.array).all():
            info.problems.append(str(DataError(path, "contains NaN or infinite values")))
    info.n_channels = channels or None
    mask_path = row.get("mask")
    if isinstance(mask_path, str):
        try:
            mask = io.read_image(mask_path)
        except DataError as exc:
            info.problems.append(str(exc))
            return info
        problem = mask_grid_problem(first, mask) if first is not None else None
        if problem is not None:
            info.problems.append(str(DataError(mask_path, problem)))
        values = np.unique(mask.array)
        info.mask_labels = tuple(int(v) for v in values[:32])
        info.has_tumor = bool((values > 0).any())
    return info


def inspect_cases(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-case :class:`CaseInfo` as a DataFrame indexed like ``frame`` (a progress bar on stderr for large sets)."""
    from tqdm import tqdm

    rows = tqdm(
        frame.to_dict("records"),
        desc="reading cases",
        unit="case",
        leave=False,
        disable=len(frame) < PROGRESS_MIN_CASES,
        mininterval=2.0,
    )
    return pd.DataFrame([asdict(inspect_case(row)) for row in rows], index=frame.index)


def add_tumor_presence(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the catalog with a ``has_tumor`` column read from the masks (``None`` without mask)."""
    infos = inspect_cases(frame)
    return frame.assign(has_tumor=infos["has_tumor"].to_numpy())


PROGRESS_MIN_CASES = 200  # below this a check takes seconds: no bar


def _count(values) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(Counter(values).items(), key=lambda kv: (-kv[1], str(kv[0])))}


def _layout_details(frame: pd.DataFrame, infos: pd.DataFrame) -> dict[str, Any]:
    layout = frame.attrs["layout"]
    details: dict[str, Any] = {}
    if layout == "brats":
        details["cases"] = [
            {
                "case_id": r.case_id,
                "naming": r.naming,
                "labelled": isinstance(r.mask, str),
                "mask_labels": list(infos.loc[i, "mask_labels"]),
            }
            for i, r in zip(frame.index, frame.itertuples())
        ]
    if layout == "lgg":
        details["slices_per_patient"] = _count(frame["patient_id"])
    if layout == "lidc":
        details["malignancy_policy"] = frame.attrs.get("lidc_policy")
    listed = layout != "csv" and (Path(frame.attrs["root"]) / "patients.csv").exists()  # one scan per patient
    if layout in ("image-folder", "paired", "csv") and frame["patient_id"].nunique() == len(frame) and not listed:
        how = "a patient_id column in the CSV" if layout == "csv" else "patients.csv"
        details["patients_note"] = (
            "each image is its own patient: images of one patient can fall into different "
            f"folds; map images to patients with {how} (docs/data.md)"
        )
    return details


def check_dataset(
    root: str | Path,
    layout: str = "auto",
    *,
    lidc_policy: LidcPolicy | None = None,
    duplicates: bool = True,
    require_deid: bool = False,
    fingerprint: bool = True,
) -> dict[str, Any]:
    """Scan and read a whole dataset; summarize it and list every problem.

    Returns:
        A JSON-serializable report: layout (and why), case and patient counts,
        channels, shapes, spacings, labels, tumor presence, duplicate groups,
        layout details, the dataset ``fingerprint`` (:mod:`tumorbench.data.fingerprint`, sampled
        on large sets) and ``problems`` (empty when the dataset is clean; with ``require_deid``
        also every DICOM file that still carries identifying tags).

    Raises:
        DataError: The root is missing, empty or fits no layout (nothing to check).
    """
    frame = scan(root, layout, strict=False, lidc_policy=lidc_policy)
    infos = inspect_cases(frame)
    problems = list(frame.attrs["problems"]) + [p for ps in infos["problems"] for p in ps]
    if require_deid:  # DICOM files still carrying identifying tags (named, never their values)
        from tumorbench.data.deid import deid_problems

        problems += deid_problems(frame["image"])
    with_mask = frame["mask"].map(lambda m: isinstance(m, str))
    tumor = infos.loc[with_mask, "has_tumor"].dropna().astype(bool)
    report = {
        "root": frame.attrs["root"],
        "layout": frame.attrs["layout"],
        "layout_evidence": frame.attrs["layout_evidence"],
        "cases": int(len(frame)),
        "patients": int(frame["patient_id"].nunique()),
        "channels": _count(" + ".join(c) for c in frame["channels"]),
        "channel_counts": _count(int(n) for n in infos["n_channels"].dropna()),
        "shapes": _count("x".join(map(str, s)) for s in infos["shape"].dropna()),
        "spacings": _count("x".join(f"{v:g}" for v in s) for s in infos["spacing"].dropna()),
        "orientations": _count(infos["orientation"].dropna()),
        "labels": _count("(none)" if not isinstance(v, str) else v for v in frame["label"]),
        "with_mask": int(with_mask.sum()),
        "with_tumor": int(tumor.sum()),
        "tumor_fraction": float(tumor.mean()) if len(tumor) else None,
        "duplicate_groups": find_duplicates(frame) if duplicates else None,
        "near_duplicate_groups": find_near_duplicates(frame, strict=False) if duplicates else None,
        "details": _layout_details(frame, infos),
        "notes": list(frame.attrs.get("notes", [])),
        "problems": problems,
    }
    if fingerprint:
        report["fingerprint"] = _fingerprint(frame, report["duplicate_groups"])
    return report


def _fingerprint(frame: pd.DataFrame, groups: list[list[str]] | None) -> dict[str, Any] | None:
    from tumorbench.data.fingerprint import FingerprintConfig, compute_fingerprint

    try:
        fp = compute_fingerprint(frame, FingerprintConfig(hash_duplicates=False))
    except DataError:
        return None  # every sampled case unreadable: the problems list says why
    if groups is not None:  # the duplicate search above already hashed every file
        fp["duplicates"] |= {
            "method": "sha256 of the image bytes",
            "groups": len(groups),
            "redundant_copies": sum(len(g) - 1 for g in groups),
        }
    return fp


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text of a :func:`check_dataset` report."""
    lines = [
        f"dataset   {report['root']}",
        f"layout    {report['layout']} ({report['layout_evidence']})",
        f"{'slices' if report['layout'] == 'lgg' else 'cases':9s} {report['cases']}   patients {report['patients']}",
        f"channels  {_inline(report['channels'])}  (channels per case: {_inline(report['channel_counts'])})",
        f"shapes    {_inline(report['shapes'])}",
        f"spacing   {_inline(report['spacings'])} mm",
        f"orient.   {_inline(report['orientations'])}",
        f"labels    {_inline(report['labels'])}",
    ]
    if report["with_mask"]:
        fraction = report["tumor_fraction"]
        lines.append(
            f"masks     {report['with_mask']} cases with a mask, {report['with_tumor']} with tumor"
            + (f" ({fraction:.1%})" if fraction is not None else "")
        )
    cases = report["details"].get("cases", [])
    for case in cases[:_MAX_LISTED]:
        state = f"labelled, mask labels {case['mask_labels']}" if case["labelled"] else "no segmentation"
        lines.append(f"  case {case['case_id']}: BraTS {case['naming']} naming, {state}")
    if len(cases) > _MAX_LISTED:
        lines.append(f"  ... {len(cases) - _MAX_LISTED} more cases (see --json)")
    if report["details"].get("patients_note"):
        lines.append(f"patients  {report['details']['patients_note']}")
    if report["details"].get("malignancy_policy"):
        lines.append(f"policy    {report['details']['malignancy_policy']}")
    groups = report["duplicate_groups"]
    if groups is not None:
        lines.append(
            f"duplicates {len(groups)} groups of identical images ({sum(len(g) - 1 for g in groups)} redundant copies)"
        )
        lines += [f"  {' = '.join(group)}" for group in groups]
    near = report.get("near_duplicate_groups")
    if near is not None:
        lines.append(
            f"near-duplicates {len(near)} groups, {sum(map(len, near))} images (pHash distance <= "
            f"{MAX_DISTANCE} bits; split together: they never cross folds)"
        )
        lines += [f"  {' ~ '.join(group)}" for group in near]
    if report.get("fingerprint"):
        from tumorbench.data.fingerprint import format_fingerprint

        lines.append(format_fingerprint(report["fingerprint"]))
    lines += [f"note      {note}" for note in report.get("notes", [])]
    lines.append(f"problems  {len(report['problems'])}")
    lines += [f"  - {p}" for p in report["problems"]]
    return "\n".join(lines)


def _inline(counts: dict[str, int]) -> str:
    items = list(counts.items())
    shown = ", ".join(f"{k}: {v}" for k, v in items[:6])
    return shown + (f", ... ({len(items) - 6} more)" if len(items) > 6 else "") if items else "-"
