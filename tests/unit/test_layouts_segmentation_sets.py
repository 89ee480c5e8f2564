"""Segmentation sets as users have them: image and mask folders, nnU-Net raw datasets, KiTS-style case folders.

Each was read as class folders (a classifier of images against masks, or one class per patient) or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tumorbench.data.catalog import data_dims, detect_layout, scan
from tumorbench.errors import DataError
from tumorbench.study.generic import detect


def _png(path: Path, value: int = 0, size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros(size, np.uint8)
    pixels[2:5, 2:5] = value
    Image.fromarray(pixels).save(path)
    return path


def _nifti(path: Path, value: float = 1.0, shape=(6, 6, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros(shape, np.float32)
    array[1:3, 1:3, 1:3] = value
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


def test_image_and_mask_folders_are_paired_not_two_classes(tmp_path):
    for i in range(3):  # Kvasir-SEG: the same names in both folders; ISIC: JPEG images, <image>_segmentation.png
        _png(tmp_path / "kvasir" / "images" / f"polyp{i}.png", 90)
        _png(tmp_path / "kvasir" / "masks" / f"polyp{i}.png", 255)
        Image.new("RGB", (8, 8)).save(_png(tmp_path / "isic" / "Training_Input" / f"ISIC_{i:07d}.jpg"))
        _png(tmp_path / "isic" / "Training_GroundTruth" / f"ISIC_{i:07d}_segmentation.png", 255)
    assert detect_layout(tmp_path / "kvasir") == ("paired", "images in images/, masks in masks/ paired by name")
    for name, first in (("kvasir", "polyp0"), ("isic", "ISIC_0000000")):
        frame = scan(tmp_path / name).set_index("case_id")
        assert frame.attrs["layout"] == "paired" and len(frame) == 3
        assert frame["label"].isna().all()  # no classes: "images" and "masks" are not labels
        mask = Path(frame.loc[first, "mask"])
        assert mask.parent.name in ("masks", "Training_GroundTruth") and mask.name.startswith(first)
        assert frame.loc[first, "patient_id"] == first
    found = detect(scan(tmp_path / "isic"))
    assert (found.task, found.spatial_dims, found.template) == ("segmentation", 2, "segmentation-2d")


def test_unpaired_files_are_named_and_numbered_images_stay_single(tmp_path):
    for i in range(4):  # img_0000 ... look like nnU-Net channel files but pair one by one with their masks
        _png(tmp_path / "images" / f"img_{i:04d}.png")
        _png(tmp_path / "masks" / f"img_{i:04d}_mask.png")
    frame = scan(tmp_path)
    assert sorted(frame["case_id"]) == ["img_0000", "img_0001", "img_0002", "img_0003"]
    assert set(frame["channels"]) == {("image",)}
    _png(tmp_path / "images" / "lonely.png")
    _png(tmp_path / "masks" / "stray_mask.png")
    frame = scan(tmp_path, strict=False)
    assert len(frame) == 4
    problems = frame.attrs["problems"]
    assert any("lonely.png" in p and "no mask for case lonely in masks/" in p for p in problems)
    assert any("stray_mask.png" in p and "mask without its image" in p for p in problems)
    with pytest.raises(DataError, match="lonely.png"):
        scan(tmp_path)


def _nnunet_cases(root: Path, cases: list[str], channels: int, ending: str = ".nii.gz", test: bool = True) -> None:
    for case in cases:
        for c in range(channels):
            _nifti(root / "imagesTr" / f"{case}_{c:04d}{ending}", value=10.0 * (c + 1))
        _nifti(root / "labelsTr" / f"{case}{ending}")
    if test:
        for c in range(channels):
            _nifti(root / "imagesTs" / f"new_001_{c:04d}{ending}")


def test_nnunet_v2_dataset_reads_channel_files_in_order(tmp_path):
    root = tmp_path / "Dataset502_Prostate"
    _nnunet_cases(root, ["prostate_00", "prostate_01", "prostate_02"], channels=2)
    spec = {"channel_names": {"1": "ADC", "0": "T2"}, "labels": {"background": 0, "PZ": 1, "TZ": 2}}
    (root / "dataset.json").write_text(json.dumps(spec | {"numTraining": 3, "file_ending": ".nii.gz"}))
    frame = scan(root).set_index("case_id")
    assert frame.attrs["layout"] == "msd" and sorted(frame.index) == [
        "new_001",
        "prostate_00",
        "prostate_01",
        "prostate_02",
    ]
    case = frame.loc["prostate_01"]
    assert case["channels"] == ("T2", "ADC")  # channel_names by index, not by key order in the file
    assert [Path(p).name for p in case["image"]] == ["prostate_01_0000.nii.gz", "prostate_01_0001.nii.gz"]
    assert [float(nib.load(p).get_fdata().max()) for p in case["image"]] == [10.0, 20.0]
    assert Path(case["mask"]).name == "prostate_01.nii.gz"
    assert frame.loc["new_001", "mask"] is None  # imagesTs: unlabelled
    assert data_dims(scan(root)) == 3
    spec["file_ending"] = ".npz"  # nnU-Net's preprocessed arrays, not raw images
    (root / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match=r"dataset.json: file_ending \.npz: only volumes \(\.nii, \.nii\.gz, \.mha"):
        scan(root)


def test_nnunet_held_out_cases_are_a_test_set_only_through_images_ts(tmp_path):
    from types import SimpleNamespace

    from tumorbench.data.locked_test import check_locked_test
    from tumorbench.study.final import check_test_set, check_test_targets
    from tumorbench.tasks import get_task

    root = tmp_path / "Dataset502_Prostate"
    _nnunet_cases(root, ["prostate_00", "prostate_01", "prostate_02"], channels=2)
    _nifti(root / "imagesTs" / "new_002_0000.nii.gz")
    _nifti(root / "imagesTs" / "new_002_0001.nii.gz")
    spec = {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "PZ": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match=r"imagesTs: no labelsTs/ beside it"):
        scan(root / "imagesTs")
    for case in ("new_001", "new_002"):
        _nifti(root / "labelsTs" / f"{case}.nii.gz")
    train = scan(root)  # the dataset's root never reads labelsTs: held-out cases stay unlabelled there
    assert train.set_index("case_id").loc[["new_001", "new_002"], "mask"].isna().all()
    assert detect_layout(root / "imagesTs")[0] == "msd"
    test = scan(root / "imagesTs").set_index("case_id")
    assert sorted(test.index) == ["new_001", "new_002"] and set(test["channels"]) == {("T2", "ADC")}
    assert [Path(p).name for p in test.loc["new_002", "image"]] == ["new_002_0000.nii.gz", "new_002_0001.nii.gz"]
    assert Path(test.loc["new_002", "mask"]).name == "new_002.nii.gz"
    check_test_targets("segmentation", train, test.reset_index(), "imagesTs")
    usable = get_task("segmentation").usable(train)  # what trains: the unlabelled held-out rows do not
    assert sorted(usable["case_id"]) == ["prostate_00", "prostate_01", "prostate_02"]
    with pytest.raises(DataError, match="patient new_001 is in both"):  # the whole catalog lists them
        check_locked_test(train, test.reset_index(), "imagesTs")
    check_test_set(SimpleNamespace(task="segmentation", test="imagesTs"), train, test.reset_index())


def test_nnunet_2d_png_dataset_is_2d(tmp_path):
    root = tmp_path / "Dataset120_Roads"
    for case in ("img_1", "img_2", "img_3"):
        for c in range(3):
            _png(root / "imagesTr" / f"{case}_{c:04d}.png", 40 * (c + 1))
        _png(root / "labelsTr" / f"{case}.png", 1)
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "R", "1": "G", "2": "B"}, "file_ending": ".png"})
    )
    frame = scan(root)
    assert len(frame) == 3 and set(frame["channels"]) == {("R", "G", "B")}
    found = detect(frame)
    assert (found.spatial_dims, found.template) == (2, "segmentation-2d")


def test_nnunet_v1_task_lists_cases_stored_per_channel(tmp_path):
    root = tmp_path / "Task05_Prostate"
    _nnunet_cases(root, ["prostate_00", "prostate_01"], channels=2, test=False)
    training = [
        {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ("prostate_00", "prostate_01")
    ]
    training.append({"image": "./imagesTr/prostate_09.nii.gz", "label": "./labelsTr/prostate_09.nii.gz"})
    (root / "dataset.json").write_text(
        json.dumps({"modality": {"0": "T2", "1": "ADC"}, "training": training, "test": []})
    )
    frame = scan(root, strict=False).set_index("case_id")
    assert sorted(frame.index) == ["prostate_00", "prostate_01"]
    assert [Path(p).name for p in frame.loc["prostate_00", "image"]] == [
        "prostate_00_0000.nii.gz",
        "prostate_00_0001.nii.gz",
    ]
    assert frame.loc["prostate_00", "channels"] == ("T2", "ADC")
    [problem] = frame.attrs["problems"]
    assert "prostate_09.nii.gz" in problem and "listed in dataset.json but missing" in problem


def test_imagestr_and_labelstr_without_dataset_json_are_paired(tmp_path):
    _nnunet_cases(tmp_path, ["liver_0", "liver_1", "liver_2"], channels=1)
    assert detect_layout(tmp_path)[0] == "paired"  # not two classes, imagesTr and labelsTr
    frame = scan(tmp_path).set_index("case_id")
    assert sorted(frame.index) == ["liver_0", "liver_1", "liver_2", "new_001"]
    assert Path(frame.loc["liver_2", "mask"]).name == "liver_2.nii.gz"
    assert frame.loc["new_001", "mask"] is None


def test_kits_case_folders_are_cases_not_classes(tmp_path):
    for i in range(3):  # KiTS: case_00000/imaging.nii.gz + segmentation.nii.gz
        _nifti(tmp_path / f"case_{i:05d}" / "imaging.nii.gz")
        _nifti(tmp_path / f"case_{i:05d}" / "segmentation.nii.gz")
    _nifti(tmp_path / "case_00003" / "imaging.nii.gz")  # not yet segmented
    assert detect_layout(tmp_path)[0] == "case-folders"
    frame = scan(tmp_path).set_index("case_id")
    assert sorted(frame.index) == ["case_00000", "case_00001", "case_00002", "case_00003"]
    assert frame["label"].isna().all() and frame.loc["case_00001", "channels"] == ("imaging",)
    assert Path(frame.loc["case_00001", "mask"]).name == "segmentation.nii.gz"
    assert frame.loc["case_00003", "mask"] is None
    assert detect(scan(tmp_path)).template == "segmentation-3d"


def test_case_folders_name_channels_by_role_and_refuse_odd_ones(tmp_path):
    for p in ("p01", "p02", "p03"):  # the folder's name as a prefix is not part of the role
        for channel in ("t2", "adc"):
            _nifti(tmp_path / p / f"{p}_{channel}.nii.gz")
        _nifti(tmp_path / p / f"{p}_seg.nii.gz")
    _nifti(tmp_path / "p04" / "p04_t2.nii.gz")
    _nifti(tmp_path / "p04" / "p04_seg.nii.gz")
    frame = scan(tmp_path, strict=False).set_index("case_id")
    assert sorted(frame.index) == ["p01", "p02", "p03"]
    assert frame.loc["p02", "channels"] == ("adc", "t2")
    assert [Path(p).name for p in frame.loc["p02", "image"]] == ["p02_adc.nii.gz", "p02_t2.nii.gz"]
    [problem] = frame.attrs["problems"]
    assert "p04" in problem and "channels t2 where 3 cases have adc + t2" in problem


def test_an_image_folder_named_otherwise_pairs_when_its_files_do(tmp_path):
    for i in range(3):  # Kaggle's Carvana shape: train/ + train_masks/ (<image>_mask.gif there, PNG here)
        _png(tmp_path / "set" / "train" / f"car{i}.png", 90)
        _png(tmp_path / "set" / "train_masks" / f"car{i}_mask.png", 255)
    _nifti(tmp_path / "set" / "labelsTs" / "ignored.nii.gz")  # nnU-Net's test masks beside: not a third folder
    assert detect_layout(tmp_path / "set")[0] == "paired"
    assert sorted(scan(tmp_path / "set")["case_id"]) == ["car0", "car1", "car2"]
    for i in range(3):  # files that do not pair: two class folders, one of them named like masks
        _png(tmp_path / "classes" / "benign" / f"b{i}.png")
        _png(tmp_path / "classes" / "lesion_masks" / f"m{i}.png")
    assert detect_layout(tmp_path / "classes")[0] == "image-folder"


@pytest.mark.parametrize("names", [("x", "y"), ("X_train", "Y_train"), ("train_x", "train_y")])
def test_x_and_y_folders_are_inputs_and_targets_when_their_files_pair(tmp_path, names):
    for i in range(3):  # named as machine-learning code names them
        _png(tmp_path / "set" / names[0] / f"scan{i}.png", 90)
        _png(tmp_path / "set" / names[1] / f"scan{i}.png", 255)
    assert detect_layout(tmp_path / "set") == ("paired", f"images in {names[0]}/, masks in {names[1]}/ paired by name")
    frame = scan(tmp_path / "set")
    assert sorted(frame["case_id"]) == ["scan0", "scan1", "scan2"]
    assert all(Path(m).parent.name == names[1] for m in frame["mask"])
    for cls, stems in (("x", "ab"), ("y", "cd")):  # class folders named x and y whose files do not pair
        for n in stems:
            _png(tmp_path / "classes" / cls / f"{n}.png")
    assert detect_layout(tmp_path / "classes")[0] == "image-folder"


def test_a_volume_named_as_its_folder_is_the_image_channel(tmp_path):
    for p in ("p01", "p02"):  # p01/p01.nii.gz + p01/p01_seg.nii.gz: the same channel in every case
        _nifti(tmp_path / p / f"{p}.nii.gz")
        _nifti(tmp_path / p / f"{p}_seg.nii.gz")
    frame = scan(tmp_path)
    assert frame.attrs["layout"] == "case-folders" and set(frame["channels"]) == {("image",)} and len(frame) == 2


def test_images_with_masks_beside_them_in_one_folder(tmp_path):
    for i in range(3):  # no subfolders: scan01.png beside scan01_mask.png
        _png(tmp_path / f"scan0{i}.png", 80)
        _png(tmp_path / f"scan0{i}_mask.png", 255)
    _png(tmp_path / "scan09.png")
    assert detect_layout(tmp_path) == ("paired", "images with their masks beside them in one folder")
    frame = scan(tmp_path, strict=False).set_index("case_id")
    assert sorted(frame.index) == ["scan00", "scan01", "scan02"]
    assert Path(frame.loc["scan01", "mask"]).name == "scan01_mask.png"
    [problem] = frame.attrs["problems"]
    assert "scan09.png" in problem and "no mask beside it" in problem


def test_names_that_differ_by_a_leading_role_word_pair(tmp_path):
    for batch, cases in (("Training Batch 1", (0, 1)), ("Training Batch 2", (2, 3))):  # LiTS
        for i in cases:
            _nifti(tmp_path / "lits" / batch / f"volume-{i}.nii", 0.5)
            _nifti(tmp_path / "lits" / batch / f"segmentation-{i}.nii", 2.0)
    _nifti(tmp_path / "lits" / "Training Batch 2" / "segmentation-9.nii")
    _nifti(tmp_path / "lits" / "Training Batch 2" / "volume-7.nii")
    assert detect_layout(tmp_path / "lits") == ("paired", "images with their masks beside them in 2 folder(s)")
    frame = scan(tmp_path / "lits", strict=False).set_index("case_id")
    assert sorted(frame.index) == ["volume-0", "volume-1", "volume-2", "volume-3"]  # not two classes of batches
    assert Path(frame.loc["volume-2", "mask"]).name == "segmentation-2.nii"
    orphan, alone = sorted(frame.attrs["problems"])
    assert "segmentation-9.nii" in orphan and "mask without its image" in orphan
    assert "volume-7.nii" in alone and "expected segmentation-7 or mask-7" in alone
    for i in (1, 2):  # BTCV: imagesTr/img0001 + labelsTr/label0001
        _nifti(tmp_path / "btcv" / "imagesTr" / f"img000{i}.nii.gz")
        _nifti(tmp_path / "btcv" / "labelsTr" / f"label000{i}.nii.gz")
    frame = scan(tmp_path / "btcv")
    assert [Path(m).name for m in frame.sort_values("case_id")["mask"]] == ["label0001.nii.gz", "label0002.nii.gz"]
    for i in (1, 2):  # role words need a separator or a digit after them: "labelled_x" is an image, not a mask
        _png(tmp_path / "classes" / "a" / f"labelled_{i}.png")
        _png(tmp_path / "classes" / "b" / f"image_{i}.png")
    assert detect_layout(tmp_path / "classes")[0] == "image-folder"
