"""Images labelled by a CSV (ISIC, HAM10000, Kaggle's train/ + train_labels.csv): read from the table, not the folders.

Read as class folders, these became classifiers of ``part_1`` against ``part_2`` or of ``train`` against ``test``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tumorbench.data.catalog import detect_layout, scan
from tumorbench.data.check import check_dataset
from tumorbench.errors import DataError
from tumorbench.study.generic import detect


def _jpg(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)
    return path


def test_one_hot_ground_truth_gives_the_class_of_the_one(tmp_path):
    lines = ["image,MEL,NV,UNK"]
    for i in range(4):
        _jpg(tmp_path / "ISIC_2019_Training_Input" / f"ISIC_{i:07d}.jpg", 10 * i)
        lines.append(f"ISIC_{i:07d},{float(i % 2)},{float(1 - i % 2)},0.0")
    (tmp_path / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(lines) + "\n")
    assert detect_layout(tmp_path) == ("csv", "images with their classes in ISIC_2019_Training_GroundTruth.csv")
    frame = scan(tmp_path).set_index("case_id")
    assert frame.loc["ISIC_2019_Training_Input/ISIC_0000001.jpg", "label"] == "MEL"
    assert frame.loc["ISIC_2019_Training_Input/ISIC_0000002.jpg", "label"] == "NV"
    found = detect(scan(tmp_path))
    assert (found.layout, found.task, found.template) == ("csv", "classification", "classification-2d")


def test_lesion_ids_group_images_and_folders_are_not_classes(tmp_path):
    rows = ["lesion_id;image_id;dx;age"]  # any separator
    for i in range(6):
        _jpg(tmp_path / f"HAM10000_images_part_{1 + i % 2}" / f"ISIC_{i:07d}.jpg", 20 * i)
        rows.append(f"HAM_{i // 2:07d};ISIC_{i:07d};{'mel' if i < 2 else 'nv'};50")
    (tmp_path / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
    frame = scan(tmp_path)
    assert sorted(frame["label"]) == ["mel", "mel", "nv", "nv", "nv", "nv"]
    by_image = frame.set_index(frame["image"].map(lambda paths: Path(paths[0]).name))
    assert (
        by_image.loc["ISIC_0000002.jpg", "patient_id"]
        == by_image.loc["ISIC_0000003.jpg", "patient_id"]
        == "HAM_0000001"
    )
    assert frame["patient_id"].nunique() == 3


def test_kaggle_ids_without_suffix_unlisted_images_and_missing_rows(tmp_path):
    (tmp_path / "train_labels.csv").write_text("id,label\nabc,1\ndef,0\nghi,0\n")
    (tmp_path / "sample_submission.csv").write_text("id,label\nzzz,0\n")  # also an image and a label column
    _jpg(tmp_path / "train" / "abc.tif", 1)
    _jpg(tmp_path / "train" / "def.tif", 2)
    _jpg(tmp_path / "test" / "zzz.tif", 3)
    assert detect_layout(tmp_path)[0] == "csv"
    frame = scan(tmp_path, strict=False)
    assert sorted(frame["case_id"]) == ["train/abc.tif", "train/def.tif"]
    assert list(frame.sort_values("case_id")["label"]) == ["1", "0"]
    [problem] = frame.attrs["problems"]
    assert "train_labels.csv" in problem and "row 4: no image file for id 'ghi'" in problem
    assert frame.attrs["notes"] == ["1 image file(s) under the root not listed in train_labels.csv: not used"]
    with pytest.raises(DataError, match="'ghi'"):
        scan(tmp_path)
    (tmp_path / "train_labels.csv").write_text("id,label\nabc,1\ndef,0\n")
    summary = check_dataset(tmp_path, duplicates=False, fingerprint=False)
    assert "a patient_id column in the CSV" in summary["details"]["patients_note"]


def test_class_folders_with_a_patients_csv_stay_class_folders(tmp_path):
    for cls in ("no", "yes"):
        _jpg(tmp_path / cls / f"{cls}1.jpg", 5)
    (tmp_path / "patients.csv").write_text("image,patient_id\nno/no1.jpg,P1\nyes/yes1.jpg,P2\n")  # no label column
    assert detect_layout(tmp_path)[0] == "image-folder"


def test_a_table_one_hot_in_its_first_rows_only_is_refused_by_name(tmp_path):
    rows = ["image,MEL,NV"] + [f"img{i},1,0" for i in range(60)] + ["img60,1,1"]  # a row with two classes
    for i in range(61):
        _jpg(tmp_path / "imgs" / f"img{i}.jpg", i)
    (tmp_path / "GroundTruth.csv").write_text("\ufeff" + "\n".join(rows) + "\n")  # with a byte-order mark
    assert detect_layout(tmp_path)[0] == "csv"  # the first 50 rows are one-hot
    with pytest.raises(DataError, match="GroundTruth.csv: the label column is not one-hot in every row"):
        scan(tmp_path)


def test_column_names_match_whatever_their_case_and_separators(tmp_path):
    """A CBIS-DDSM-style export: ``Patient ID``, ``image file path``, ``ROI mask file path``, ``Pathology``."""
    rows = ["Patient ID,left or right breast,image file path,ROI mask file path,Pathology"]
    for i in range(4):
        _jpg(tmp_path / "full" / f"P{i // 2}_{i}.png", 10 * i)
        _jpg(tmp_path / "roi" / f"P{i // 2}_{i}_roi.png", 255)
        rows.append(
            f"P_0000{i // 2},LEFT,full/P{i // 2}_{i}.png,roi/P{i // 2}_{i}_roi.png,{['BENIGN', 'MALIGNANT'][i % 2]}"
        )
    (tmp_path / "mass_case_description.csv").write_text("\n".join(rows) + "\n")
    assert detect_layout(tmp_path)[0] == "csv"
    frame = scan(tmp_path).set_index("case_id")
    assert frame["label"].to_dict() == {
        "full/P0_0.png": "BENIGN", "full/P0_1.png": "MALIGNANT", "full/P1_2.png": "BENIGN", "full/P1_3.png": "MALIGNANT"
    }  # fmt: skip
    assert frame["patient_id"].to_dict() == {
        "full/P0_0.png": "P_00000", "full/P0_1.png": "P_00000", "full/P1_2.png": "P_00001", "full/P1_3.png": "P_00001"
    }  # fmt: skip
    assert frame.loc["full/P1_3.png", "mask"] == str(tmp_path / "roi" / "P1_3_roi.png")
