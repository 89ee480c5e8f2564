"""Dataset fingerprint: numbers checked against what the test wrote, sampling bounded, no identifiers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tumorbench.data.catalog import scan
from tumorbench.data.check import check_dataset, format_report
from tumorbench.data.fingerprint import (
    FingerprintConfig,
    compute_fingerprint,
    format_fingerprint,
    write_fingerprint,
)


def _class_folders(root):
    """a/: three 8x8 grey images of value 10 (two byte-identical); b/: two 16x12 images of 200 and 100."""
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8), 10 if i < 2 else 11, np.uint8)).save(root / "a" / f"img{i}.png")
    Image.fromarray(np.full((12, 16), 200, np.uint8)).save(root / "b" / "x.png")
    Image.fromarray(np.full((12, 16), 100, np.uint8)).save(root / "b" / "y.png")
    return root


def _lgg(root, n=4):
    """LGG layout: 8x8 RGB slices of value 50 with a 2x2 tumor of value 250 in every other slice."""
    folder = root / "TCGA_AA_0001_20000101"
    folder.mkdir(parents=True)
    for k in range(1, n + 1):
        image = np.full((8, 8, 3), 50, np.uint8)
        mask = np.zeros((8, 8), np.uint8)
        if k % 2:
            image[2:4, 2:4] = 250
            mask[2:4, 2:4] = 255
        Image.fromarray(image).save(folder / f"TCGA_AA_0001_20000101_{k}.png")
        Image.fromarray(mask).save(folder / f"TCGA_AA_0001_20000101_{k}_mask.png")
    return root


def test_class_folder_fingerprint_matches_the_written_images(tmp_path):
    fp = compute_fingerprint(scan(_class_folders(tmp_path / "d")))
    assert fp["task"] == "classification" and fp["cases"] == 5 and fp["patients"] == 5
    assert fp["classes"] == {"a": 3, "b": 2} and fp["class_patients"] == {"a": 3, "b": 2}
    assert fp["channels"] == 1 and fp["spatial_dims"] == 2
    assert fp["shapes"] == {"8x8": 3, "12x16": 2}
    assert fp["median_shape"] == [8, 8] and fp["max_shape"] == [12, 16]
    assert fp["duplicates"]["groups"] == 1 and fp["duplicates"]["redundant_copies"] == 1
    # whole-image intensities: every pixel of every image (64 + 64 + 64 + 192 + 192 values)
    values = np.concatenate([np.full(64, 10), np.full(64, 10), np.full(64, 11), np.full(192, 200), np.full(192, 100)])
    stats = fp["intensity"][0]
    assert fp["intensity_region"] == "whole image" and stats["values"] == values.size
    assert np.isclose(stats["mean"], values.mean()) and np.isclose(stats["std"], values.std())
    assert np.isclose(stats["p50"], np.percentile(values, 50)) and np.isclose(stats["p99_5"], 200)
    assert fp["foreground"] is None and not fp["sample"]["sampled"]
    text = json.dumps(fp)
    assert "img0" not in text and "x.png" not in text  # no file names or case ids in a fingerprint


def test_segmentation_fingerprint_uses_foreground(tmp_path):
    fp = compute_fingerprint(scan(_lgg(tmp_path / "lgg", n=4)))
    assert fp["task"] == "segmentation" and fp["channels"] == 3
    assert fp["images_per_patient"] == {"min": 4.0, "median": 4.0, "max": 4.0}
    assert fp["foreground"]["cases_with_foreground"] == 0.5
    assert np.isclose(fp["foreground"]["mean_fraction"], 0.5 * 4 / 64)
    # slices with tumor: the 4 foreground pixels are 250 in every channel; empty slices: the whole image (50)
    tumor_cases, empty_cases = 2, 2
    values = np.concatenate([np.full(4 * tumor_cases, 250), np.full(64 * empty_cases, 50)])
    assert np.isclose(fp["intensity"][1]["mean"], values.mean())
    assert fp["foreground"]["labels"] == [255]  # LGG's 0/255 masks, as stored


def test_organ_and_tumour_labels_are_listed(tmp_path):
    import nibabel as nib

    for i in range(2):
        labels = np.zeros((8, 8, 4), np.uint8)
        labels[2:6, 2:6, 1:3], labels[3, 3, 2] = 1, 2  # liver 1, a one-voxel tumour 2
        (tmp_path / "set" / "imagesTr").mkdir(parents=True, exist_ok=True)
        (tmp_path / "set" / "labelsTr").mkdir(parents=True, exist_ok=True)
        nib.save(
            nib.Nifti1Image(labels.astype(np.float32) * 50, np.eye(4)), tmp_path / "set" / "imagesTr" / f"c{i}.nii.gz"
        )
        nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "set" / "labelsTr" / f"c{i}.nii.gz")
    fp = compute_fingerprint(scan(tmp_path / "set"))
    assert fp["foreground"]["labels"] == [1, 2]
    assert "mask labels 1, 2" in format_fingerprint(fp)


def test_large_sets_are_sampled_and_say_so(tmp_path):
    frame = scan(_class_folders(tmp_path / "d"))
    fp = compute_fingerprint(frame, FingerprintConfig(max_cases=2, pixels_per_case=10, hash_duplicates=False))
    assert fp["sample"]["read"] == 2 and fp["sample"]["sampled"] and "2 of 5" in fp["sample"]["note"]
    assert fp["intensity"][0]["values"] == 20  # 10 values kept per case
    assert fp["duplicates"]["groups"] is None and fp["cases"] == 5  # catalog numbers still cover every case


def test_near_duplicate_hook_and_storage(tmp_path):
    frame = scan(_class_folders(tmp_path / "d"))
    seen = []

    def phash_groups(catalog):
        seen.append(len(catalog))
        return [[0, 1, 2]]

    fp = compute_fingerprint(frame, near_duplicates=phash_groups)
    assert seen == [5]
    assert fp["duplicates"]["near_duplicate_groups"] == 1
    assert fp["duplicates"]["near_duplicate_method"] == "phash_groups"
    path = write_fingerprint(fp, tmp_path / "results")
    assert json.loads(path.read_text())["classes"] == {"a": 3, "b": 2}


def test_data_check_prints_the_fingerprint(tmp_path):
    report = check_dataset(_class_folders(tmp_path / "d"))
    assert report["fingerprint"]["duplicates"]["groups"] == 1
    text = format_report(report)
    assert "fingerprint (every case read)" in text and "classes a 3 (60%), b 2 (40%)" in text
    assert "fingerprint" not in check_dataset(tmp_path / "d", fingerprint=False)


def test_disk_bytes_count_the_files_of_dicom_series_folders(tmp_path):
    from tumorbench.data.synthetic_lung import LungPhantomConfig, make_lung_study

    root = make_lung_study(tmp_path / "lung", LungPhantomConfig(cases=2, shape=(16, 16, 16)))
    frame = scan(root)
    series_files = [f for folder in {p for paths in frame["image"] for p in paths} for f in Path(folder).iterdir()]
    assert len(series_files) >= 8  # a case is a folder of slices, not one file
    assert compute_fingerprint(frame)["disk_bytes"] == sum(f.stat().st_size for f in series_files)


def test_an_unreadable_case_is_counted_and_the_study_is_refused_naming_it(tmp_path):
    from tests.conftest import write_blob_folders

    from tumorbench.errors import DataError
    from tumorbench.study.generic import generic_study
    from tumorbench.study.runner import plan_study

    root = tmp_path / "blobs"
    write_blob_folders(root, n=6)
    cut = root / "yes" / "yes3.png"
    cut.write_bytes(cut.read_bytes()[:60])  # truncated: the catalog lists it, only reading finds out
    unreadable: list[str] = []
    fp = compute_fingerprint(scan(root), unreadable=unreadable)
    assert fp["sample"]["unreadable"] == 1 and fp["sample"]["read"] == 11
    assert len(unreadable) == 1 and str(cut) in unreadable[0] and "yes3" not in json.dumps(fp)
    study = generic_study(str(root), "smoke")
    with pytest.raises(DataError, match=r"1 case\(s\) cannot be used: .*yes3\.png: corrupt, truncated"):
        plan_study(study, tmp_path / "out")  # before any model is timed or trained
    mismatched = tmp_path / "mism"  # a mask of another size: data check's problem, the study's refusal
    for n in range(4):
        Image.new("L", (16, 16), 40).save(_mkdir(mismatched / "images") / f"c{n}.png")
        Image.new("L", (8, 8) if n == 2 else (16, 16), 255).save(_mkdir(mismatched / "masks") / f"c{n}.png")
    with pytest.raises(DataError, match=r"c2\.png: mask shape \(8, 8\) does not match image shape \(16, 16\)"):
        plan_study(generic_study(str(mismatched), "smoke"), tmp_path / "out2")
    held_out = tmp_path / "held_out"  # a locked test set is read whole at planning too: it is scored last
    write_blob_folders(held_out, n=3)
    broken = held_out / "no" / "no1.png"
    broken.write_bytes(broken.read_bytes()[:60])
    cut.unlink()
    with pytest.raises(DataError, match=r"1 case\(s\) cannot be used: .*no1\.png: corrupt, truncated"):
        plan_study(dataclasses.replace(study, test=str(held_out)), tmp_path / "out3")
    broken.write_bytes((root / "no" / "no1.png").read_bytes())  # whole again, as the same seed drew the training set
    with pytest.raises(DataError, match=r"held_out: the test set overlaps the training data .*identical images"):
        plan_study(dataclasses.replace(study, test=str(held_out)), tmp_path / "out4")  # --dry-run refuses it too


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_a_mask_on_another_grid_is_refused_but_one_stored_flipped_is_the_same_grid(tmp_path):
    import nibabel as nib

    from tumorbench.data.check import check_dataset as check

    def case(root: Path, n: int, mask_affine: np.ndarray, flip: bool = False) -> None:
        image = np.full((8, 10, 6), 50.0, np.float32)
        mask = np.zeros((8, 10, 6), np.uint8)
        mask[1:3, 2:5, 1:2] = 1  # 6 voxels, at one corner: a flip moves them
        nib.save(nib.Nifti1Image(image, np.eye(4)), _mkdir(root / "imagesTr") / f"c{n}.nii.gz")
        stored = mask[::-1] if flip else mask  # the same voxels, stored along -x with the matching affine
        nib.save(nib.Nifti1Image(stored, mask_affine), _mkdir(root / "labelsTr") / f"c{n}.nii.gz")

    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[0, 3] = 7.0  # voxel 7 along -x is voxel 0 along +x: one grid
    good = tmp_path / "good"
    for n in range(3):
        case(good, n, flipped if n == 1 else np.eye(4), flip=n == 1)
    fp = compute_fingerprint(scan(good))
    assert fp["sample"]["unreadable"] == 0 and np.isclose(fp["foreground"]["mean_fraction"], 6 / 480)
    assert check(good, duplicates=False)["problems"] == []
    bad = tmp_path / "bad"
    for n in range(3):
        case(bad, n, np.diag([2.0, 2.0, 2.0, 1.0]) if n == 2 else np.eye(4))
    unreadable: list[str] = []
    compute_fingerprint(scan(bad), unreadable=unreadable)
    assert len(unreadable) == 1 and "c2.nii.gz: mask voxel-to-world affine differs" in unreadable[0]
    assert [p.split(": ", 1)[1][:30] for p in check(bad, duplicates=False)["problems"]] == [
        "mask voxel-to-world affine dif"
    ]


def test_a_sampled_fingerprint_still_finds_every_unusable_2d_case(tmp_path):
    from tests.conftest import write_blob_folders

    from tumorbench.data.fingerprint import FingerprintConfig, unusable_cases

    root = tmp_path / "blobs"
    write_blob_folders(root, n=10)
    cut = [root / "yes" / f"yes{n}.png" for n in range(0, 10, 3)] + [root / "no" / "no5.png"]
    for path in cut:
        path.write_bytes(path.read_bytes()[:60])
    frame, config = scan(root), FingerprintConfig(max_cases=6, hash_duplicates=False)
    in_sample: list[str] = []
    fp = compute_fingerprint(frame, config, unreadable=in_sample)
    assert fp["sample"]["sampled"] and fp["sample"]["read"] + fp["sample"]["unreadable"] == 6
    rest = unusable_cases(frame, config)
    named = sorted(p.split(": ")[0] for p in in_sample + rest)
    assert named == sorted(str(p) for p in cut)  # each cut file once, in the sample or in the rest
    assert unusable_cases(frame, FingerprintConfig(max_cases=100)) == []  # every case already read
