"""LIDC-IDRI's readers' outlines on a CT series: the slices they lie on, the nodule each encloses, one nodule's
readings grouped.

An outline's slice is found by its SOPInstanceUID, else by its z position; slices are told apart by position, not
by a uniform spacing (some series miss slices). Readers name nodules independently, so one nodule's readings are
grouped by overlap of their outlines, or centres closer than the larger's radius (as pylidc's clustering groups
them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from tumorbench.data.lidc_xml import Outline, Reading
from tumorbench.errors import DataError

PATIENT = re.compile(r"^LIDC-IDRI-(\d+)$")
_TAGS = ["SOPInstanceUID", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns", "PatientID", "SeriesNumber"]


@dataclass(frozen=True)
class Slices:
    """One series' slices in z order, from their headers."""

    files: list[Path]
    z: np.ndarray
    sop: dict[str, int]
    shape: tuple[int, int]  # rows, columns
    spacing: tuple[float, float]  # row, column (mm)
    patient: int
    scan: int

    @cached_property
    def gap(self) -> float:
        """The usual distance between neighbouring slices (mm): the median, as some series miss slices."""
        return float(np.median(np.diff(self.z))) if len(self.z) > 1 else 1.0

    def index(self, outline: Outline) -> int | None:
        """The slice an outline is on: by SOPInstanceUID, else the nearest z within a quarter of a slice gap."""
        if outline.sop_uid in self.sop:
            return self.sop[outline.sop_uid]
        if outline.z is None:
            return None
        k = int(np.argmin(np.abs(self.z - outline.z)))
        return k if abs(self.z[k] - outline.z) <= self.gap / 4 else None


def series_slices(xml: Path, uid: str, files: list[Path] | None = None) -> Slices:
    """The slices of series ``uid``: ``files``, else those in the XML's folder (the release keeps them together)."""
    import pydicom

    from tumorbench.data.dicom import find_dicom_series

    if files is None:  # the headers are read there: an unreadable one is named
        files = find_dicom_series(xml.parent).get(uid)
    if not files:
        raise DataError(xml, "its series is not in its folder, nor elsewhere under the folder converted")
    headers = [pydicom.dcmread(p, stop_before_pixels=True, specific_tags=_TAGS) for p in files]
    try:
        z = np.array([float(h.ImagePositionPatient[2]) for h in headers])
        spacing = tuple(float(v) for v in headers[0].PixelSpacing)
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise DataError(xml.parent, "a slice without ImagePositionPatient or PixelSpacing") from exc
    order = np.argsort(z, kind="stable")
    match = PATIENT.match(str(headers[0].get("PatientID", "")))
    if match is None:
        raise DataError(xml.parent, "its PatientID is not LIDC-IDRI-NNNN: not a series of TCIA's LIDC-IDRI")
    number = str(headers[0].get("SeriesNumber", "") or "")
    return Slices(
        [files[n] for n in order],
        z[order],
        {str(headers[n].SOPInstanceUID): k for k, n in enumerate(order)},
        (int(headers[0].Rows), int(headers[0].Columns)),
        (spacing[0], spacing[1]),
        int(match.group(1)),
        int(number) if number.isdigit() else 0,
    )


def _inside(outline: Outline, shape: tuple[int, int]) -> np.ndarray:
    """The pixels an outline encloses, not its own: LIDC's readers drew each just outside what it bounds."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", shape[::-1])
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in outline.points.tolist()], fill=1)
    inside = np.array(canvas, dtype=bool)
    cols, rows = outline.points.T
    on = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    inside[rows[on], cols[on]] = False
    return inside


def outline_masks(reading: Reading, slices: Slices) -> tuple[dict[int, np.ndarray], int]:
    """A reading's nodule by slice, and its outlines on no slice. On a slice, the nodule is what its inclusion
    outlines enclose, less what its exclusion outlines enclose (a hole's outline is the nodule's, as pylidc reads
    them); an outline of under three points encloses nothing."""
    by_slice: dict[int, list[Outline]] = {}
    off = 0
    for outline in reading.outlines:
        k = slices.index(outline)
        if k is None:
            off += 1
        elif len(outline.points) > 2:
            by_slice.setdefault(k, []).append(outline)
    masks = {}
    for k, outlines in by_slice.items():
        mask = np.zeros(slices.shape, bool)
        for outline in (o for o in outlines if o.inclusion):
            mask |= _inside(outline, slices.shape)
        for outline in (o for o in outlines if not o.inclusion):
            mask &= ~_inside(outline, slices.shape)
        if mask.any():
            masks[k] = mask
    return masks, off


def _centre(masks: dict[int, np.ndarray], slices: Slices) -> np.ndarray:
    """Centre of mass in mm (z, row, column)."""
    total, centre = 0, np.zeros(3)
    for k, mask in masks.items():
        rows, cols = np.nonzero(mask)
        total += len(rows)
        centre += [slices.z[k] * len(rows), rows.sum() * slices.spacing[0], cols.sum() * slices.spacing[1]]
    return centre / total


def group_readings(masks: list[dict[int, np.ndarray]], slices: Slices) -> list[list[int]]:
    """Readings of one nodule, grouped: their outlines overlap, or their centres are closer than the larger's radius
    (of a sphere of its volume); groups in order of their first reading."""
    voxel = slices.spacing[0] * slices.spacing[1] * slices.gap
    centres = [_centre(m, slices) for m in masks]
    radii = [(3 * voxel * sum(int(v.sum()) for v in m.values()) / (4 * np.pi)) ** (1 / 3) for m in masks]
    parent = list(range(len(masks)))

    def root(n: int) -> int:
        while parent[n] != n:
            n = parent[n]
        return n

    for a in range(len(masks)):
        for b in range(a + 1, len(masks)):
            overlap = any((masks[a][k] & masks[b][k]).any() for k in masks[a].keys() & masks[b].keys())
            if overlap or np.linalg.norm(centres[a] - centres[b]) <= max(radii[a], radii[b]):
                parent[root(b)] = root(a)
    groups: dict[int, list[int]] = {}
    for n in range(len(masks)):
        groups.setdefault(root(n), []).append(n)
    return list(groups.values())


def by_reader(readings: list[Reading], masks: list[dict[int, np.ndarray]]) -> dict[int, dict[int, np.ndarray]]:
    """One nodule's masks by reader (a reader who outlined it twice: the union of both) and slice."""
    found: dict[int, dict[int, np.ndarray]] = {}
    for reading, mask in zip(readings, masks):
        mine = found.setdefault(reading.reader, {})
        for k, m in mask.items():
            mine[k] = mine.get(k, False) | m
    return found
