"""Catalogs: every layout scanned into the same columns, problems named by file."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from tests.conftest import write_busi_folders

from tumorbench.data.catalog import COLUMNS, LidcPolicy, detect_layout, scan
from tumorbench.errors import DataError


def _nifti(path: Path, shape=(6, 6, 4), value=1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, np.float32), np.diag([-1.0, -1.0, 1.0, 1.0])), path)
    return path


def _png(path: Path, value: int = 0, size=(8, 8), mode="L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def _brats_case(root: Path, case: str, sep: str, suffixes: list[str], seg: bool = True) -> None:
    for suffix in suffixes:
        _nifti(root / case / f"{case}{sep}{suffix}.nii.gz")
    if seg:
        _nifti(root / case / f"{case}{sep}seg.nii.gz", value=0)


def test_brats_both_namings_channel_order_and_unlabelled_case(tmp_path):
    _brats_case(tmp_path, "Brats18_X_1", "_", ["t1", "t1ce", "t2", "flair"])
    _brats_case(tmp_path, "BraTS-GLI-00002-000", "-", ["t1n", "t1c", "t2w", "t2f"], seg=False)
    frame = scan(tmp_path)
    assert frame.attrs["layout"] == "brats"
    assert list(frame.columns[: len(COLUMNS)]) == COLUMNS
    by_id = frame.set_index("case_id")
    old, new = by_id.loc["Brats18_X_1"], by_id.loc["BraTS-GLI-00002-000"]
    assert old["channels"] == new["channels"] == ("t1", "t1ce", "t2", "flair")
    # Channel order is the canonical one, not the file system's.
    assert [Path(p).name for p in new["image"]] == [
        "BraTS-GLI-00002-000-t1n.nii.gz",
        "BraTS-GLI-00002-000-t1c.nii.gz",
        "BraTS-GLI-00002-000-t2w.nii.gz",
        "BraTS-GLI-00002-000-t2f.nii.gz",
    ]
    assert old["naming"] == "2018" and new["naming"] == "2023"
    assert old["enhancing_label"] == 4 and new["enhancing_label"] == 3
    assert old["mask"].endswith("Brats18_X_1_seg.nii.gz") and new["mask"] is None


def test_brats_2020_uncompressed_volumes(tmp_path):
    # The BraTS 2020 release: BraTS20_Training_001_flair.nii (no .gz), CSV files beside the case folders.
    case = "BraTS20_Training_001"
    for suffix in ("t1", "t1ce", "t2", "flair", "seg"):
        _nifti(tmp_path / case / f"{case}_{suffix}.nii", value=0 if suffix == "seg" else 1)
    _brats_case(tmp_path, "BraTS20_Training_002", "_", ["t1", "t1ce", "t2", "flair"], seg=False)
    (tmp_path / "name_mapping.csv").write_text("BraTS_2020_subject_ID\nBraTS20_Training_001\n")
    assert detect_layout(tmp_path)[0] == "brats"
    row = scan(tmp_path).set_index("case_id").loc[case]
    assert [Path(p).name for p in row["image"]] == [f"{case}_{c}.nii" for c in ("t1", "t1ce", "t2", "flair")]
    assert Path(row["mask"]).name == f"{case}_seg.nii" and row["enhancing_label"] == 4
    # case 355 ships its segmentation misnamed (W39_1998.09.19_Segm.nii): said, counted, its name not shown
    _nifti(tmp_path / "BraTS20_Training_002" / "W39_1998.09.19_Segm.nii", value=0)
    notes = scan(tmp_path).attrs["notes"]
    assert notes == [
        "case BraTS20_Training_002: no BraTS20_Training_002_seg.nii[.gz]; 1 other NIfTI file(s) in its folder named "
        "for no sequence are not read (rename its segmentation so to use it)"
    ]
    # Kaggle's zip wraps the case folders in two more: the hint names a folder that reads them all
    wrapped = tmp_path.parent / "kaggle" / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    wrapped.parent.mkdir(parents=True)
    tmp_path.rename(wrapped)
    hint = r"; one folder down, BraTS2020_TrainingData/ is brats: pass that folder as --data \(a held-out one"
    with pytest.raises(DataError, match=hint):
        detect_layout(wrapped.parents[1])
    assert sorted(scan(wrapped.parent)["case_id"]) == ["BraTS20_Training_001", "BraTS20_Training_002"]


def test_brats_missing_modality_names_the_case_and_file(tmp_path):
    _brats_case(tmp_path, "BraTS2021_00001", "_", ["t1", "t2", "flair"])
    with pytest.raises(DataError, match=r"BraTS2021_00001.*missing modality t1ce.*BraTS2021_00001_t1ce\.nii\.gz"):
        scan(tmp_path, "brats")
    _brats_case(tmp_path, "BraTS2021_00002", "_", ["t1", "t1ce", "t2", "flair"])
    lenient = scan(tmp_path, "brats", strict=False)
    assert list(lenient["case_id"]) == ["BraTS2021_00002"]
    assert len(lenient.attrs["problems"]) == 1 and "t1ce" in lenient.attrs["problems"][0]


def test_lgg_groups_slices_by_patient_and_flags_missing_masks(tmp_path):
    for study in ("TCGA_CS_4941_19960909", "TCGA_CS_4941_20000101", "TCGA_DU_5849_19950405"):
        for n in (1, 2):
            _png(tmp_path / study / f"{study}_{n}.png", mode="RGB")
            _png(tmp_path / study / f"{study}_{n}_mask.png", 255 * (n == 2))
    _png(tmp_path / "TCGA_DU_5849_19950405" / "TCGA_DU_5849_19950405_3.png", mode="RGB")
    frame = scan(tmp_path, strict=False)
    assert frame.attrs["layout"] == "lgg" and len(frame) == 6
    # Two scan dates of one patient are one patient: they must never straddle folds.
    assert frame["patient_id"].nunique() == 2
    assert sorted(frame["slice_index"].unique()) == [1, 2]
    assert "TCGA_DU_5849_19950405_3.png" in frame.attrs["problems"][0]
    assert "without its mask" in frame.attrs["problems"][0]


def test_image_folder_labels_from_folders(tmp_path):
    _png(tmp_path / "yes" / "a.jpg", 10)
    _png(tmp_path / "yes" / "b.png", 20)
    _png(tmp_path / "no" / "c.png", 30)
    frame = scan(tmp_path)
    assert frame.attrs["layout"] == "image-folder"
    assert dict(zip(frame["case_id"], frame["label"])) == {"no/c.png": "no", "yes/a.jpg": "yes", "yes/b.png": "yes"}


def test_a_folder_of_images_to_predict_beside_the_classes_is_read_unlabelled(tmp_path):
    from tumorbench.study.generic import detect

    for name, value in (("yes/y1.png", 10), ("yes/y2.png", 15), ("no/n1.png", 20), ("no/n2.png", 25)):
        _png(tmp_path / name, value)
    _png(tmp_path / "pred" / "pred0.jpg", 30)  # Br35H: yes/, no/ and pred/, 60 images without a class
    frame = scan(tmp_path)
    assert frame.set_index("case_id").loc["pred/pred0.jpg", "label"] is None
    assert sorted(frame["label"].dropna().unique()) == ["no", "yes"]
    assert "pred/: 1 image(s) read unlabelled (named for no class)" in frame.attrs["notes"]
    assert detect(frame).task == "classification"


def test_class_folders_with_masks_are_classes_not_patients(tmp_path):
    # Before: read as LGG case folders, so each class was one "patient" and the masks were required slices.
    write_busi_folders(tmp_path)
    _png(tmp_path / "malignant" / "malignant (9)_mask.png", 255)  # its image is missing
    frame = scan(tmp_path, strict=False).set_index("case_id")
    assert frame.attrs["layout"] == "image-folder" and "--layout lgg" in frame.attrs["layout_evidence"]
    assert sorted(frame.index) == [
        "benign/benign (1).png",
        "benign/benign (2).png",
        "benign/benign (3).png",
        "malignant/malignant (1).png",
        "malignant/malignant (2).png",
        "normal/normal (1).png",
        "normal/normal (2).png",
    ]  # 7 images: no mask is a case
    assert frame["label"].value_counts().to_dict() == {"benign": 3, "malignant": 2, "normal": 2}
    assert frame["patient_id"].nunique() == 7  # no patients.csv: each image its own patient
    assert Path(frame.loc["benign/benign (2).png", "mask"]).name == "benign (2)_mask.png"  # not _mask_1
    assert Path(frame.loc["normal/normal (1).png", "mask"]).name == "normal (1)_mask.png"
    further = "1 further lesion mask(s) (_mask_1, _mask_2, ...) not read"
    assert any(note.startswith(further) for note in frame.attrs["notes"])
    [problem] = frame.attrs["problems"]
    assert "malignant (9)_mask.png" in problem and "mask without its image" in problem
    with pytest.raises(DataError, match="mask without its image"):
        scan(tmp_path)


def test_only_a_numbered_mask_is_kept_when_there_is_no_plain_one(tmp_path):
    _png(tmp_path / "a" / "x.png", 10)
    _png(tmp_path / "a" / "x_mask_2.png", 255)
    _png(tmp_path / "a" / "x_mask_1.png", 255)
    _png(tmp_path / "b" / "y.png", 20)
    frame = scan(tmp_path).set_index("case_id")
    assert Path(frame.loc["a/x.png", "mask"]).name == "x_mask_1.png" and frame.loc["b/y.png", "mask"] is None
    assert frame.attrs["notes"][-1].startswith("1 further lesion mask(s)")  # x_mask_2


def test_many_folders_with_masks_are_case_folders(tmp_path):
    # Slices not named after their folder: still one case folder per patient when there are more than a few.
    for case in range(11):
        _png(tmp_path / f"case{case:02d}" / "slice_1.png", 10)
        _png(tmp_path / f"case{case:02d}" / "slice_1_mask.png", 255)
    layout, evidence = detect_layout(tmp_path)
    assert layout == "lgg" and "11 folders" in evidence
    frame = scan(tmp_path)
    assert frame["patient_id"].nunique() == 11 and len(frame) == 11


def test_lidc_policy_binarizes_mean_malignancy(tmp_path):
    ratings = {(1, 100, 1): 1.5, (1, 100, 2): 3.0, (2, 200, 1): 4.25}
    rows = [f"{i},{p},{s},{n}," + ",".join(["1.0"] * 25) + f",{m}" for i, ((p, s, n), m) in enumerate(ratings.items())]
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "malignancy.csv").write_text("\n".join(rows) + "\n")
    for patient, scan_id, nodule in ratings:
        stem = f"LIDC-IDRI-{patient:04d}_{nodule}_{scan_id}"
        _png(tmp_path / f"{stem}.png", 100)
        _png(tmp_path / f"{stem}_union.png", 255)
        _png(tmp_path / f"{stem}_intersection.png", 255)
    frame = scan(tmp_path).set_index("case_id")
    assert frame.loc["LIDC-IDRI-0001_1_100", "label"] == "benign"
    assert frame.loc["LIDC-IDRI-0001_2_100", "label"] is None  # mean 3 is excluded by default
    assert frame.loc["LIDC-IDRI-0002_1_200", "label"] == "malignant"
    assert frame.loc["LIDC-IDRI-0001_2_100", "patient_id"] == frame.loc["LIDC-IDRI-0001_1_100", "patient_id"]
    lenient = scan(tmp_path, lidc_policy=LidcPolicy(benign_max=3.0, malignant_min=4.0)).set_index("case_id")
    assert lenient.loc["LIDC-IDRI-0001_2_100", "label"] == "benign"


def test_msd_dataset_json(tmp_path):
    _nifti(tmp_path / "imagesTr" / "BRATS_001.nii.gz", shape=(4, 4, 4, 2))
    _nifti(tmp_path / "labelsTr" / "BRATS_001.nii.gz")
    _nifti(tmp_path / "imagesTs" / "BRATS_900.nii.gz", shape=(4, 4, 4, 2))
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "modality": {"0": "FLAIR", "1": "T1w"},
                "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
                "test": ["./imagesTs/BRATS_900.nii.gz"],
            }
        )
    )
    frame = scan(tmp_path).set_index("case_id")
    assert frame.attrs["layout"] == "msd"
    assert frame.loc["BRATS_001", "channels"] == ("FLAIR", "T1w")
    assert frame.loc["BRATS_001", "mask"].endswith("labelsTr/BRATS_001.nii.gz")
    assert frame.loc["BRATS_900", "mask"] is None


def test_empty_and_unknown_folders_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="empty folder"):
        scan(tmp_path)
    (tmp_path / "notes.txt").write_text("nothing")
    with pytest.raises(DataError, match=r"cannot detect a layout"):
        detect_layout(tmp_path)
    with pytest.raises(DataError, match=r"unknown layout 'nifti-zoo'"):
        scan(tmp_path, "nifti-zoo")
    with pytest.raises(DataError, match="no such folder"):
        scan(tmp_path / "missing")


@pytest.mark.realdata
def test_real_lgg_catalog(lgg_root):
    frame = scan(lgg_root)
    assert frame.attrs["layout"] == "lgg"
    assert len(frame) == 1308 and frame["patient_id"].nunique() == 39
    assert frame["mask"].notna().all()


@pytest.mark.realdata
def test_real_brats_catalog(brats_root):
    frame = scan(brats_root).set_index("case_id")
    assert len(frame) == 3 and frame["mask"].notna().sum() == 2
    assert frame.loc["BraTS-GLI-00001-000", "naming"] == "2023"
    assert frame.loc["BraTS2021_00006", "naming"] == "2021"
    assert frame.loc["Brats18_2013_21_1", "naming"] == "2018"


@pytest.mark.realdata
def test_real_lidc_catalog_matches_ratings_file(lidc_root):
    frame = scan(lidc_root)
    assert len(frame) == 71 and frame["malignancy"].notna().all()
    # Independent recount of the policy from the ratings column.
    assert (frame["label"] == "benign").sum() == (frame["malignancy"] <= 2).sum()
    assert (frame["label"] == "malignant").sum() == (frame["malignancy"] >= 4).sum()


def test_class_folders_one_level_down_are_named_in_the_error(tmp_path):
    # Kaggle's brain tumor MRI set: Training/<class>/*.jpg and Testing/<class>/*.jpg under one root.
    for split in ("Testing", "Training"):
        for cls in ("glioma", "notumor"):
            _png(tmp_path / split / cls / "Tr-gl_0010.jpg", 10)
    message = "one folder down, Testing/ is image-folder, Training/ is image-folder: pass that folder as --data"
    with pytest.raises(DataError, match=message):
        detect_layout(tmp_path)
    assert len(scan(tmp_path / "Training")) == 2
    (tmp_path / "archive" / "v1").mkdir(parents=True)  # deeper: a bounded walk finds the folder that holds them
    (tmp_path / "Training").rename(tmp_path / "archive" / "v1" / "Training")
    with pytest.raises(DataError, match=r"; v1/Training/ is image-folder: pass that folder as --data$"):
        detect_layout(tmp_path / "archive")
    (tmp_path / "archive" / "v1" / "Training" / "extra").mkdir()  # more folders than the walk reads: no hint
    from tumorbench.data import catalog

    assert catalog._deeper(tmp_path / "archive", max_folders=2) == ""
    mat = tmp_path / "figshare"  # the figshare brain tumour set: MATLAB files, no type read here
    mat.mkdir()
    for n in range(3):
        (mat / f"{n + 1}.mat").write_bytes(b"MATLAB 7.3 MAT-file" + bytes(64))
    (mat / "README.txt").write_text("cjdata.image, cjdata.tumorMask")
    with pytest.raises(
        DataError,
        match=r"none of its files is of a type read here \(PNG, .*\): \.mat 3, \.txt 1; MATLAB .*data figshare",
    ):
        detect_layout(mat)


def test_class_folders_of_nifti_volumes(tmp_path):
    from tumorbench.data.catalog import data_dims

    for cls in ("normal", "tumor"):
        for i in range(2):
            _nifti(tmp_path / cls / f"case{i}.nii.gz")
    _nifti(tmp_path / "tumor" / "case0_mask.nii.gz", value=0)
    assert detect_layout(tmp_path) == ("image-folder", "one subfolder of volumes per class")
    frame = scan(tmp_path).set_index("case_id")
    assert sorted(frame.index) == [
        "normal/case0.nii.gz",
        "normal/case1.nii.gz",
        "tumor/case0.nii.gz",
        "tumor/case1.nii.gz",
    ]
    assert Path(frame.loc["tumor/case0.nii.gz", "mask"]).name == "case0_mask.nii.gz"
    assert data_dims(frame) == 3
    _png(tmp_path / "normal" / "x.png")
    with pytest.raises(DataError, match="mix 2D images and volumes"):
        scan(tmp_path)


def test_numbered_parts_of_one_dataset_are_not_classes(tmp_path):
    """LUNA16's subset0..subset9 of scans (and batch/part folders of PNGs) are not classes; grade1/grade2 are."""
    for part in ("subset0", "subset1", "subset2"):
        for i in range(2):
            _nifti(tmp_path / "luna" / part / f"1.3.6.1.{part[-1]}{i}.nii.gz")
            _png(tmp_path / "pngs" / part.replace("subset", "batch_") / f"{i}.png")
            _png(tmp_path / "grades" / part.replace("subset", "grade") / f"{i}.png")
    for root in ("luna", "pngs"):
        with pytest.raises(DataError, match=r"numbered parts of one dataset, not classes: .*--layout csv"):
            scan(tmp_path / root)
    assert sorted(scan(tmp_path / "luna", "image-folder")["label"].unique()) == ["subset0", "subset1", "subset2"]
    assert sorted(scan(tmp_path / "grades")["label"].unique()) == ["grade0", "grade1", "grade2"]


def test_many_folders_of_volumes_are_not_classes(tmp_path):
    for case in range(11):
        _nifti(tmp_path / f"patient{case:02d}" / "t1.nii.gz")
    with pytest.raises(DataError, match="cannot detect a layout"):
        detect_layout(tmp_path)


def _apple_double(path: Path) -> None:
    """What a Mac writes beside ``path`` in a zip: ``._<name>`` (and ``__MACOSX/.../._<name>``), not an image."""
    blob = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 64
    (path.parent / f"._{path.name}").write_bytes(blob)
    mirror = path.parents[1] / "__MACOSX" / path.parent.name
    mirror.mkdir(parents=True, exist_ok=True)
    (mirror / f"._{path.name}").write_bytes(blob)


def test_a_dataset_zipped_on_a_mac_or_browsed_on_windows_reads_as_its_images(tmp_path):
    root = tmp_path / "brain"
    for label in ("yes", "no"):
        for n in range(3):
            _apple_double(_png(root / label / f"{label} {n}.png", value=40 * n))
        (root / label / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 60)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    frame = scan(root, strict=True)  # strict: a ._ file read as an image would raise here
    assert frame.attrs["layout"] == "image-folder" and sorted(frame["label"]) == ["no"] * 3 + ["yes"] * 3
    assert not frame.attrs.get("problems") and all("._" not in p for paths in frame["image"] for p in paths)


def test_nnunet_images_and_labels_ignore_apple_double_files(tmp_path):
    root = tmp_path / "Dataset501_Liver"
    for case in ("liver_0", "liver_1"):
        _apple_double(_nifti(root / "imagesTr" / f"{case}_0000.nii.gz"))
        _apple_double(_nifti(root / "labelsTr" / f"{case}.nii.gz", value=1.0))
    spec = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "tumour": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(spec))
    frame = scan(root, strict=True)
    assert sorted(frame["case_id"]) == ["liver_0", "liver_1"] and frame["mask"].notna().all()


def test_class_folders_of_patient_folders_give_patient_level_cases(tmp_path):
    root = tmp_path / "by_patient"
    for label in ("tumour", "normal"):
        for patient in range(3):
            for k in range(2):
                _png(root / label / f"{label[0]}{patient:03d}" / f"slice_{k}.png", value=10 * k + patient)
    frame = scan(root, strict=True)
    assert frame.attrs["layout"] == "image-folder" and len(frame) == 12
    assert sorted(frame["patient_id"].unique()) == ["n000", "n001", "n002", "t000", "t001", "t002"]
    row = frame.set_index("case_id").loc["tumour/t001/slice_1.png"]
    assert (row["patient_id"], row["label"]) == ("t001", "tumour")


def test_patient_folders_named_alike_in_every_class_need_the_layout_and_splits_stay_hinted(tmp_path):
    alike = tmp_path / "alike"  # the same patients' slices in both classes, or classes under a split: ambiguous
    for label in ("tumour", "normal"):
        for patient in ("p1", "p2"):
            _png(alike / label / patient / "slice.png", value=len(label))
    with pytest.raises(DataError, match="if these folders are classes holding one folder per patient, pass --layout"):
        scan(alike)
    frame = scan(alike, layout="image-folder", strict=True)
    assert sorted(frame["patient_id"].unique()) == ["p1", "p2"] and len(frame) == 4  # one patient, both classes
    kaggle = tmp_path / "kaggle"
    for split in ("Training", "Testing"):
        for label in ("glioma", "notumor"):
            _png(kaggle / split / label / "1.png")
    with pytest.raises(DataError, match=r"Training/ is image-folder: pass that folder as --data") as caught:
        scan(kaggle)
    assert "one folder per patient" not in str(caught.value)


def test_patient_folders_holding_class_folders_give_patient_level_cases_idc(tmp_path):
    """IDC breast histopathology (Kaggle): ``<patient>/0/`` and ``<patient>/1/`` patches; some patients lack class 1."""
    from tumorbench.data.splits import SplitConfig, fold_frames, make_splits

    root = tmp_path / "IDC_regular_ps50_idx5"
    for patient in range(8900, 8912):
        for label in ("0", "1") if patient % 4 else ("0",):
            for k in range(2):
                name = f"{patient}_idx5_x{50 * k}_y{int(label) * 50}_class{label}.png"
                _png(root / str(patient) / label / name, value=(7 * patient + 3 * k + 50 * int(label)) % 251)
    layout, why = detect_layout(root)
    assert layout == "image-folder" and why.startswith("12 patient folders, each holding class folders (0, 1)")
    frame = scan(root, strict=True)
    assert len(frame) == 12 * 2 + 9 * 2 and sorted(frame["label"].unique()) == ["0", "1"]
    assert frame["patient_id"].nunique() == 12 and not frame.attrs.get("problems")
    row = frame.set_index("case_id").loc["8905/1/8905_idx5_x50_y50_class1.png"]
    assert (row["patient_id"], row["label"]) == ("8905", "1")
    doc = make_splits(frame, SplitConfig(n_folds=3, seed=0, dedupe=False))
    for fold in range(3):
        train, val = fold_frames(frame, doc, fold)
        assert len(val) and not set(train["patient_id"]) & set(val["patient_id"])  # a patient's patches in one fold
    few = tmp_path / "few"  # ten folders or fewer: classes (or a split), never taken for patients
    for patient in ("p1", "p2", "p3"):
        for label in ("0", "1"):
            _png(few / patient / label / "a.png", value=len(patient))
    with pytest.raises(DataError, match="cannot detect a layout"):
        scan(few)


@pytest.mark.parametrize("suffix", ["_seg", "_gt", "_label", "_segmentation"])
def test_masks_named_seg_or_gt_beside_their_images_pair(tmp_path, suffix):
    root = tmp_path / "beside"
    for n in range(3):
        _png(root / f"case{n}.png", value=50)
        _png(root / f"case{n}{suffix}.png", value=255)
    frame = scan(root, strict=True)
    assert frame.attrs["layout"] == "paired" and sorted(frame["case_id"]) == ["case0", "case1", "case2"]
    assert all(Path(m).stem == f"{Path(m).stem.split('_')[0]}{suffix}" for m in frame["mask"])
