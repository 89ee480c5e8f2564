"""`--data PATH`: layout, 2D/3D, task and study template detected from the data (no Ray, no training)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import write_blob_folders, write_busi_folders

from tumorbench.data.catalog import scan
from tumorbench.data.synthetic import BrainPhantomConfig, make_brain_study
from tumorbench.data.synthetic_lung import LungPhantomConfig, make_lung_study
from tumorbench.data.writers import write_nifti
from tumorbench.errors import DataError, TumorbenchError
from tumorbench.study.generic import detect, generic_study


def test_labelled_dicom_volumes_get_a_3d_classification_study(tmp_path, capsys):
    root = make_lung_study(tmp_path / "lung", LungPhantomConfig(cases=4, shape=(16, 16, 16)))
    study = generic_study(str(root), "smoke")
    assert (study.task, study.layout, study.config["spatial_dims"]) == ("classification", "dicom", 3)
    assert study.config["preprocess"]["spatial_size"] == [32, 32, 16]
    assert study.config["preprocess"]["normalize"] == "ct_window"  # the series are CT
    assert [c.config["model"] for c in study.candidates] == ["densenet121_tiny"]
    assert study.explain_cases == 1  # the smoke preset's, in a template that builds its Study itself
    assert "3D, task classification, study template classification-3d" in capsys.readouterr().out


def test_unlabelled_dicom_volumes_with_masks_get_3d_segmentation(tmp_path):
    root = make_lung_study(tmp_path / "lung", LungPhantomConfig(cases=3, shape=(16, 16, 16)))
    (root / "labels.csv").write_text((root / "labels.csv").read_text().replace("malignant", "").replace("benign", ""))
    found = detect(scan(root))
    assert (found.spatial_dims, found.task, found.template) == (3, "segmentation", "segmentation-3d")


def test_brats_label_maps_get_the_regions_study_with_a_patch_that_fits(tmp_path):
    root = make_brain_study(tmp_path / "brain", BrainPhantomConfig(cases=2, shape=(48, 48, 40)))
    study = generic_study(str(root), "smoke")
    assert study.config["preprocess"]["label_map"] == "brats"  # WT/TC/ET channels
    assert study.config["sampling"]["patch_size"] == [32, 32, 32]  # 64 does not fit 40 slices
    assert study.config["roi_size"] == [32, 32, 32]


def test_binary_masks_in_brats_naming_stay_whole_tumor(tmp_path):
    root = make_brain_study(tmp_path / "brain", BrainPhantomConfig(cases=2, shape=(32, 32, 32)))
    for seg in root.glob("*/*_seg.nii.gz"):
        import nibabel as nib

        image = nib.load(seg)
        write_nifti(seg, (np.asarray(image.dataobj) > 0).astype(np.uint8), image.affine, dtype=np.uint8)
    found = detect(scan(root))
    assert (found.task, found.template) == ("segmentation", "segmentation-3d")


def test_class_folders_get_2d_classification(tmp_path):
    write_blob_folders(tmp_path / "set", n=3)
    found = detect(scan(tmp_path / "set"))
    assert (found.layout, found.spatial_dims, found.task, found.template) == (
        "image-folder",
        2,
        "classification",
        "classification-2d",
    )


def test_one_class_only_is_refused_before_starting(tmp_path):
    write_blob_folders(tmp_path / "set", n=2)
    for path in (tmp_path / "set" / "no").iterdir():
        path.unlink()
    (tmp_path / "set" / "no").rmdir()
    with pytest.raises(TumorbenchError, match="one class only"):
        detect(scan(tmp_path / "set"))


def test_lidc_crops_get_the_lidc_study_settings(lidc_root):
    frame = scan(lidc_root)
    found = detect(frame)
    assert (found.layout, found.spatial_dims, found.template) == ("lidc", 2, "lidc")


def test_class_folders_with_masks_get_classification_and_layout_overrides(tmp_path):
    write_busi_folders(tmp_path / "busi")
    (tmp_path / "busi" / "benign" / "benign (2)_mask_1.png").unlink()
    found = detect(scan(tmp_path / "busi"))
    assert (found.layout, found.task, found.template) == ("image-folder", "classification", "classification-2d")
    study = generic_study(str(tmp_path / "busi"), "smoke", layout="lgg")  # the user says: one folder per patient
    assert (study.layout, study.task) == ("lgg", "segmentation")


def test_dicom_without_labels_says_where_labels_come_from(tmp_path):
    root = make_lung_study(tmp_path / "lung", LungPhantomConfig(cases=2, shape=(16, 16, 16)))
    (root / "labels.csv").unlink()
    with pytest.raises(TumorbenchError, match="neither class labels nor masks.*labels.csv at the root with columns"):
        detect(scan(root))


def test_class_folders_of_volumes_get_a_3d_classification_study(tmp_path):
    import nibabel as nib

    for cls in ("normal", "tumor"):
        for i in range(2):
            (tmp_path / cls).mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(np.zeros((8, 8, 6), np.float32), np.eye(4)), tmp_path / cls / f"c{i}.nii.gz")
    found = detect(scan(tmp_path))
    assert (found.spatial_dims, found.task, found.template) == (3, "classification", "classification-3d")
    study = generic_study(str(tmp_path), "smoke")
    assert study.config["spatial_dims"] == 3 and study.config["preprocess"].get("normalize", "zscore") == "zscore"


def test_ultrasound_dicom_gets_a_2d_study_read_as_2d(tmp_path):
    # Before: layout dicom meant volumes, so training asked for 3D and the US images (read 2D) were refused.
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    from tumorbench.data.catalog import data_dims

    lines = ["series_dir,label"]
    for i in range(4):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = UltrasoundImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SeriesInstanceUID, ds.Modality, ds.PatientID = generate_uid(), "US", f"P{i}"
        ds.PatientIdentityRemoved = "YES"  # synthetic: no person
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 8, 8, 3, "RGB"
        ds.PlanarConfiguration, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 0, 8, 8, 7, 0
        ds.PixelData = np.full((8, 8, 3), 40 * i, np.uint8).tobytes()
        (tmp_path / f"P{i}").mkdir()
        ds.save_as(tmp_path / f"P{i}" / "IM1", enforce_file_format=True)
        lines.append(f"P{i},{'malignant' if i % 2 else 'benign'}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    frame = scan(tmp_path)
    assert frame["planar"].all() and data_dims(frame) == 2
    mixed = make_lung_study(tmp_path / "lung", LungPhantomConfig(cases=2, shape=(16, 16, 16)))
    with pytest.raises(DataError, match="series mix planar images .* and volumes"):
        scan(tmp_path)  # the ultrasound series beside CT volumes
    assert len(scan(mixed)) == 2
    found = detect(frame)
    assert (found.layout, found.spatial_dims, found.template) == ("dicom", 2, "classification-2d")


def test_task_chooses_segmentation_when_the_data_has_labels_and_masks(tmp_path):
    from tumorbench.study.cli import build_study, parse_args

    write_busi_folders(tmp_path / "busi")
    frame = scan(tmp_path / "busi", strict=False)
    found = detect(frame, task="segmentation")
    assert (found.task, found.template, found.why) == (
        "segmentation",
        "segmentation-2d",
        "masks found, --task segmentation",
    )
    study = generic_study(str(tmp_path / "busi"), "smoke", task="segmentation")
    assert (study.task, study.layout) == ("segmentation", "image-folder")
    write_blob_folders(tmp_path / "plain", n=3)  # labels, no masks
    with pytest.raises(TumorbenchError, match="--task segmentation: layout image-folder has no masks"):
        detect(scan(tmp_path / "plain"), task="segmentation")
    with pytest.raises(SystemExit, match="--task applies to --data without --study"):
        build_study(parse_args(["--study", "lgg", "--task", "segmentation"]))


def test_ct_volumes_are_windowed_in_every_template(tmp_path):
    root = make_lung_study(tmp_path / "lung", LungPhantomConfig(cases=3, shape=(16, 16, 16)))
    (root / "labels.csv").write_text((root / "labels.csv").read_text().replace("malignant", "").replace("benign", ""))
    study = generic_study(str(root), "smoke")  # masks, no labels: 3D segmentation of CT
    assert study.task == "segmentation" and study.config["preprocess"]["normalize"] == "ct_window"
    assert study.config["preprocess"]["label_map"] == "binary"  # the template's own settings kept
