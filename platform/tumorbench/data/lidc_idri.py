"""LIDC-IDRI as TCIA ships it (DICOM CT series, each with its readers' XML) made the ``lidc`` layout's nodule crops.

Each CT was read by up to four radiologists, who outlined every nodule of 3 mm or more slice by slice and rated it
(:mod:`~tumorbench.data.lidc_xml`); one nodule's readings are grouped (:mod:`~tumorbench.data.lidc_outlines`), so
each nodule is counted once. Only the slices written are decoded. The XML of a chest radiograph is not a CT's; one
kept apart from its slices (TCIA's XML-only download) finds its series anywhere under the folder converted.

:func:`convert` writes, per nodule, the CT slice through its centre cropped around it (8-bit, a lung window),
``_union`` and ``_intersection`` masks of its readers' outlines on that slice, and ``files/malignancy.csv``: patient,
scan (SeriesNumber), nodule, readers, volume, diameter, centre, then the mean of each rating (malignancy last). That
is the ``lidc`` layout the study's ``--data`` reads (benign <= 2, malignant >= 4 by default). With
``Options.volumes``, each whole series and its nodules' consensus masks too (:mod:`~tumorbench.data.lidc_volumes`).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumorbench.data.class_set import Written, in_processes
from tumorbench.data.layouts.common import data_files, has_dicm_magic
from tumorbench.data.lidc_outlines import Slices, by_reader, group_readings, outline_masks, series_slices
from tumorbench.data.lidc_volumes import consensus, write_patients, write_volume
from tumorbench.data.lidc_xml import RATINGS, NotCtReading, Reading, read_readings
from tumorbench.errors import DataError

CROP = 64
WINDOW = (-1000.0, 400.0)  # HU mapped to 0..255 (LUNA16's clip)


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
    volumes: int = 0  # series written whole (Options.volumes)
    readers: Counter = field(default_factory=Counter)  # nodules by number of readers
    skipped: list[str] = field(default_factory=list)  # "<file>: <problem>"


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
    volume: str | None = None  # its case name, when written
    volume_problem: str | None = None


@dataclass(frozen=True)
class Options:
    min_readers: int = 1
    crop: int = CROP
    window: tuple[float, float] = WINDOW
    volumes: str | None = None  # also write each series and its nodules' consensus masks there (lidc_volumes)
    pixel_mm: float | None = None  # crops resampled to this many mm a pixel (None: the scan's own, 0.46-0.98 mm)

    def __post_init__(self) -> None:
        if not 1 <= self.min_readers <= 4 or self.crop < 16 or not self.window[0] < self.window[1]:
            raise ValueError(f"min_readers 1..4, crop >= 16 and window low < high, got {self}")
        if self.pixel_mm is not None and not 0.1 <= self.pixel_mm <= 5:
            raise ValueError(f"pixel_mm in 0.1..5 mm, got {self.pixel_mm}")


def _crop(array: np.ndarray, row: int, col: int, size: int, fill: float) -> np.ndarray:
    """``size`` x ``size`` centred on (row, col), ``fill`` beyond the image's edges."""
    top, left = row - size // 2 + size, col - size // 2 + size
    return np.pad(array, size, constant_values=fill)[top : top + size, left : left + size]


def _planes(slices: Slices, k: int, union: np.ndarray, intersection: np.ndarray, pixel_mm: float | None) -> list:
    """Slice ``k`` in HU and its two masks, resampled to ``pixel_mm`` a pixel (linear; masks nearest) when given."""
    from scipy import ndimage

    from tumorbench.data.dicom import read_slice

    ds, pixels = read_slice(slices.files[k])
    hu = pixels.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    if pixel_mm is None:
        return [hu, union, intersection]
    zoom = (slices.spacing[0] / pixel_mm, slices.spacing[1] / pixel_mm)
    return [ndimage.zoom(hu, zoom, order=1, grid_mode=True, mode="nearest")] + [
        ndimage.zoom(m.astype(np.uint8), zoom, order=0, grid_mode=True, mode="nearest").astype(bool)
        for m in (union, intersection)
    ]


def _nodule(
    readings: list[Reading], readers: dict[int, dict[int, np.ndarray]], slices: Slices, options: Options
) -> Nodule:
    union: dict[int, np.ndarray] = {}
    for mine in readers.values():
        for k, m in mine.items():
            union[k] = union.get(k, False) | m
    areas = {k: int(m.sum()) for k, m in union.items()}
    z_centre = sum(slices.z[k] * a for k, a in areas.items()) / sum(areas.values())
    k = min(union, key=lambda k: (abs(slices.z[k] - z_centre), k))
    intersection = np.logical_and.reduce([mine.get(k, np.zeros(slices.shape, bool)) for mine in readers.values()])
    centre = [int(round(v.mean())) for v in np.nonzero(union[k])]  # row, column of the slice as stored
    hu, outer, inner = _planes(slices, k, union[k], intersection, options.pixel_mm)
    rows, cols = np.nonzero(outer)
    row, col, half, size = int(round(rows.mean())), int(round(cols.mean())), options.crop // 2, options.crop
    clipped = bool(rows.min() < row - half or rows.max() >= row - half + size)
    clipped |= bool(cols.min() < col - half or cols.max() >= col - half + size)
    low, high = options.window
    image = np.rint(np.clip((_crop(hu, row, col, size, low) - low) / (high - low), 0, 1) * 255)
    ratings = {n: float(np.mean([r.ratings[n] for r in readings if n in r.ratings])) for n in RATINGS}
    pixel = slices.spacing[0] * slices.spacing[1]
    return Nodule(
        len(readers),
        {n: v for n, v in ratings.items() if np.isfinite(v)},
        sum(areas.values()) * pixel * slices.gap,
        2 * np.sqrt(max(areas.values()) * pixel / np.pi),
        (centre[0], centre[1], k),
        image.astype(np.uint8),
        _crop(outer, row, col, size, False),
        _crop(inner, row, col, size, False),
        clipped,
    )


def read_series(xml: Path, options: Options, files: list[Path] | None = None, job: int = 0) -> SeriesResult:
    """The nodules of the series an XML reads (its ``files``, else beside it), in slice, row, column order of their
    centres; with ``options.volumes``, its volume written there as ``<case>.<job>.nii.gz`` (renamed once the
    case name is known to be its patient's only one: :func:`convert`)."""
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
    consensus_masks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of a rating no reader gave: NaN, left out
        for group in group_readings([masks[n] for n in kept], slices):
            members = [readings[kept[n]] for n in group]
            readers = by_reader(members, [masks[kept[n]] for n in group])
            if len(readers) < options.min_readers:
                result.too_few_readers += 1
                continue
            consensus_masks.append(consensus(readers))
            if not any("malignancy" in r.ratings for r in members):
                result.unrated += 1
            else:
                result.nodules.append(_nodule(members, readers, slices, options))
    result.nodules.sort(key=lambda n: (n.centre[2], n.centre[0], n.centre[1]))
    if options.volumes:
        name = f"LIDC-IDRI-{slices.patient:04d}_{slices.scan}.{job}"
        try:
            write_volume(Path(options.volumes), name, slices.files, consensus_masks)
            result.volume = name
        except DataError as exc:
            result.volume_problem = f"{exc} (its volume not written; its crops are)"
    return result


def _one(job: tuple[Path, Options, list[Path] | None, int]) -> SeriesResult | str:
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


def _jobs(
    root: Path, readings: dict[Path, str], options: Options
) -> list[tuple[Path, Options, list[Path] | None, int]]:
    """(XML, options, its series' files or None: those beside it, job number). An XML with no DICOM file beside
    it (TCIA's XML-only download) gets its series from anywhere under the root, indexed once."""
    from tumorbench.data.dicom import find_dicom_series

    alone = {xml for xml in readings if not any(has_dicm_magic(p) for p in xml.parent.iterdir() if p.is_file())}
    index: dict[str, list[Path]] = {}
    if alone:
        try:
            index = find_dicom_series(root)
        except DataError:  # no DICOM file under the root at all: each XML says its series is missing
            index = {}
    return [
        (xml, options, index.get(uid, []) if xml in alone else None, job)
        for job, (xml, uid) in enumerate(readings.items())
    ]


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


def _volume(options: Options, result: SeriesResult, summary: Summary | None, volumes: dict[str, str]) -> None:
    """Name a series' volume for its case (``summary`` None: a series refused, its volume removed); say why one
    could not be written."""
    if result.volume_problem and summary is not None:
        summary.skipped.append(result.volume_problem)
    if not result.volume:
        return
    case = result.volume.rsplit(".", 1)[0]
    written = [Path(options.volumes, kind, f"{result.volume}.nii.gz") for kind in ("images", "masks")]
    if summary is None:
        for path in written:
            path.unlink()
        return
    for path in written:
        path.replace(path.with_name(f"{case}.nii.gz"))
    volumes[case] = f"LIDC-IDRI-{result.patient:04d}"
    summary.volumes += 1


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
    volumes: dict[str, str] = {}  # case -> patient
    with open(out / "files" / "malignancy.csv.partial", "w", newline="") as handle:
        table = csv.writer(handle)
        jobs = _jobs(root, readings, options)
        results = tqdm(in_processes(_one, jobs, workers), total=len(jobs), desc="LIDC-IDRI series", leave=False)
        for xml, result in zip(readings, results):
            if isinstance(result, SeriesResult) and (result.patient, result.scan) in seen:
                _volume(options, result, None, volumes)
                result = f"{xml.parent}: SeriesNumber {result.scan} of another series of the same patient"
            if isinstance(result, str):
                summary.skipped.append(result)
                continue
            seen.add((result.patient, result.scan))
            _volume(options, result, summary, volumes)
            summary.series += 1
            summary.readings += result.readings
            summary.too_few_readers += result.too_few_readers
            summary.unrated += result.unrated
            summary.outlines_off += result.outlines_off
            if result.nodules:
                patients.add(result.patient)
            _write(out, result, table, summary)
    (out / "files" / "malignancy.csv.partial").replace(out / "files" / "malignancy.csv")  # complete once there
    if options.volumes:
        write_patients(Path(options.volumes), volumes)
    if not summary.series:
        raise DataError(root, f"none of its {len(readings)} read series could be read; the first: {summary.skipped[0]}")
    summary.images, summary.patients = summary.nodules, len(patients)
    return summary
