"""DICOM SEG and RTSTRUCT read as the masks of the series they outline, at that series' voxel grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tumorbench.data.catalog import scan
from tumorbench.data.dicom import dicom_series_headers
from tumorbench.data.io import read_image
from tumorbench.data.synthetic_lung import LungPhantomConfig, make_lung_study
from tumorbench.dicomseg import to_dicom_seg
from tumorbench.errors import DataError
from tumorbench.study.generic import detect

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture
def lung(tmp_path) -> Path:
    root = make_lung_study(tmp_path / "lung", LungPhantomConfig(cases=2, shape=(24, 20, 16)))
    labels = pd.read_csv(root / "labels.csv")
    labels.drop(columns=["mask"]).to_csv(root / "labels.csv", index=False)  # the masks come from DICOM now
    return root


def _seg_from_nifti(series: Path, nifti: Path, out: Path) -> np.ndarray:
    mask = read_image(nifti).array.astype(np.uint8)
    seg = to_dicom_seg(mask[None], dicom_series_headers(series), algorithm_name="reader", algorithm_version="1")
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out, enforce_file_format=True)
    return mask


def test_seg_reads_back_as_the_mask_it_was_made_from(lung):
    case = lung / "SYNTH-LUNG-0000"
    mask = _seg_from_nifti(case / "scan_0", case / "scan_0_nodule_mask.nii.gz", case / "seg" / "tumor_seg.dcm")
    assert mask.sum() > 0
    image, seg = read_image(case / "scan_0"), read_image(case / "seg" / "tumor_seg.dcm")
    np.testing.assert_array_equal(seg.array, mask)  # voxel for voxel, at the series' (I, J, K)
    np.testing.assert_allclose(seg.affine, image.affine)
    canonical = read_image(case / "seg" / "tumor_seg.dcm", canonical=True)
    np.testing.assert_array_equal(canonical.array, read_image(case / "scan_0_nodule_mask.nii.gz", canonical=True).array)


def test_a_dicom_tree_with_seg_objects_is_a_segmentation_set(lung):
    for case in ("SYNTH-LUNG-0000", "SYNTH-LUNG-0001"):
        folder = lung / case
        _seg_from_nifti(folder / "scan_0", folder / "scan_0_nodule_mask.nii.gz", folder / "seg" / "seg.dcm")
        (folder / "scan_0_nodule_mask.nii.gz").unlink()
    labels = pd.read_csv(lung / "labels.csv")
    labels.drop(columns=["label"]).to_csv(lung / "labels.csv", index=False)
    frame = scan(lung)
    assert [Path(m).name for m in frame["mask"]] == ["seg.dcm", "seg.dcm"]
    assert frame.attrs["notes"] == ["2 DICOM SEG / RTSTRUCT object(s) read as the masks of their series"]
    found = detect(frame)
    assert (found.task, found.template) == ("segmentation", "segmentation-3d")


def _contour(points_ijk: np.ndarray, affine: np.ndarray) -> list[float]:
    lps = (LPS_TO_RAS @ affine @ np.c_[points_ijk, np.ones(len(points_ijk))].T).T[:, :3]
    return [round(float(v), 4) for v in lps.ravel()]


def _circle(ci: float, cj: float, k: int, r: float, n: int = 64) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[ci + r * np.cos(t), cj + r * np.sin(t), np.full(n, k)]


def _write_rtstruct(path: Path, series: Path, rois: list[tuple[str, str, list[np.ndarray]]]) -> Path:
    """An RT Structure Set over ``series``: ROIs (name, interpreted type, contours in voxel coordinates)."""
    image = read_image(series)
    headers = dicom_series_headers(series)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.PatientID = "RTSTRUCT", generate_uid(), headers[0].PatientID
    rt_series = Dataset()
    rt_series.SeriesInstanceUID = headers[0].SeriesInstanceUID
    rt_study = Dataset()
    rt_study.RTReferencedSeriesSequence = Sequence([rt_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = headers[0].get("FrameOfReferenceUID", generate_uid())
    frame.RTReferencedStudySequence = Sequence([rt_study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = Sequence(), Sequence(), Sequence()
    for number, (name, kind, contours) in enumerate(rois, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, name
        ds.StructureSetROISequence.append(roi)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType = kind
        ds.RTROIObservationsSequence.append(observation)
        outline = Dataset()
        outline.ReferencedROINumber = number
        outline.ContourSequence = Sequence()
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = _contour(points, image.affine)
            outline.ContourSequence.append(contour)
        ds.ROIContourSequence.append(outline)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_rtstruct_contours_fill_the_lesion_on_its_slices(lung):
    series = lung / "SYNTH-LUNG-0000" / "scan_0"
    body = np.array([[0, 0, 5], [23, 0, 5], [23, 19, 5], [0, 19, 5]], float)  # the whole slice: not a lesion
    gtv = [_circle(10, 9, 5, 4.0), _circle(10, 9, 5, 1.5), _circle(12, 8, 6, 3.0)]  # the second is a hole
    path = _write_rtstruct(
        lung / "SYNTH-LUNG-0000" / "rs" / "rs.dcm", series, [("BODY", "EXTERNAL", [body]), ("GTV_1", "GTV", gtv)]
    )
    mask = read_image(path).array
    assert mask.shape == read_image(series).array.shape
    assert set(np.flatnonzero(mask.sum(axis=(0, 1)))) == {5, 6}  # only the contoured slices
    i, j = np.mgrid[0:24, 0:20]
    expected = ((i - 10) ** 2 + (j - 9) ** 2 <= 16) & ~((i - 10) ** 2 + (j - 9) ** 2 <= 2.25)
    got = mask[:, :, 5] > 0
    assert 2 * (got & expected).sum() / (got.sum() + expected.sum()) > 0.9  # a 64-gon against a disk
    assert not got[10, 9]  # the hole
    disk = mask[:, :, 6] > 0
    assert np.mean(np.argwhere(disk), axis=0) == pytest.approx([12, 8], abs=0.3)


def test_rtstruct_structures_made_from_the_lesion_are_not_the_lesion(lung):
    series = lung / "SYNTH-LUNG-0000" / "scan_0"
    lesion, around = [_circle(10, 9, 5, 2.0)], [_circle(10, 9, 5, 6.0)]
    both_lungs = [np.array([[1, 1, 5], [22, 1, 5], [22, 18, 5], [1, 18, 5]], float)]
    rois = [("Lungs-GTV", "ORGAN", both_lungs), ("GTV+5mm", "", around), ("zGTV_opt", "", around)]
    expected = (lambda i, j: (i - 10) ** 2 + (j - 9) ** 2 <= 4)(*np.mgrid[0:24, 0:20])

    def dice(path: Path) -> float:
        got = read_image(path).array[:, :, 5] > 0
        return 2 * (got & expected).sum() / (got.sum() + expected.sum())

    untyped = _write_rtstruct(lung / "untyped" / "rs.dcm", series, [*rois, ("GTV_1", "", lesion)])
    assert dice(untyped) > 0.8  # the lesion by its name alone, not the lungs or the margin around it
    named = [*rois, ("Tumour bed", "", around), ("T1", "GTV", lesion)]
    typed = _write_rtstruct(lung / "typed" / "rs.dcm", series, named)
    assert dice(typed) > 0.8  # a GTV type wins over names


def test_rtstruct_without_a_lesion_roi_names_its_rois(lung):
    series = lung / "SYNTH-LUNG-0000" / "scan_0"
    organ = [_circle(10, 9, 5, 4.0)]
    path = _write_rtstruct(lung / "rs.dcm", series, [("Heart", "ORGAN", organ), ("Lung_L", "ORGAN", organ)])
    with pytest.raises(DataError, match=r"no lesion among the 2 ROIs \(Heart \(ORGAN\), Lung_L \(ORGAN\)\)"):
        read_image(path)
    ds = pydicom.dcmread(path)
    ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[
        0
    ].SeriesInstanceUID = generate_uid()
    ds.save_as(path)
    with pytest.raises(DataError, match="the series it references is not in its folder or the two above"):
        read_image(path)


def test_an_uploaded_seg_is_refused_not_read_at_a_series_found_beside_it(lung):
    from tumorbench.uploads import UploadError, read_upload

    case = lung / "SYNTH-LUNG-0000"
    upload = case / "uploads" / "request-1"  # a series sits two folders up: the reader would have found it
    mask = np.zeros((1, 24, 20, 16), np.uint8)
    mask[0, 5:9, 5:9, 7] = 1  # one slice: a one-frame SEG passes the multi-frame check
    seg = to_dicom_seg(mask, dicom_series_headers(case / "scan_0"), algorithm_name="reader", algorithm_version="1")
    upload.parent.mkdir()
    seg.save_as(upload, enforce_file_format=True)
    assert read_image(upload).array.shape == read_image(case / "scan_0").array.shape  # in a catalog it is a mask
    with pytest.raises(UploadError, match="a DICOM SEG object outlines a series and holds no image") as err:
        read_upload(upload, label="upload")
    assert err.value.status == 415
