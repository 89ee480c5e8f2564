"""DICOM series reading: series discovery, transfer syntaxes, MONOCHROME1, radiographs (CR, DX...) and geometry.

Every reader returns an :class:`~tumorbench.data.image.ImageData`; every unusable input raises
:class:`~tumorbench.errors.DataError` naming the file (or series) and the problem.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.pixels import get_decoder
from pydicom.uid import MediaStorageDirectoryStorage

from tumorbench.data.dicom_multiframe import frame_count, read_multiframe
from tumorbench.data.image import LPS_TO_RAS, ImageData, dicom_planar_image, dicom_volume
from tumorbench.data.layouts.common import data_files, has_dicm_magic
from tumorbench.errors import DataError

# What a skipped file is, as find_dicom_series counts it: "a DICOMDIR index", "a <modality> object", ...
DICOMDIR_KIND = "a DICOMDIR index"
MASK_MODALITIES = ("SEG", "RTSTRUCT")  # outlines read as masks (data.dicom_masks), not skipped
MASK_KINDS = tuple(f"a {m} object" for m in MASK_MODALITIES)
_IOP_TOLERANCE = 1e-4  # direction cosines are stored with ~6 decimals
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data: its fragments end in a delimiter
# Projection radiography: a single image without ImageOrientationPatient is read as a 2D image.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "RG", "DR"})
# Planar images that are never a slice of a volume (ultrasound, photographs, secondary capture):
# read as 2D images too, and the only ones that may be colour (SamplesPerPixel 3).
PLANAR_MODALITIES = PROJECTION_MODALITIES | {"US", "XC", "ES", "GM", "SM", "OT"}
# Objects a hospital export keeps beside the images (structure sets, SEG, reports, key objects,
# presentation states, plans, dose, registrations, waveforms): never a series to read as an image.
NON_IMAGE_MODALITIES = frozenset(
    {"RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "SEG", "REG", "SR", "KO", "PR", "DOC", "FID", "PLAN", "AU", "ECG"}
)


_PLANE_CHANGE = 0.2  # direction cosines: another plane, not a slice's rounding (the reader's own tolerance is 1e-3)


def _series_uid_of(path: Path, planes: dict[str, list] | None = None) -> tuple[str | None, str | None]:
    """The file's SeriesInstanceUID, or None and what the file is when it holds no image to read.

    Not images to read: a DICOMDIR index, objects of :data:`NON_IMAGE_MODALITIES` (RTSTRUCT, SEG, SR...)
    and localizers (the scout views a CT or MR study starts with; ImageType ``LOCALIZER``). ``planes``, when
    given, collects each series' first ImageOrientationPatient and whether a later file's differs by over
    :data:`_PLANE_CHANGE` (an MR 3-plane localizer is not marked ``LOCALIZER``; its slices lie in several planes).
    """
    try:
        tags = ["SeriesInstanceUID", "Modality", "ImageType", "ImageOrientationPatient"]
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
    except Exception as exc:
        raise DataError(path, f"unreadable DICOM header ({type(exc).__name__}: {exc})") from exc
    if ds.file_meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
        return None, DICOMDIR_KIND
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        return None, f"a {modality} object"
    image_type = ds.get("ImageType") or []
    if "LOCALIZER" in [str(v).upper() for v in ([image_type] if isinstance(image_type, str) else image_type)]:
        return None, "a localizer (scout) image"
    uid = ds.get("SeriesInstanceUID")
    if not uid:  # pydicom stops quietly at the end of a cut-off file
        raise DataError(path, "DICOM header has no SeriesInstanceUID (truncated or incomplete file?)")
    if planes is not None and (iop := ds.get("ImageOrientationPatient")) is not None:
        try:
            iop = np.asarray(iop, float)
            seen = planes.setdefault(str(uid), [iop, False])
            seen[1] = seen[1] or iop.shape != seen[0].shape or bool(np.abs(iop - seen[0]).max() > _PLANE_CHANGE)
        except (TypeError, ValueError):
            pass  # malformed: the reader names it
    return str(uid), None


def find_dicom_series(
    root: str | Path, skipped: Counter | None = None, masks: dict[str, list[Path]] | None = None
) -> dict[str, list[Path]]:
    """Map SeriesInstanceUID -> sorted files under ``root``, reading headers only.

    Files without the DICOM "DICM" preamble are ignored (counted in ``skipped`` when named ``.dcm``), and so are
    DICOMDIR indexes and non-image objects (counted by kind in ``skipped`` when given, e.g.
    ``{"a RTSTRUCT object": 2}``).
    ``masks``, when given, collects SEG and RTSTRUCT objects by the series they reference instead
    (:mod:`tumorbench.data.dicom_masks` reads them as label maps).
    """
    root = Path(root)
    if not root.exists():
        raise DataError(root, "folder not found")
    candidates = [root] if root.is_file() else data_files(root)
    series: dict[str, list[Path]] = {}
    bare = 0  # .dcm files without the preamble (a raw dataset, as some archives store them): not read
    planes: dict[str, list] = {}
    for path in candidates:
        if path.suffix.lower() == ".dcm" and not has_dicm_magic(path):
            bare += 1
        elif has_dicm_magic(path):
            uid, other = _series_uid_of(path, planes)
            if uid:
                series.setdefault(uid, []).append(path)
            elif masks is not None and (referenced := _mask_reference(path, other)):
                masks.setdefault(referenced, []).append(path)
            elif skipped is not None:
                skipped[other] += 1
    # A dataset's series in several planes (an MR 3-plane localizer) are not its cases; a series read on its own
    # is still refused by the reader, naming the odd file
    localizers = [u for u, (_, varied) in planes.items() if varied and u in series] if skipped is not None else []
    for uid in localizers:
        skipped["a localizer (slices in several planes)"] += len(series.pop(uid))
    if bare and skipped is not None:
        skipped[NO_PREAMBLE] += bare
    if not series:
        hints = [f"{bare} .dcm file(s) without the DICM preamble: export them as DICOM Part 10 files"] if bare else []
        hints += [f"{len(localizers)} series in several planes (a localizer), not read"] if localizers else []
        raise DataError(root, "no DICOM series found" + (f" ({'; '.join(hints)})" if hints else ""))
    return dict(sorted(series.items()))


NO_PREAMBLE = "a .dcm file without the DICM preamble, not read"


def _mask_reference(path: Path, kind: str | None) -> str | None:
    """The series a SEG or RTSTRUCT file outlines, else None."""
    if kind not in MASK_KINDS:
        return None
    return referenced_series_uid(pydicom.dcmread(path, stop_before_pixels=True))


def referenced_series_uid(ds: Any) -> str | None:
    """The SeriesInstanceUID a SEG or RTSTRUCT refers to, or None."""
    for item in ds.get("ReferencedSeriesSequence", []):  # SEG
        if item.get("SeriesInstanceUID"):
            return str(item.SeriesInstanceUID)
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):  # RTSTRUCT
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                if series.get("SeriesInstanceUID"):
                    return str(series.SeriesInstanceUID)
    return None


def _group_files(files: Sequence[str | Path]) -> dict[str, list[Path]]:
    series: dict[str, list[Path]] = {}
    for raw in files:
        path = Path(raw)
        if not path.is_file():
            raise DataError(path, "file not found")
        if not has_dicm_magic(path):
            raise DataError(path, "not a DICOM file (no DICM preamble)")
        uid, other = _series_uid_of(path)
        if not uid:
            raise DataError(path, f"{other}, not an image")
        series.setdefault(uid, []).append(path)
    if not series:
        raise DataError("<no files>", "no DICOM files given")
    return series


def _choose_series(label: str, series: dict[str, list[Path]], uid: str | None) -> tuple[str, list[Path]]:
    # No UID in a message: it would identify the study (a log, an error), its digest only (:func:`series_tag`)
    if uid is not None:
        if uid not in series:
            raise DataError(label, f"{series_tag(uid)} not found among its {len(series)} series")
        return uid, series[uid]
    if len(series) > 1:
        found = ", ".join(f"{series_tag(u)} ({len(files)} files)" for u, files in series.items())
        raise DataError(label, f"{len(series)} DICOM series found ({found}): read one by its series_uid")
    return next(iter(series.items()))


def _floats(ds: Any, keyword: str, count: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or len(value) != count:
        raise DataError(path, f"missing or malformed {keyword}")
    return np.asarray([float(v) for v in value], dtype=float)


def _check_decodable(ds: Any, path: Path) -> None:
    """Refuse, naming the transfer syntax, pixel data that no installed decoder can read."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None or not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DataError(
            path, f"pixel data in transfer syntax {syntax.name} ({syntax}) cannot be decoded: no decoder exists for it"
        ) from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies)
        raise DataError(
            path,
            f"pixel data in transfer syntax {syntax.name} ({syntax}) needs a decoder plugin "
            f"that is not installed ({needs})",
        )


def _invert_monochrome1(ds: Any, pixels: np.ndarray) -> np.ndarray:
    """MONOCHROME1 shows low values white: flip stored values within their range, so high means bright."""
    if str(ds.get("PhotometricInterpretation", "")).upper() != "MONOCHROME1":
        return pixels
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 16))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        low, high = 0, (1 << bits) - 1
    return (low + high) - pixels.astype(np.int64)


def read_slice(path: Path, ds: Any = None) -> tuple[Any, np.ndarray]:
    """Header and stored pixels of one single-frame file (compressed syntaxes decoded; colour as RGB);
    ``ds``: the file's dataset when already read (pixel data deferred)."""
    try:
        ds = pydicom.dcmread(path) if ds is None else ds
        if frame_count(ds) > 1:  # a multi-frame file alone is read whole (read_multiframe)
            raise DataError(
                path,
                "a multi-frame file among other files of its series, or a multi-frame planar image "
                "(cine loop): not read; export the series or the frame",
            )
        if int(ds.get("SamplesPerPixel", 1)) not in (1, 3):
            raise DataError(path, "only greyscale or RGB DICOM images are supported")
        _check_decodable(ds, path)
        pixels = _invert_monochrome1(ds, np.asarray(ds.pixel_array))
    except DataError:
        raise
    except Exception as exc:  # truncated files, missing pixel data, corrupt compressed streams
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        where = f" in transfer syntax {syntax.name}" if syntax is not None else ""
        raise DataError(path, f"unreadable or truncated DICOM file{where} ({type(exc).__name__}: {exc})") from exc
    return ds, pixels


def is_planar(files: int, header: Any) -> bool:
    """One planar image (radiograph, ultrasound...) without patient orientation: 2D, not a slice of a volume.

    ``header``: the series' first dataset (Modality and ImageOrientationPatient read).
    """
    modality = str(header.get("Modality", "") or "").upper()
    return files == 1 and modality in PLANAR_MODALITIES and "ImageOrientationPatient" not in header


def _check_consistent(paths: list[Path], datasets: list[Any]) -> None:
    first = datasets[0]
    if frame_count(first) > 1:  # read_dicom_series reads it (read_multiframe); outlines over it are not
        raise DataError(paths[0], "a multi-frame series: SEG / RTSTRUCT masks and SEG answers need single-frame files")
    ref_iop = _floats(first, "ImageOrientationPatient", 6, paths[0])
    ref_ps = _floats(first, "PixelSpacing", 2, paths[0])
    for path, ds in zip(paths, datasets):
        _floats(ds, "ImagePositionPatient", 3, path)
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, path), ref_iop, atol=_IOP_TOLERANCE):
            raise DataError(path, f"ImageOrientationPatient differs from {paths[0].name} in the same series")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            sizes = f"{ds.Rows}x{ds.Columns} vs {first.Rows}x{first.Columns} in {paths[0].name}"
            raise DataError(path, f"mixed slice sizes: {sizes}")
        if not np.allclose(_floats(ds, "PixelSpacing", 2, path), ref_ps, rtol=1e-4):
            raise DataError(path, f"PixelSpacing differs from {paths[0].name} in the same series")


def _slice_order(label: str, paths: list[Path], datasets: list[Any]) -> tuple[np.ndarray, np.ndarray, float]:
    """Return the spatial slice order, the unit slice normal and the slice step (mm)."""
    iop = _floats(datasets[0], "ImageOrientationPatient", 6, paths[0])
    normal = np.cross(iop[:3], iop[3:])
    if np.linalg.norm(normal) < 1e-3:
        raise DataError(paths[0], f"degenerate ImageOrientationPatient {iop.tolist()}")
    normal /= np.linalg.norm(normal)
    ipp = np.stack([_floats(ds, "ImagePositionPatient", 3, p) for p, ds in zip(paths, datasets)])
    position = ipp @ normal
    order = np.argsort(position, kind="stable")
    if len(paths) == 1:
        ds = datasets[0]
        step = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
        return order, normal, abs(step) or 1.0
    steps = np.diff(position[order])
    for n, gap in enumerate(steps):
        if gap < 1e-3:
            a, b = paths[order[n]].name, paths[order[n + 1]].name
            raise DataError(label, f"duplicate slice position {position[order[n]]:.3f} mm in {a} and {b}")
    step = float(np.median(steps))
    tolerance = max(0.01, 0.01 * step)
    for n, gap in enumerate(steps):
        if abs(gap - step) > tolerance:
            a, b = paths[order[n]].name, paths[order[n + 1]].name
            where = f"{gap:.3f} mm between {a} and {b}, expected {step:.3f} mm"
            raise DataError(label, f"non-uniform slice spacing: {where} (missing slice?)")
    drift = ipp[order] - ipp[order[0]] - np.outer(position[order] - position[order[0]], normal)
    if np.max(np.linalg.norm(drift, axis=1)) > tolerance:
        raise DataError(label, "slice positions leave the slice normal (gantry tilt is not supported)")
    return order, normal, step


def _series_affine(first: Any, path: Path, normal: np.ndarray, step: float) -> tuple[np.ndarray, tuple[float, ...]]:
    """RAS affine and (i, j, k) spacing from the first slice in spatial order."""
    iop = _floats(first, "ImageOrientationPatient", 6, path)
    row_spacing, col_spacing = _floats(first, "PixelSpacing", 2, path)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = iop[:3] * col_spacing  # along a row, i steps by the column spacing
    affine_lps[:3, 1] = iop[3:] * row_spacing
    affine_lps[:3, 2] = normal * step
    affine_lps[:3, 3] = _floats(first, "ImagePositionPatient", 3, path)
    return LPS_TO_RAS @ affine_lps, (float(col_spacing), float(row_spacing), float(step))


def _select_series(
    source: str | Path | Sequence[str | Path], series_uid: str | None
) -> tuple[str, str, str, list[Path]]:
    """The source's label, the series' label, its UID and its files."""
    if isinstance(source, (str, Path)):
        origin = str(source)
        series = find_dicom_series(source)
    else:
        origin = str(Path(source[0]).parent) if len(source) else "<no files>"
        series = _group_files(source)
    uid, paths = _choose_series(origin, series, series_uid)
    return origin, f"{origin} ({series_tag(uid)})", uid, paths


def series_tag(uid: str) -> str:
    """A series named in a message without its UID, which would identify the study: ``series #<digest>``."""
    return f"series #{hashlib.sha256(uid.encode()).hexdigest()[:8]}"


def _headers(label: str, paths: list[Path], defer_size: str | None = None) -> list[Any]:
    """Headers of ``paths``; ``defer_size``: whole datasets whose large values (pixel data) are read on use."""
    try:
        if defer_size is not None:
            return [pydicom.dcmread(p, defer_size=defer_size) for p in paths]
        return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    except Exception as exc:
        raise DataError(label, f"unreadable DICOM header ({type(exc).__name__}: {exc})") from exc


def dicom_series_headers(source: str | Path | Sequence[str | Path], *, series_uid: str | None = None) -> list[Any]:
    """Headers (no pixel data) of one series' files, in the order :func:`read_dicom_series` stacks along k.

    A result at the series' geometry (a mask) maps slice k to ``headers[k]``; a radiograph read
    as a 2D image gives its one header.
    """
    _, label, _, paths = _select_series(source, series_uid)
    datasets = _headers(label, paths)
    if is_planar(len(paths), datasets[0]):
        return datasets
    _check_consistent(paths, datasets)
    order, _, _ = _slice_order(label, paths, datasets)
    return [datasets[n] for n in order]


COLOUR_SLICE = (
    "a colour (RGB) image cannot be a slice of a volume; only single planar images "
    f"({', '.join(sorted(PLANAR_MODALITIES))}) without ImageOrientationPatient may be colour"
)


def check_series(
    source: str | Path | Sequence[str | Path], *, series_uid: str | None = None
) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """Refuse what :func:`read_dicom_series` would, without decoding a pixel: unreadable headers, pixel data
    missing, cut short or in a syntax no installed plugin decodes, and a volume's mixed orientation, slice
    size or spacing, duplicate or missing slices. For planning (``data.integrity``); errors carry no UID.

    Returns:
        A series of slices' affine and ``(I, J, K)`` shape as :func:`read_dicom_series` gives them (the grid a
        mask beside it must lie on); None for a single file (a slice's header checked all the same).
    """
    origin, _, _, paths = _select_series(source, series_uid)
    datasets = _headers(origin, paths, defer_size="4 KB")  # the pixel data element is parsed, not read
    for path, ds in zip(paths, datasets):
        item = next((ds.get_item(t, keep_deferred=True) for t in _PIXEL_KEYWORDS if t in ds), None)
        if item is None:
            raise DataError(path, "no readable pixel data (missing, or cut short before its end)")
        _check_decodable(ds, path)
        size, end = path.stat().st_size, getattr(item, "value_tell", 0) + item.length
        if item.length != _UNDEFINED_LENGTH and end > size:
            raise DataError(path, f"truncated: its pixel data ends at byte {end:,}, the file at {size:,}")
    if len(paths) < 2:  # one file: a slice (a CT dose report's screen capture) is checked as the reader checks it
        if not is_planar(1, datasets[0]) and frame_count(datasets[0]) <= 1:
            if int(datasets[0].get("SamplesPerPixel", 1) or 1) != 1:
                raise DataError(paths[0], COLOUR_SLICE)
            _check_consistent(paths, datasets)
        return None
    _check_consistent(paths, datasets)
    order, normal, step = _slice_order(origin, paths, datasets)
    affine, _ = _series_affine(datasets[order[0]], paths[order[0]], normal, step)
    return affine, (int(datasets[0].Columns), int(datasets[0].Rows), len(paths))


def series_geometry(
    source: str | Path | Sequence[str | Path], *, series_uid: str | None = None
) -> tuple[list[Any], np.ndarray, tuple[int, int, int]]:
    """A volume series' headers in k order, RAS affine and ``(I, J, K)`` shape, as :func:`read_dicom_series`
    gives them, without reading pixels."""
    _, label, _, paths = _select_series(source, series_uid)
    datasets = _headers(label, paths)
    if is_planar(len(paths), datasets[0]):
        raise DataError(label, "a planar image (read as 2D): SEG and RTSTRUCT masks are read for volume series")
    _check_consistent(paths, datasets)
    order, normal, step = _slice_order(label, paths, datasets)
    affine, _ = _series_affine(datasets[order[0]], paths[order[0]], normal, step)
    first = datasets[order[0]]
    return [datasets[n] for n in order], affine, (int(first.Columns), int(first.Rows), len(paths))


def read_dicom_series(source: str | Path | Sequence[str | Path], *, series_uid: str | None = None) -> ImageData:
    """Read one DICOM series into a float32 (I, J, K) volume with its RAS affine.

    Slices are ordered by ImagePositionPatient along the slice normal and rescaled to
    modality units (e.g. HU) with each slice's RescaleSlope / RescaleIntercept. Compressed
    transfer syntaxes are decoded by pydicom's pixel handlers (pylibjpeg plugins for JPEG,
    JPEG-LS, JPEG 2000, RLE); MONOCHROME1 is inverted. One planar image (radiograph, ultrasound,
    photograph: :data:`PLANAR_MODALITIES`) without ImageOrientationPatient comes back as a 2D image
    (``format`` ``image2d``, ``(1, rows, columns)``, or ``(3, ...)`` RGB for colour) with PixelSpacing,
    else ImagerPixelSpacing (``meta["spacing_known"]``).

    One enhanced multi-frame file (Enhanced CT / MR, tomosynthesis) is read whole as the same volume
    (:func:`tumorbench.data.dicom_multiframe.read_multiframe`, ``meta["frames"]``).

    Args:
        source: A folder (searched recursively), one file, or a list of files.
        series_uid: The SeriesInstanceUID to read when the source holds several.
    """
    origin, label, uid, paths = _select_series(source, series_uid)
    if len(paths) == 1:  # one parse of the header: pixel data deferred until decoded
        header = _headers(label, paths, defer_size="64 KB")[0]
        if frame_count(header) > 1 and not is_planar(1, header):  # enhanced CT / MR, DBT
            _check_decodable(header, paths[0])
            return read_multiframe(paths[0], origin, uid)
        slices = [read_slice(paths[0], header)]
    else:
        slices = [read_slice(p) for p in paths]
    datasets = [ds for ds, _ in slices]
    if is_planar(len(paths), datasets[0]):
        return dicom_planar_image(paths[0], *slices[0])
    colour = next((p for p, (_, pixels) in zip(paths, slices) if pixels.ndim != 2), None)
    if colour is not None:
        raise DataError(colour, COLOUR_SLICE)
    _check_consistent(paths, datasets)
    order, normal, step = _slice_order(label, paths, datasets)
    rescale = []
    volume = np.empty((datasets[0].Columns, datasets[0].Rows, len(paths)), dtype=np.float32)
    for k, n in enumerate(order):
        ds, pixels = slices[n]
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        volume[:, :, k] = pixels.T.astype(np.float64) * slope + intercept  # rows index j, columns i
        rescale.append((slope, intercept))
    first = datasets[order[0]]
    affine, spacing = _series_affine(first, paths[order[0]], normal, step)
    files = [str(paths[n]) for n in order]
    modality = str(first.get("Modality", ""))
    return dicom_volume(
        volume, affine, spacing, path=origin, series_uid=uid, modality=modality, rescale=rescale, files=files
    )
