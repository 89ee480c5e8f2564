"""Hospital DICOM exports as they come: raw identity refused unasked, blanked PatientIDs, flat folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from tumorbench.data.catalog import scan
from tumorbench.data.layouts.dicom import KEEP_IDENTIFIERS_ENV
from tumorbench.data.writers import write_dicom_series
from tumorbench.errors import DataError

MRN, NAME = "MRN0048151623", "DOE_JANE"


def _series(root: Path, folder: str, patient: str, *, marked: bool) -> None:
    files = write_dicom_series(
        root / folder, np.zeros((8, 8, 3)), np.eye(4), patient_id=patient, uid_seed=folder + patient
    )
    if not marked:  # as a PACS export: neither mark
        for path in files:
            ds = pydicom.dcmread(path)
            del ds.PatientIdentityRemoved, ds.DeidentificationMethod
            ds.save_as(path)


def test_raw_series_are_refused_unless_identifiers_may_stay(tmp_path, monkeypatch):
    monkeypatch.delenv(KEEP_IDENTIFIERS_ENV, raising=False)
    _series(tmp_path, f"{NAME}/CT_1", MRN, marked=False)
    _series(tmp_path, f"{NAME}/CT_2", MRN, marked=True)
    _series(tmp_path, "other/CT", "P2", marked=True)
    with pytest.raises(DataError) as caught:
        scan(tmp_path)
    message = str(caught.value)
    assert "1 of 3 series not marked de-identified (PatientIdentityRemoved is not YES)" in message
    assert "`tumorbench data deid`" in message and KEEP_IDENTIFIERS_ENV in message
    assert MRN not in message and NAME not in message  # the folder named for the patient is not shown either
    [problem] = scan(tmp_path, strict=False).attrs["problems"]  # data check lists it
    assert "not marked de-identified" in problem
    monkeypatch.setenv(KEEP_IDENTIFIERS_ENV, "1")
    frame = scan(tmp_path)
    assert sorted(frame["patient_id"]) == [MRN, MRN, "P2"]

    from tumorbench.training.trainer import job_env

    assert job_env()[KEEP_IDENTIFIERS_ENV] == "1"  # the workers, which read the catalog again, keep them too
    monkeypatch.delenv(KEEP_IDENTIFIERS_ENV)
    assert KEEP_IDENTIFIERS_ENV not in job_env()


def test_a_blank_patient_id_groups_a_top_folders_series_and_a_shared_one_is_said(tmp_path):
    for patient in ("a", "b"):
        for scan_name in ("ct0", "ct1"):
            _series(tmp_path / "blank", f"{patient}/study/{scan_name}", "", marked=True)
            _series(tmp_path / "same", f"{patient}/study/{scan_name}", "ANONYMOUS", marked=True)
    blank = scan(tmp_path / "blank")
    assert blank.set_index("case_id")["patient_id"].to_dict() == {
        "a/study/ct0": "a",
        "a/study/ct1": "a",
        "b/study/ct0": "b",
        "b/study/ct1": "b",
    }  # before: each series its own patient, so a patient's two scans could fall in two folds
    assert blank.attrs["notes"][-1].startswith("4 series without a PatientID: each grouped with the series under")
    same = scan(tmp_path / "same")
    assert same["patient_id"].nunique() == 1
    assert same.attrs["notes"][-1].startswith("all 4 series carry the same PatientID")


def test_several_series_in_one_folder_are_each_a_case_read_by_its_uid(tmp_path):
    from tumorbench.data.io import read_image

    for n, value in ((1, 100.0), (2, 300.0)):  # a flat export: two series' files side by side
        files = write_dicom_series(
            tmp_path / f"s{n}", np.full((8, 8, 3), value), np.eye(4), patient_id="P1", uid_seed=f"s{n}"
        )
        (tmp_path / "flat").mkdir(exist_ok=True)
        for path in files:
            path.rename(tmp_path / "flat" / f"s{n}_{path.name}")
        (tmp_path / f"s{n}").rmdir()
    frame = scan(tmp_path).set_index("case_id")  # before: "case ids not unique"
    assert list(frame.index) == ["flat/series-1", "flat/series-2"]
    for case, value in (("flat/series-1", 100.0), ("flat/series-2", 300.0)):
        image = read_image(frame.loc[case, "image"][0], series_uid=frame.loc[case, "series_uid"])
        assert image.array.shape == (8, 8, 3) and np.allclose(image.array, value)
    assert frame.attrs["notes"][0].startswith("1 folder(s) holding several series: each series a case")
    from tumorbench.data.dicom import read_dicom_series

    with pytest.raises(DataError, match=r"2 DICOM series found \(series #\w{8} \(3 files\), series #\w{8}") as caught:
        read_dicom_series(tmp_path / "flat")
    with pytest.raises(DataError, match=r"series #\w{8} not found among its 2 series") as missing:
        read_dicom_series(tmp_path / "flat", series_uid="1.2.3")
    for uid in [*frame["series_uid"], "1.2.3"]:  # a UID would identify the study in a log
        assert uid not in str(caught.value) and uid not in str(missing.value)


def test_dcm_files_without_the_preamble_are_counted_not_dropped_silently(tmp_path):
    files = write_dicom_series(tmp_path / "ct", np.zeros((8, 8, 3)), np.eye(4), patient_id="P1", uid_seed="bare")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "x.dcm").write_bytes(files[0].read_bytes()[132:])  # no 128-byte preamble, no "DICM"
    notes = scan(tmp_path).attrs["notes"]
    assert "skipped DICOM files that hold no image to read: 1 x .dcm file without the DICM preamble, not read" in notes
    with pytest.raises(DataError, match=r"no DICOM series found \(1 \.dcm file\(s\) without the DICM preamble"):
        scan(tmp_path / "raw", "dicom")


def test_a_3_plane_localizer_beside_the_scans_is_left_out_of_the_dataset(tmp_path):
    _series(tmp_path, "p1/t2", "P1", marked=True)
    localizer = tmp_path / "p1" / "localizer"
    for n, iop in enumerate(([1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1])):  # axial, sagittal, coronal
        one = np.zeros((8, 8, 1))
        files = write_dicom_series(localizer / f"plane{n}", one, np.eye(4), patient_id="P1", uid_seed="loc")
        ds = pydicom.dcmread(files[0])
        ds.ImageOrientationPatient, ds.ImageType = iop, ["ORIGINAL", "PRIMARY", "M", "NORM"]  # not marked LOCALIZER
        ds.save_as(localizer / f"{n}.dcm")
        files[0].unlink()
        (localizer / f"plane{n}").rmdir()
    frame = scan(tmp_path)  # before: a case, whose slices the reader refused, so the whole study was refused
    assert list(frame["case_id"]) == ["p1/t2"]
    assert (
        "skipped DICOM files that hold no image to read: 3 x localizer (slices in several planes)"
        in frame.attrs["notes"]
    )


def test_a_single_file_that_cannot_be_a_slice_is_refused_at_planning(tmp_path):
    from tumorbench.data.dicom import check_series

    [path] = write_dicom_series(tmp_path / "dose", np.zeros((8, 8, 1)), np.eye(4), patient_id="P1", uid_seed="d")
    assert check_series(path.parent) is None  # a one-slice CT: fine
    ds = pydicom.dcmread(path)
    del ds.ImageOrientationPatient  # a CT dose report's screen capture: Modality CT, no patient orientation
    ds.save_as(path)
    with pytest.raises(DataError, match="ImageOrientationPatient"):
        check_series(path.parent)  # before: passed, and a Train worker met the error mid-study


def test_several_radiographs_in_one_series_are_each_a_2d_case(tmp_path):
    from tumorbench.data.io import read_image

    files = write_dicom_series(tmp_path / "mg", np.zeros((8, 8, 2)), np.eye(4), patient_id="P1", uid_seed="mg")
    for path in files:  # a mammogram's views: one series, no patient orientation
        ds = pydicom.dcmread(path)
        ds.Modality = "MG"
        del ds.ImageOrientationPatient, ds.ImagePositionPatient
        ds.save_as(path)
    frame = scan(tmp_path).set_index("case_id")  # before: one "volume", refused for its missing orientation
    assert list(frame.index) == ["mg/image-1", "mg/image-2"] and frame["planar"].all()
    image = read_image(frame.loc["mg/image-2", "image"][0])
    assert image.meta["format"] == "image2d" and image.array.shape == (1, 8, 8)
