"""A --test set sharing a patient, an image or a near-duplicate with the training data is refused, naming them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tumorbench.data.catalog import scan
from tumorbench.data.locked_test import check_locked_test, locked_test_overlaps
from tumorbench.errors import DataError


def _image(seed: int) -> Image.Image:
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(96, 96)), 6)
    return Image.fromarray((255 * (field - field.min()) / np.ptp(field)).astype(np.uint8))


def _folder(root, seeds):
    for cls in ("no", "yes"):
        (root / cls).mkdir(parents=True)
    for i, seed in enumerate(seeds):
        _image(seed).save(root / ("yes" if i % 2 else "no") / f"s{seed}.png")


def test_clean_test_set_passes_and_overlaps_are_named(tmp_path):
    _folder(tmp_path / "train", range(8))
    _folder(tmp_path / "test", range(100, 104))
    train, test = scan(tmp_path / "train"), scan(tmp_path / "test")
    assert locked_test_overlaps(train, test) == []
    check_locked_test(train, test, "test")
    _image(3).resize((80, 80)).save(tmp_path / "test" / "no" / "copy.png")  # a rescaled training image
    _image(5).save(tmp_path / "test" / "yes" / "same.png")  # a byte-identical one
    problems = locked_test_overlaps(train, scan(tmp_path / "test"))
    assert "identical images: test:yes/same.png ~ train:yes/s5.png" in problems
    assert "near-duplicates: test:no/copy.png ~ train:yes/s3.png" in problems
    assert len(problems) == 2  # the identical pair is not named again as a near-duplicate
    with pytest.raises(DataError, match=r"overlaps the training data \(2\)"):
        check_locked_test(train, scan(tmp_path / "test"), "test")


def test_final_model_trains_on_every_training_case_and_scores_the_test_set_once(tmp_path):
    import torch

    from conftest import write_blob_folders
    from tumorbench.training import data as fold_data
    from tumorbench.training.config import TrainConfig
    from tumorbench.training.loop import fit_fold, seed_everything
    from tumorbench.training.tasks import build_model

    write_blob_folders(tmp_path / "data", n=10)
    write_blob_folders(tmp_path / "test", n=3)  # same generator seed: byte copies of the first training images
    config = TrainConfig.from_dict(
        {
            "task": "classification",
            "model": "resnet18_tiny",
            "data": str(tmp_path / "data"),
            "out": str(tmp_path / "run"),
            "n_folds": 3,
            "epochs": 2,
            "batch_size": 8,
            "workers": 1,
            "test_data": str(tmp_path / "test"),
            "preprocess": {"spatial_size": [32, 32]},
        }
    )
    frame = fold_data.load_catalog(config)
    fold_data.ensure_split_file(config, frame)
    cases = fold_data.fold_cases(config)
    assert len(cases.train) + len(cases.val) == len(frame) == 20  # every training case, no fold held out
    assert sorted(c["case_id"] for c in cases.test) == sorted(scan(tmp_path / "test")["case_id"])
    seed_everything(0)
    model, _ = build_model(config, *fold_data.io_channels(config, cases))
    metrics, records = fit_fold(config, cases, model, torch.device("cpu"), 0, 1, lambda *_: None)
    assert len(records) == 6 and 0.0 <= metrics["auc"] <= 1.0
    with pytest.raises(DataError, match="overlaps the training data"):  # the same images: refused
        check_locked_test(frame, scan(tmp_path / "test"), "test")


def test_dry_run_plans_a_clean_test_set_and_refuses_an_overlapping_one(tmp_path, capsys):
    from tumorbench.study.cli import main

    _folder(tmp_path / "train", range(8))
    _folder(tmp_path / "test", range(100, 104))
    args = ["--data", str(tmp_path / "train"), "--preset", "smoke", "--out", str(tmp_path / "out"), "--dry-run"]
    assert main([*args, "--test", str(tmp_path / "test")]) == 0
    assert "locked test set: 4 cases" in capsys.readouterr().out
    _image(5).save(tmp_path / "test" / "yes" / "same.png")  # a training image: refused by the plan, before Ray
    assert main([*args, "--test", str(tmp_path / "test")]) == 2
    err = capsys.readouterr().err
    assert "test: the test set overlaps the training data (1): identical images: test:yes/same.png" in err
    listing = tmp_path / "out" / "test_overlaps.txt"  # every overlap, for a set with more than the ten shown
    assert f"(all of them in {listing})" in err
    assert listing.read_text() == "identical images: test:yes/same.png ~ train:yes/s5.png\n"


def test_a_test_set_that_cannot_score_the_models_is_refused_naming_why(tmp_path):
    from tumorbench.study.final import check_test_targets

    _folder(tmp_path / "train", range(8))
    train = scan(tmp_path / "train")
    _folder(tmp_path / "ok", range(100, 104))
    check_test_targets("classification", train, scan(tmp_path / "ok"), "ok")
    unlabelled = scan(tmp_path / "ok").assign(label=np.nan)  # e.g. a DICOM folder with no label column
    with pytest.raises(DataError, match=r"ok: the test set has no class labels .*nothing to score against"):
        check_test_targets("classification", train, unlabelled, "ok")
    with pytest.raises(DataError, match=r"ok: the test set has no masks"):
        check_test_targets("segmentation", train.assign(mask="m.png"), scan(tmp_path / "ok"), "ok")
    _folder(tmp_path / "renamed", range(300, 304))
    (tmp_path / "renamed" / "yes").rename(tmp_path / "renamed" / "tumour")
    with pytest.raises(DataError, match="classes the training data does not: tumour$"):  # no hint: unrelated names
        check_test_targets("classification", train, scan(tmp_path / "renamed"), "renamed")
    (tmp_path / "renamed" / "tumour").rename(tmp_path / "renamed" / "y")  # a class named by the start of its name
    with pytest.raises(DataError, match=r"does not: y \('y' in the test set, 'yes' in training: rename the folders"):
        check_test_targets("classification", train, scan(tmp_path / "renamed"), "renamed")
    (tmp_path / "renamed" / "y").rename(tmp_path / "renamed" / "yes")
    for path in (tmp_path / "renamed" / "no").iterdir():
        path.unlink()
    (tmp_path / "renamed" / "no").rmdir()
    with pytest.raises(DataError, match=r"one class only \(yes\): AUC is undefined"):
        check_test_targets("classification", train, scan(tmp_path / "renamed"), "renamed")


def test_a_reused_file_name_is_no_shared_patient_where_neither_side_names_patients(tmp_path):
    """Training/yes/s1.png and Testing/yes/s1.png, two different images, one id each (no patients.csv): compared as
    images, not refused as one patient; a patients.csv naming the same patient on both sides still is."""
    _folder(tmp_path / "train", range(8))
    _folder(tmp_path / "test", range(100, 104))
    for path in sorted((tmp_path / "test").glob("*/*.png")):
        path.rename(path.with_name(f"s{int(path.stem[1:]) - 100}.png"))  # the training folder's names
    train, test = scan(tmp_path / "train"), scan(tmp_path / "test")
    assert set(test["case_id"]) <= set(train["case_id"])
    assert locked_test_overlaps(train, test) == []
    (tmp_path / "test" / "patients.csv").write_text(
        "image,patient_id\n" + "".join(f"{c},P{i}\n" for i, c in enumerate(test["case_id"]))
    )
    (tmp_path / "train" / "patients.csv").write_text(
        "image,patient_id\n" + "".join(f"{c},P{i}\n" for i, c in enumerate(train["case_id"]))
    )
    problems = locked_test_overlaps(scan(tmp_path / "train"), scan(tmp_path / "test"))
    assert problems == [f"patient P{i} is in both" for i in range(4)]
