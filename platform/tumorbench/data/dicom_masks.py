"""DICOM SEG and RTSTRUCT objects read as the label maps of the series they reference.

Hospitals keep lesion outlines as DICOM: a Segmentation (SEG, from 3D Slicer, OHIF, AI tools) or an RT
Structure Set (RTSTRUCT, contours drawn for radiotherapy planning). :func:`read_dicom_mask` turns one into a
``uint8`` label map at the referenced series' voxel grid, with that series' affine, so a catalog row can name
the object as its mask and every reader of masks gets an array aligned with the image:

- SEG: the frames of each source image, through highdicom; the lesion segments (category "Morphologically
  abnormal structure" or a lesion-like label), else every segment, combined into labels 1, 2, ...;
- RTSTRUCT: each closed planar contour of the lesion ROIs (RT ROI Interpreted Type GTV or a lesion-like name;
  a structure set of one ROI is that ROI) filled on the slice it lies in; nested contours are holes.

The referenced series is found under the object's folder, its parent or its grandparent (a hospital export
keeps them in one study folder).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from tumorbench.data.dicom import MASK_MODALITIES, find_dicom_series, referenced_series_uid, series_geometry
from tumorbench.data.image import LPS_TO_RAS, ImageData, orientation_codes, spacing_from_affine
from tumorbench.data.layouts.common import LESION_NAME
from tumorbench.errors import DataError

ABNORMAL_STRUCTURE = "49755003"  # SNOMED CT "Morphologically abnormal structure"
_SEARCH_LEVELS = 3  # the object's folder and two above


def mask_modality(path: Path) -> str | None:
    """``SEG`` or ``RTSTRUCT`` for such a DICOM file, else None (one header read)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # not DICOM, or damaged: the image readers say what is wrong with it
        return None
    modality = str(ds.get("Modality", "") or "").upper()
    return modality if modality in MASK_MODALITIES else None


@functools.lru_cache(maxsize=64)
def _series_under(folder: str) -> dict[str, list[Path]]:
    try:
        return find_dicom_series(folder)
    except (DataError, OSError):  # no series here, or a folder this process may not read
        return {}


def _locate(path: Path, uid: str) -> list[Path]:
    folder = path.parent
    for _ in range(_SEARCH_LEVELS):
        if folder == folder.parent:  # never a walk of the whole file system
            break
        found = _series_under(str(folder)).get(uid)
        if found:
            return found
        folder = folder.parent
    raise DataError(path, "the series it references is not in its folder or the two above")  # a UID identifies


def read_dicom_mask(path: str | Path) -> ImageData:
    """A SEG or RTSTRUCT as a ``(I, J, K)`` label map at its referenced series' grid (RAS affine, as the series)."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DataError(path, f"unreadable DICOM object ({type(exc).__name__}: {exc})") from exc
    uid = referenced_series_uid(ds)
    if uid is None:
        raise DataError(path, f"{ds.get('Modality', 'DICOM')} object references no image series")
    headers, affine, shape = series_geometry(_locate(path, uid), series_uid=uid)
    if str(ds.Modality).upper() == "SEG":
        array = _seg_labels(path, ds, headers)
    else:
        array = _rtstruct_labels(path, ds, affine, shape)
    meta = {"path": str(path), "format": "dicom", "orientation": orientation_codes(affine), "series_uid": uid}
    return ImageData(array=array.astype(np.float32), affine=affine, spacing=spacing_from_affine(affine), meta=meta)


def _seg_labels(path: Path, ds: Any, headers: list[Any]) -> np.ndarray:
    import highdicom as hd

    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:
        raise DataError(path, f"not a readable DICOM Segmentation ({type(exc).__name__}: {exc})") from exc
    lesions = [
        s.segment_number
        for s in seg.SegmentSequence
        if str(s.SegmentedPropertyCategoryCodeSequence[0].CodeValue) == ABNORMAL_STRUCTURE
        or LESION_NAME.search(str(s.get("SegmentLabel", "")))
    ]
    try:
        frames = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[str(h.SOPInstanceUID) for h in headers],
            segment_numbers=lesions or None,
            combine_segments=True,
            relabel=True,
            skip_overlap_checks=True,
        )
    except Exception as exc:  # highdicom raises ValueError/KeyError/RuntimeError for frames it cannot place
        raise DataError(path, f"SEG frames cannot be placed on the referenced series ({exc})") from exc
    return np.transpose(np.asarray(frames), (2, 1, 0))  # (K, rows=J, columns=I) -> (I, J, K)


# Structures made from a lesion, not the lesion: an organ less it (TG-263's ``Lungs-GTV``), a margin or ring
# around it (``GTV+5mm``, ``GTV_ring``), planning volumes (``PTV_GTV``, ``ITV``) and helpers (``zGTV``, ``GTV_opt``)
DERIVED_ROI = re.compile(r"[-−]\s*gtv|minus|ring|shell|\+\s*\d|\d\s*mm|expan|margin|_opt|avoid|^z|^[pci]tv", re.I)


def _lesion_rois(path: Path, ds: Any) -> set[int]:
    """The ROIs the mask is made of: those typed GTV, else those named as a lesion and not made from one."""
    names = {int(r.ROINumber): str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])}
    kinds = {
        int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", "")).upper()
        for o in ds.get("RTROIObservationsSequence", [])
    }
    chosen = {n for n in names if kinds.get(n) == "GTV"} or {
        n for n in names if LESION_NAME.search(names[n]) and not DERIVED_ROI.search(names[n])
    }
    if chosen:
        return chosen
    if len(names) == 1:
        return set(names)
    listed = ", ".join(f"{names[n]} ({kinds.get(n) or 'no type'})" for n in sorted(names))
    raise DataError(
        path,
        f"no lesion among the {len(names)} ROIs ({listed}): name it GTV, tumor or lesion, "
        "or give the mask as a NIfTI file in labels.csv",
    )


def _rtstruct_labels(path: Path, ds: Any, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    rois = _lesion_rois(path, ds)
    to_voxel = np.linalg.inv(affine) @ LPS_TO_RAS  # patient (LPS, mm) -> voxel (i, j, k)
    mask = np.zeros(shape, np.uint8)
    for roi in ds.get("ROIContourSequence", []):
        if int(roi.ReferencedROINumber) not in rois:
            continue
        mask |= _fill_contours(path, roi, to_voxel, shape)
    return mask


def _fill_contours(path: Path, roi: Any, to_voxel: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """One ROI's closed planar contours filled on their slices; a contour inside another is a hole."""
    from skimage.draw import polygon

    mask = np.zeros(shape, np.uint8)
    for contour in roi.get("ContourSequence", []):
        if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper() != "CLOSED_PLANAR":
            continue  # points and open lines outline no area
        points = np.asarray(contour.ContourData, float).reshape(-1, 3)
        voxels = (to_voxel @ np.c_[points, np.ones(len(points))].T).T[:, :3]
        k = int(np.rint(voxels[0, 2]))
        if np.ptp(voxels[:, 2]) > 0.5 or not 0 <= k < shape[2]:
            raise DataError(path, f"a contour of ROI {roi.ReferencedROINumber} does not lie on a slice of the series")
        inside = np.zeros(shape[:2], np.uint8)  # voxels whose centres the contour encloses
        inside[polygon(voxels[:, 0], voxels[:, 1], shape=shape[:2])] = 1
        mask[:, :, k] ^= inside  # a contour inside another is a hole
    return mask
