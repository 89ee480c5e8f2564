"""Public releases as they ship, where a generic rule would misread them: groups, timepoints, parts, links."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorbench.data import luna16
from tumorbench.data.catalog import detect_layout, scan
from tumorbench.data.layouts.common import data_files
from tumorbench.errors import DataError


def _nifti(path: Path, shape=(6, 6, 4), value=1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, np.float32), np.eye(4)), path)
    return path


def _brats_case(root: Path, case: str, sep: str = "_", names=("t1", "t1ce", "t2", "flair", "seg")) -> None:
    for name in names:
        _nifti(root / case / f"{case}{sep}{name}.nii.gz", value=0 if name == "seg" else 1)


def test_brats_2019_hgg_and_lgg_groups_are_one_brats_set_not_two_classes(tmp_path):
    # MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/BraTS19_<site>_<id>_1/, CSVs beside the groups
    for group, case in (("HGG", "BraTS19_2013_2_1"), ("HGG", "BraTS19_CBICA_AAB_1"), ("LGG", "BraTS19_TMC_09043_1")):
        _brats_case(tmp_path / group, case)
    (tmp_path / "name_mapping.csv").write_text("Grade,BraTS_2019_subject_ID\nHGG,BraTS19_2013_2_1\n")
    layout, why = detect_layout(tmp_path)
    assert layout == "brats" and why == "BraTS case folders in HGG/, LGG/ (groups of cases)"
    frame = scan(tmp_path).set_index("case_id")
    assert sorted(frame.index) == ["BraTS19_2013_2_1", "BraTS19_CBICA_AAB_1", "BraTS19_TMC_09043_1"]
    assert frame["label"].isna().all()  # not HGG vs LGG, whose "images" would hold the segmentations
    assert all(len(images) == 4 and not any("_seg" in p for p in images) for images in frame["image"])
    assert frame.loc["BraTS19_TMC_09043_1", "mask"].endswith("LGG/BraTS19_TMC_09043_1/BraTS19_TMC_09043_1_seg.nii.gz")
    # a group beside a folder that holds no BraTS cases is no BraTS set
    _nifti(tmp_path / "other" / "scan.nii.gz")
    assert detect_layout(tmp_path)[0] != "brats"


def test_brats_2023_timepoints_of_one_patient_are_one_patient(tmp_path):
    for case in ("BraTS-GLI-00017-000", "BraTS-GLI-00017-001", "BraTS-GLI-00020-000", "BraTS-MEN-00017-000"):
        _brats_case(tmp_path, case, "-", ("t1n", "t1c", "t2w", "t2f", "seg"))
    frame = scan(tmp_path).set_index("case_id")
    assert frame["patient_id"].to_dict() == {
        "BraTS-GLI-00017-000": "BraTS-GLI-00017",
        "BraTS-GLI-00017-001": "BraTS-GLI-00017",
        "BraTS-GLI-00020-000": "BraTS-GLI-00020",
        "BraTS-MEN-00017-000": "BraTS-MEN-00017",  # another collection's patient 17
    }
    assert frame.attrs["notes"] == ["4 cases of 3 patients: a patient's timepoints are kept in one fold"]


def _msd(root: Path, test_folder: bool) -> None:
    _nifti(root / "imagesTr" / "BRATS_001.nii.gz", shape=(4, 4, 4, 2))
    _nifti(root / "labelsTr" / "BRATS_001.nii.gz")
    if test_folder:
        _nifti(root / "imagesTs" / "BRATS_900.nii.gz", shape=(4, 4, 4, 2))
    spec = {
        "modality": {"0": "FLAIR", "1": "T1w"},
        "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
        "test": ["./imagesTs/BRATS_900.nii.gz", "./imagesTs/BRATS_901.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(spec))


def test_an_msd_task_without_its_unlabelled_test_images_still_reads(tmp_path):
    _msd(tmp_path, test_folder=False)
    frame = scan(tmp_path)  # strict: a missing training case would raise
    assert list(frame["case_id"]) == ["BRATS_001"]
    assert frame.attrs["notes"] == ["2 unlabelled test case(s) of dataset.json not found (imagesTs/): not read"]
    (tmp_path / "labelsTr" / "BRATS_001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"label of BRATS_001\.nii\.gz listed in dataset\.json but missing"):
        scan(tmp_path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_linked_folders_and_files_are_read_under_their_own_names(tmp_path):
    store = tmp_path / "scratch"
    _nifti(store / "flair.nii.gz", shape=(4, 4, 4, 2))
    _nifti(store / "seg.nii.gz")
    root = tmp_path / "Task01"
    _msd(root, test_folder=True)
    for name, target in (("imagesTr/BRATS_001.nii.gz", "flair.nii.gz"), ("labelsTr/BRATS_001.nii.gz", "seg.nii.gz")):
        (root / name).unlink()
        (root / name).symlink_to(store / target)
    frame = scan(root).set_index("case_id")  # named by the link, not by its target's "flair"
    assert "BRATS_001" in frame.index and frame.loc["BRATS_001", "mask"].endswith("labelsTr/BRATS_001.nii.gz")
    # a walk over a folder gathered by links: the linked folder is walked, a link back up is not a loop
    gathered = tmp_path / "gathered"
    gathered.mkdir()
    (gathered / "part1").symlink_to(store, target_is_directory=True)
    (gathered / "part1" / "up").symlink_to(gathered, target_is_directory=True)
    assert [p.relative_to(gathered).as_posix() for p in data_files(gathered)] == [
        "part1/flair.nii.gz",
        "part1/seg.nii.gz",
    ]


def _mhd(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\nElementDataFile = x.raw\n"
    )


@pytest.mark.parametrize("subsets", [1, 3, 10])
def test_luna16_with_its_lung_masks_is_sent_to_the_converter_which_leaves_them_out(tmp_path, subsets):
    uids = [f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{n}" for n in range(subsets)]
    for n, uid in enumerate(uids):
        _mhd(tmp_path / f"subset{n}" / f"{uid}.mhd")
        _mhd(tmp_path / "seg-lungs-LUNA16" / f"{uid}.mhd")  # lung masks, named as the scans
    (tmp_path / "CSVFILES").mkdir()
    (tmp_path / "CSVFILES" / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    with pytest.raises(DataError, match=r"LUNA16's nodule list\? `tumorbench data luna16"):
        detect_layout(tmp_path)
    found = luna16.scans(tmp_path)
    assert sorted(found) == sorted(uids)
    assert all(path.parent.name.startswith("subset") for path in found.values())
