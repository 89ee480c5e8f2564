"""Segmentation results as DICOM Segmentation objects (highdicom), for viewers and PACS.

A :class:`~tumorbench.results.SegmentationResult` made from a DICOM input is at that
input's voxel grid: slice k of the mask belongs to the k-th header of
:func:`tumorbench.data.dicom.dicom_series_headers` (slices in spatial order), with rows along
j and columns along i. :func:`to_dicom_seg` writes one binary segment per output channel,
referencing the source series and instances, each segment described as a tumor found by
the package's algorithm (name and version).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from tumorbench.data.dicom import dicom_series_headers
from tumorbench.errors import DataError
from tumorbench.uploads import UploadError, UploadLimits, sniff_format, unpack

MEDIA_TYPE = "application/dicom"
SERIES_NUMBER = 9001  # out of the way of the scanner's own series numbers


def _software_version() -> str:
    try:
        return f"tumorbench {version('tumorbench')}"
    except PackageNotFoundError:
        return "tumorbench"


def _frames(mask: np.ndarray, sources: Sequence[pydicom.Dataset]) -> np.ndarray:
    """``(frames, rows, columns, segments)`` from a ``(C, I, J, K)`` volume mask or a ``(C, rows, columns)`` 2D one."""
    if mask.ndim == 4:
        frames = np.transpose(mask, (3, 2, 1, 0))  # (C, I, J, K) -> (K, J=rows, I=columns, C)
    elif mask.ndim == 3:
        frames = np.transpose(mask, (1, 2, 0))[None]
    else:
        raise ValueError(f"mask of shape {mask.shape} is neither (C, I, J, K) nor (C, rows, columns)")
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    if frames.shape[:3] != (len(sources), rows, columns):
        raise ValueError(
            f"mask gives {frames.shape[0]} frames of {frames.shape[1]}x{frames.shape[2]}, the source "
            f"has {len(sources)} images of {rows}x{columns}"
        )
    return np.ascontiguousarray(frames, dtype=np.uint8)


def to_dicom_seg(
    mask: np.ndarray,
    sources: Sequence[pydicom.Dataset],
    *,
    algorithm_name: str,
    algorithm_version: str,
    segment_names: Sequence[str] | None = None,
) -> hd.seg.Segmentation:
    """A binary DICOM Segmentation of ``mask`` over the source images.

    Args:
        mask: ``uint8`` 0/1, ``(C, I, J, K)`` at the series' geometry or ``(C, rows, columns)`` for one image.
        sources: Source headers in k order (:func:`tumorbench.data.dicom.dicom_series_headers`).
        algorithm_name: The model (package) that segmented.
        algorithm_version: Its version.
        segment_names: One label per channel (default ``tumor``, or ``channel<c>``).
    """
    frames = _frames(np.asarray(mask), sources)
    count = frames.shape[-1]
    names = list(segment_names or (["tumor"] if count == 1 else [f"channel{c}" for c in range(count)]))
    if len(names) != count:
        raise ValueError(f"{len(names)} segment names for {count} mask channels")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=algorithm_version, family=codes.cid7162.ArtificialIntelligence
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=n + 1,
            segment_label=name,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Tumor,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for n, name in enumerate(names)
    ]
    return hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="tumorbench",
        manufacturer_model_name=algorithm_name[:64],
        software_versions=_software_version(),
        device_serial_number="none",
        series_description=f"tumorbench {algorithm_name}"[:64],
        content_label="TUMOR",
        content_description="Automatic tumor segmentation",
    )


def to_bytes(seg: hd.seg.Segmentation) -> bytes:
    """The object as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def result_to_dicom_seg(result: Any, sources: Sequence[pydicom.Dataset], manifest: Any, package_version: str) -> bytes:
    """A :class:`~tumorbench.results.SegmentationResult` as DICOM SEG file bytes (segments named as the channels)."""
    names = manifest.channel_names or (["tumor"] if len(result.mask) == 1 else None)
    seg = to_dicom_seg(
        result.mask,
        sources,
        algorithm_name=f"tumorbench {manifest.name}",
        algorithm_version=package_version,
        segment_names=names,
    )
    return to_bytes(seg)


def package_version(package: str | Path, manifest: Any) -> str:
    """The version a served package reports (``/v1/models``): folder name and creation time."""
    return f"{Path(package).resolve().name}@{manifest.created}"


def sources_for(path: str | Path, limits: UploadLimits = UploadLimits()) -> list[pydicom.Dataset]:
    """Source headers (k order) of a DICOM series folder, a DICOM file or a zipped series."""
    path = Path(path)
    if path.is_dir():
        return dicom_series_headers(path)
    return upload_sources(path.read_bytes(), limits, label=path.name)


def upload_sources(
    data: bytes, limits: UploadLimits = UploadLimits(), *, label: str = "upload"
) -> list[pydicom.Dataset]:
    """Source headers (k order) of an uploaded DICOM file or zipped DICOM series.

    Raises:
        UploadError: 422 when the upload is not DICOM (a DICOM SEG references DICOM instances).
    """
    with tempfile.TemporaryDirectory(prefix="tumorbench-seg-") as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(data)
        kind = sniff_format(path)
        if kind == "zip":
            files = unpack(path, Path(tmp) / "unpacked", limits, label)  # the same checks as the image reader
            kind = "dicom" if all(sniff_format(f) == "dicom" for f in files) else "zip of other files"
            path = Path(tmp) / "unpacked"
        if kind != "dicom":
            raise UploadError(
                label,
                f"a DICOM Segmentation answer needs a DICOM input (one DICOM file or a zip of "
                f"one DICOM series), got {kind or 'an unrecognised format'}: it references the "
                "DICOM instances it segments",
                422,
            )
        try:
            return dicom_series_headers(path if path.is_dir() else [path])
        except DataError as exc:  # the problem may name temporary files or UIDs; the upload was read already
            why = " (a multi-frame input: ask for JSON)" if "multi-frame" in exc.problem else ""
            raise UploadError(label, f"DICOM headers cannot be read for the segmentation object{why}", 422) from exc


def mask_from_dicom_seg(seg: hd.seg.Segmentation, sources: Sequence[pydicom.Dataset], dims: int = 3) -> np.ndarray:
    """Read a SEG back through highdicom: ``(C, I, J, K)``, or ``(C, rows, columns)`` when ``dims`` is 2."""
    uids = [str(ds.SOPInstanceUID) for ds in sources]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=list(seg.get_segment_numbers()),
        assert_missing_frames_are_empty=True,
    )  # (K, rows, columns, C)
    if dims == 2:
        return np.transpose(pixels[0], (2, 0, 1)).astype(np.uint8)
    return np.transpose(pixels, (3, 2, 1, 0)).astype(np.uint8)
