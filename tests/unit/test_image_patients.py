"""Class-folder sets: patients.csv maps images to patients, so splits keep a patient's images together."""

from __future__ import annotations

import pytest
from tests.conftest import write_blob_folders

from tumorbench.data.catalog import scan
from tumorbench.data.check import check_dataset
from tumorbench.data.splits import SplitConfig, fold_frames, make_splits
from tumorbench.errors import DataError


def test_without_patients_csv_each_image_is_its_own_patient_and_check_says_so(tmp_path):
    write_blob_folders(tmp_path, n=3)
    frame = scan(tmp_path)
    assert frame["patient_id"].tolist() == frame["case_id"].tolist()
    assert "its own patient" in check_dataset(tmp_path, duplicates=False)["details"]["patients_note"]


def test_patients_csv_groups_images_by_relative_path_or_file_name(tmp_path):
    write_blob_folders(tmp_path, n=3)
    (tmp_path / "patients.csv").write_text(
        "image,patient_id\nyes/yes0.png,P1\nno/no0.png,P1\nyes1.png,P2\nno\\no1.png,P2\nyes/yes2.png,P3\nno/no2.png,P3\n"
    )
    frame = scan(tmp_path).set_index("case_id")
    assert frame["patient_id"].to_dict() == {
        "no/no0.png": "P1",
        "no/no1.png": "P2",
        "no/no2.png": "P3",
        "yes/yes0.png": "P1",
        "yes/yes1.png": "P2",
        "yes/yes2.png": "P3",
    }
    assert "patients_note" not in check_dataset(tmp_path, duplicates=False)["details"]


def test_patients_csv_keeps_a_patients_images_in_one_fold(tmp_path):
    write_blob_folders(tmp_path, n=6)
    rows = [f"{c}/{c}{i}.png,P{i // 2}" for c in ("no", "yes") for i in range(6)]
    (tmp_path / "patients.csv").write_text("path,patient_id\n" + "\n".join(rows) + "\n")
    frame = scan(tmp_path)
    doc = make_splits(frame, SplitConfig(n_folds=3, seed=0, dedupe=False))
    for fold in range(3):
        train, val = fold_frames(frame, doc, fold)
        # one patient per fold: 2 images x 2 classes
        assert len(val) == 4 and not set(train["patient_id"]) & set(val["patient_id"])


def test_unlisted_images_are_reported_and_bad_files_name_the_problem(tmp_path):
    write_blob_folders(tmp_path, n=2)
    (tmp_path / "patients.csv").write_text("image,patient_id\nyes/yes0.png,P1\n")
    frame = scan(tmp_path, strict=False)
    assert frame.attrs["problems"] == [f"{tmp_path / 'patients.csv'}: 3 image(s) not listed: each is its own patient"]
    with pytest.raises(DataError, match="not listed"):
        scan(tmp_path)
    (tmp_path / "patients.csv").write_text("file_name,patient\nyes/yes0.png,P1\n")
    with pytest.raises(DataError, match="needs an image"):
        scan(tmp_path)


def test_a_patients_csv_of_one_image_each_is_not_called_missing(tmp_path):
    write_blob_folders(tmp_path, n=2)
    rows = [f"{c}/{c}{i}.png,P-{c}{i}" for c in ("no", "yes") for i in range(2)]  # a patient per image, said so
    (tmp_path / "patients.csv").write_text("image,patient_id\n" + "\n".join(rows) + "\n")
    assert "patients_note" not in check_dataset(tmp_path, duplicates=False)["details"]
