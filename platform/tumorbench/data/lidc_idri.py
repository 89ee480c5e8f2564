"""LIDC-IDRI as TCIA ships it (DICOM CT series, each with its readers' XML) made the ``lidc`` layout's nodule crops.

Each CT was read by up to four radiologists, who outlined every nodule of 3 mm or more slice by slice and rated it
(:mod:`~tumorbench.data.lidc_xml`). Traps handled here:

- readers name nodules independently: one nodule's readings are grouped by overlap of their outlines, or centres
  closer than the larger's radius (as pylidc's clustering groups them), so each nodule is counted once;
- an outline's slice is found by its SOPInstanceUID, else by its z position; slices are told apart by position,
  not by a uniform spacing (some series miss slices), and only the slices written are decoded;
- the XML of a chest radiograph is not a CT's; one kept apart from its slices (TCIA's XML-only download) finds
  its series anywhere under the folder converted.

:func:`convert` writes, per nodule, the CT slice through its centre cropped around it (8-bit, a lung window),
``_union`` and ``_intersection`` masks of its readers' outlines on that slice, and ``files/malignancy.csv``: patient,
scan (SeriesNumber), nodule, readers, volume, diameter, centre, then the mean of each rating (malignancy last). That
is the ``lidc`` layout the study's ``--data`` reads (benign <= 2, malignant >= 4 by default).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumorbench.data.class_set import Written, in_processes
from tumorbench.data.layouts.common import data_files, has_dicm_magic
from tumorbench.data.lidc_xml import RATINGS, NotCtReading, Outline, Reading, read_readings
from tumorbench.errors import DataError

PATIENT = re.compile(r"^LIDC-IDRI-(\d+)$")
CROP = 64
WINDOW = (-1000.0, 400.0)  # HU mapped to 0..255 (LUNA16's clip)
_TAGS = ["SOPInstanceUID", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns", "PatientID", "SeriesNumber"]


@dataclass
class Summary(Written):
    series: int = 0
    nodules: int = 0  # rows of malignancy.csv (each an image)
    readings: int = 0  # readers' outlined nodules, before grouping
    too_few_readers: int = 0  # nodules outlined by fewer than min_readers
    unrated: int = 0  # nodules no reader rated for malignancy: not written
    clipped: int = 0  # nodules wider than the crop
    outlines_off: int = 0  # outlines on no slice of their series
    not_ct: int = 0  # XML files that are not CT readings (chest radiographs)
    readers: Counter = field(default_factory=Counter)  # nodules by number of readers
    skipped: list[str] = field(default_factory=list)  # "<file>: <problem>"


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

    def index(self, outline: Outline) -> int | None:
        """The slice an outline is on: by SOPInstanceUID, else the nearest z within a quarter of a slice gap."""
        if outline.sop_uid in self.sop:
            return self.sop[outline.sop_uid]
        if outline.z is None:
            return None
        gap = float(np.median(np.diff(self.z))) if len(self.z) > 1 else 1.0
        k = int(np.argmin(np.abs(self.z - outline.z)))
        return k if abs(self.z[k] - outline.z) <= gap / 4 else None


def series_slices(xml: Path, uid: str, files: list[Path] | None = None) -> Slices:
    """The slices of series ``uid``: ``files``, else those in the XML's folder (the release keeps them together)."""
    import pydicom

    from tumorbench.data.dicom import find_dicom_series

    if files is None:
        try:
            files = find_dicom_series(xml.parent).get(uid)
        except DataError:  # no DICOM file there at all
            files = None
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


def outline_masks(reading: Reading, slices: Slices) -> tuple[dict[int, np.ndarray], int]:
    """A reading's filled outlines by slice (holes cut, their edges kept), and its outlines on no slice."""
    from PIL import Image, ImageDraw

    by_slice: dict[int, list[Outline]] = {}
    off = 0
    for outline in reading.outlines:
        k = slices.index(outline)
        if k is None:
            off += 1
        else:
            by_slice.setdefault(k, []).append(outline)
    masks = {}
    for k, outlines in by_slice.items():
        canvas = Image.new("L", slices.shape[::-1])
        draw = ImageDraw.Draw(canvas)
        for outline in sorted(outlines, key=lambda o: not o.inclusion):  # holes after every inclusion
            points = [tuple(p) for p in outline.points.tolist()]
            if len(points) > 2:
                draw.polygon(points, fill=int(outline.inclusion), outline=1)
            elif points and outline.inclusion:
                draw.line(points, fill=1)
        if (mask := np.asarray(canvas, dtype=bool)).any():
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
    gap = float(np.median(np.diff(slices.z))) if len(slices.z) > 1 else 1.0
    voxel = slices.spacing[0] * slices.spacing[1] * gap
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


@dataclass
class Nodule:
    """One nodule's crops (image 8-bit, masks 0/1) and its row of ``malignancy.csv``."""

    readers: int
    ratings: dict[str, float]
    volume_mm3: float
    diameter_mm: float
    centre: tuple[int, int, int]  # row, column, slice
    image: np.ndarray
    union: np.ndarray
    intersection: np.ndarray
    clipped: bool


@dataclass
class SeriesResult:
    patient: int
    scan: int
    nodules: list[Nodule]
    readings: int
    too_few_readers: int = 0
    unrated: int = 0
    outlines_off: int = 0


@dataclass(frozen=True)
class Options:
    min_readers: int = 1
    crop: int = CROP
    window: tuple[float, float] = WINDOW

    def __post_init__(self) -> None:
        if not 1 <= self.min_readers <= 4 or self.crop < 16 or not self.window[0] < self.window[1]:
            raise ValueError(f"min_readers 1..4, crop >= 16 and window low < high, got {self}")


def _crop(array: np.ndarray, row: int, col: int, size: int, fill: float) -> np.ndarray:
    """``size`` x ``size`` centred on (row, col), ``fill`` beyond the image's edges."""
    top, left = row - size // 2 + size, col - size // 2 + size
    return np.pad(array, size, constant_values=fill)[top : top + size, left : left + size]


def _nodule(readings: list[Reading], masks: list[dict[int, np.ndarray]], slices: Slices, options: Options) -> Nodule:
    union: dict[int, np.ndarray] = {}
    by_reader: dict[int, dict[int, np.ndarray]] = {}
    for reading, mask in zip(readings, masks):
        mine = by_reader.setdefault(reading.reader, {})
        for k, m in mask.items():
            union[k] = union.get(k, False) | m
            mine[k] = mine.get(k, False) | m
    areas = {k: int(m.sum()) for k, m in union.items()}
    z_centre = sum(slices.z[k] * a for k, a in areas.items()) / sum(areas.values())
    k = min(union, key=lambda k: (abs(slices.z[k] - z_centre), k))
    intersection = np.logical_and.reduce([mine.get(k, np.zeros(slices.shape, bool)) for mine in by_reader.values()])
    rows, cols = np.nonzero(union[k])
    row, col = int(round(rows.mean())), int(round(cols.mean()))
    half = options.crop // 2
    clipped = bool(rows.min() < row - half or rows.max() >= row - half + options.crop)
    clipped |= bool(cols.min() < col - half or cols.max() >= col - half + options.crop)
    from tumorbench.data.dicom import read_slice

    ds, pixels = read_slice(slices.files[k])
    hu = pixels.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    low, high = options.window
    image = np.rint(np.clip((_crop(hu, row, col, options.crop, low) - low) / (high - low), 0, 1) * 255)
    ratings = {n: float(np.mean([r.ratings[n] for r in readings if n in r.ratings])) for n in RATINGS}
    gap = float(np.median(np.diff(slices.z))) if len(slices.z) > 1 else 1.0
    return Nodule(
        len(by_reader),
        {n: v for n, v in ratings.items() if np.isfinite(v)},
        sum(areas.values()) * slices.spacing[0] * slices.spacing[1] * gap,
        2 * np.sqrt(max(areas.values()) * slices.spacing[0] * slices.spacing[1] / np.pi),
        (row, col, k),
        image.astype(np.uint8),
        _crop(union[k], row, col, options.crop, False),
        _crop(intersection, row, col, options.crop, False),
        clipped,
    )


def read_series(xml: Path, options: Options, files: list[Path] | None = None) -> SeriesResult:
    """The nodules of the series an XML reads (its ``files``, else beside it), in slice, row, column order of their
    centres."""
    import warnings

    uid, readings = read_readings(xml)
    slices = series_slices(xml, uid, files)
    result = SeriesResult(slices.patient, slices.scan, [], len(readings))
    masks = []
    for reading in readings:
        mask, off = outline_masks(reading, slices)
        masks.append(mask)
        result.outlines_off += off
    kept = [n for n, mask in enumerate(masks) if mask]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of a rating no reader gave: NaN, left out
        for group in group_readings([masks[n] for n in kept], slices):
            members = [kept[n] for n in group]
            if len({readings[n].reader for n in members}) < options.min_readers:
                result.too_few_readers += 1
            elif not any("malignancy" in readings[n].ratings for n in members):
                result.unrated += 1
            else:
                result.nodules.append(
                    _nodule([readings[n] for n in members], [masks[n] for n in members], slices, options)
                )
    result.nodules.sort(key=lambda n: (n.centre[2], n.centre[0], n.centre[1]))
    return result


def _one(job: tuple[Path, Options, list[Path] | None]) -> SeriesResult | str:
    try:
        return read_series(*job)
    except DataError as exc:
        return str(exc)  # its file (a slice, the XML or its folder) and the problem


def find_readings(root: Path, summary: Summary) -> dict[Path, str]:
    """One CT reading XML per series (a series read twice: the file with the most readings), with its series' UID;
    others counted."""
    chosen: dict[str, tuple[int, Path]] = {}
    for path in (p for p in data_files(root) if p.suffix.lower() == ".xml"):
        try:
            uid, readings = read_readings(path)
        except NotCtReading:
            summary.not_ct += 1
            continue
        except DataError as exc:
            summary.skipped.append(str(exc))
            continue
        if uid not in chosen or len(readings) > chosen[uid][0]:
            chosen[uid] = (len(readings), path)
    if not chosen:
        raise DataError(root, "no LIDC-IDRI reading XML (LidcReadMessage) under it: not TCIA's LIDC-IDRI download")
    return {path: uid for uid, (_, path) in sorted(chosen.items(), key=lambda item: item[1][1])}


def _jobs(root: Path, readings: dict[Path, str], options: Options) -> list[tuple[Path, Options, list[Path] | None]]:
    """(XML, its series' files or None: those beside it, options). An XML with no DICOM file beside it (TCIA's
    XML-only download) gets its series from anywhere under the root, indexed once."""
    from tumorbench.data.dicom import find_dicom_series

    alone = {xml for xml in readings if not any(has_dicm_magic(p) for p in xml.parent.iterdir() if p.is_file())}
    index: dict[str, list[Path]] = {}
    if alone:
        try:
            index = find_dicom_series(root)
        except DataError:  # no DICOM file under the root at all: each XML says its series is missing
            index = {}
    return [(xml, options, index.get(uid, []) if xml in alone else None) for xml, uid in readings.items()]


def _write(out: Path, result: SeriesResult, table: csv.writer, summary: Summary) -> None:
    from PIL import Image

    for number, nodule in enumerate(result.nodules, start=1):
        stem = f"LIDC-IDRI-{result.patient:04d}_{number}_{result.scan}"
        Image.fromarray(nodule.image).save(out / f"{stem}.png")
        for kind in ("union", "intersection"):
            Image.fromarray(getattr(nodule, kind).astype(np.uint8) * np.uint8(255)).save(out / f"{stem}_{kind}.png")
        ratings = [f"{nodule.ratings[n]:.4g}" if n in nodule.ratings else "" for n in RATINGS]
        size = [f"{nodule.volume_mm3:.1f}", f"{nodule.diameter_mm:.2f}", *map(str, nodule.centre)]
        table.writerow([summary.nodules, result.patient, result.scan, number, nodule.readers, *size, *ratings])
        summary.nodules += 1
        summary.readers[nodule.readers] += 1
        summary.clipped += nodule.clipped


def convert(root: str | Path, out: str | Path, options: Options = Options(), *, workers: int = 1) -> Summary:
    """Write every CT nodule of the root's LIDC-IDRI series into ``out`` (see the module docstring); series read in
    ``workers`` processes. A series that cannot be read, or whose scan number another of its patient's has, is
    skipped and listed."""
    from tqdm import tqdm

    root, out = Path(root), Path(out)
    summary = Summary()
    readings = find_readings(root, summary)
    (out / "files").mkdir(parents=True, exist_ok=True)
    seen: set[tuple[int, int]] = set()
    patients: set[int] = set()
    with open(out / "files" / "malignancy.csv.partial", "w", newline="") as handle:
        table = csv.writer(handle)
        jobs = _jobs(root, readings, options)
        results = tqdm(in_processes(_one, jobs, workers), total=len(jobs), desc="LIDC-IDRI series", leave=False)
        for xml, result in zip(readings, results):
            if isinstance(result, SeriesResult) and (result.patient, result.scan) in seen:
                result = f"{xml.parent}: SeriesNumber {result.scan} of another series of the same patient"
            if isinstance(result, str):
                summary.skipped.append(result)
                continue
            seen.add((result.patient, result.scan))
            summary.series += 1
            summary.readings += result.readings
            summary.too_few_readers += result.too_few_readers
            summary.unrated += result.unrated
            summary.outlines_off += result.outlines_off
            if result.nodules:
                patients.add(result.patient)
            _write(out, result, table, summary)
    (out / "files" / "malignancy.csv.partial").replace(out / "files" / "malignancy.csv")  # complete once there
    if not summary.series:
        raise DataError(root, f"none of its {len(readings)} read series could be read; the first: {summary.skipped[0]}")
    summary.images, summary.patients = summary.nodules, len(patients)
    return summary
