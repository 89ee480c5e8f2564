"""Nested selection: what is chosen (epoch, early stop, the configuration's score) depends on the inner
validation patients only; the outer fold is scored once, by the chosen model. Runs in-process, no Ray."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from conftest import write_blob_folders
from tumorbench.training import data as fold_data
from tumorbench.training.config import TrainConfig, TrainConfigError
from tumorbench.training.loop import fit_fold, seed_everything
from tumorbench.training.nested import inner_groups, inner_split
from tumorbench.training.tasks import build_model
from tumorbench.training.trainer import preflight


def _config(tmp_path) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "task": "classification",
            "model": "resnet18_tiny",
            "data": str(tmp_path / "data"),
            "out": str(tmp_path / "run"),
            "n_folds": 3,
            "fold": 1,
            "epochs": 4,
            "batch_size": 8,
            "lr": 3e-3,
            "workers": 1,
            "seed": 3,
            "inner_val_fraction": 0.3,
            "preprocess": {"spatial_size": [32, 32]},
        }
    )


def _train(config: TrainConfig, cases: fold_data.FoldCases):
    seed_everything(config.seed)
    in_ch, out_ch = fold_data.io_channels(config, cases)
    model, _ = build_model(config, in_ch, out_ch)
    reports = []
    outer = fit_fold(config, cases, model, torch.device("cpu"), 0, 1, lambda m, *_: reports.append(m))
    return reports, outer, {k: v.clone() for k, v in model.state_dict().items()}


def test_permuting_outer_labels_cannot_change_what_is_selected(tmp_path):
    write_blob_folders(tmp_path / "data", n=15)
    config = _config(tmp_path)
    fold_data.ensure_split_file(config, fold_data.load_catalog(config))
    cases = fold_data.fold_cases(config)
    outer_ids = {c["case_id"] for c in cases.test}
    assert outer_ids and not outer_ids & {c["case_id"] for c in cases.train + cases.val}
    assert not {c["patient_id"] for c in cases.val} & {c["patient_id"] for c in cases.train}
    reports, outer, weights = _train(config, cases)
    # the same fold with every outer label flipped: training and selection never read them
    flipped = fold_data.FoldCases(**{**vars(cases), "test": [dict(c, label=1 - c["label"]) for c in cases.test]})
    reports2, outer2, weights2 = _train(config.replace(out=str(tmp_path / "run2")), flipped)
    inner = [(r["epoch"], r["auc"], r["best_epoch"], r["early_stop"]) for r in reports]
    assert inner == [(r["epoch"], r["auc"], r["best_epoch"], r["early_stop"]) for r in reports2]
    assert outer[0]["epoch"] == outer2[0]["epoch"] == reports[-1]["best_epoch"]
    for key in weights:
        torch.testing.assert_close(weights[key], weights2[key])
    # ...while the outer score does see them (the test has teeth): flipped binary labels mirror the AUC
    assert abs(outer[0]["auc"] + outer2[0]["auc"] - 1) < 1e-9
    assert len(outer[1]) == len(cases.test)


def test_inner_split_is_patient_level_and_stratified():
    rows = [
        {"case_id": f"c{i}", "patient_id": f"p{i // 2}", "label": "yes" if (i // 2) % 2 else "no"} for i in range(40)
    ]
    train, val = inner_split(pd.DataFrame(rows), 0.25, seed=0)
    assert not set(train["patient_id"]) & set(val["patient_id"])
    assert len(train) + len(val) == 40 and val["patient_id"].nunique() == 5
    assert set(val["label"]) == {"yes", "no"}


def test_one_training_patient_leaves_the_inner_set_empty():
    rows = pd.DataFrame([{"case_id": f"c{i}", "patient_id": "p0", "label": None} for i in range(3)])
    train, val = inner_split(rows, 0.2, seed=0)
    assert len(train) == 3 and val.empty


def _split_groups_across(train: pd.DataFrame, val: pd.DataFrame, groups: list[list[str]]) -> list[list[str]]:
    """The near-duplicate groups with members on both sides of an inner split."""
    sides = {c: "train" for c in train["case_id"]} | {c: "val" for c in val["case_id"]}
    return [g for g in groups if len({sides[c] for c in g if c in sides}) > 1]


def test_inner_split_keeps_near_duplicate_groups_whole():
    rows = pd.DataFrame(
        [{"case_id": f"c{i}", "patient_id": f"c{i}", "label": "yes" if i % 2 else "no"} for i in range(40)]
    )
    near = [[f"c{i}", f"c{i + 1}", f"c{i + 3}"] for i in range(0, 40, 8)]  # five groups of 3, classes mixed
    groups = inner_groups(rows, near)
    assert len(set(groups)) == 40 - 2 * 5
    naive = 0
    for seed in range(20):
        train, val = inner_split(rows, 0.25, seed, groups)
        assert len(train) + len(val) == 40 and len(val) > 0
        assert _split_groups_across(train, val, near) == []
        naive += len(_split_groups_across(*inner_split(rows, 0.25, seed), near))
    assert naive > 0  # patient-level splitting alone does separate copies: the check above has teeth


def test_fold_cases_keep_near_duplicates_together_in_the_inner_split(tmp_path):
    from test_near_duplicates import _folder  # its rescaled and re-encoded copies, each image its own patient

    _folder(tmp_path / "data", n=16)
    split_across = 0
    for seed in range(6):
        config = _config(tmp_path).replace(out=str(tmp_path / f"run{seed}"), seed=seed, inner_val_fraction=0.5)
        doc = fold_data.ensure_split_file(config, fold_data.load_catalog(config))
        assert len(doc["near_duplicates"]) == 2
        for fold in range(3):
            cases = fold_data.fold_cases(config.replace(fold=fold))
            train = pd.DataFrame(cases.train)
            val = pd.DataFrame(cases.val)
            assert len(val) > 0
            assert _split_groups_across(train, val, doc["near_duplicates"]) == []
            rows = pd.concat([train, val], ignore_index=True)
            naive = inner_split(rows, 0.5, config.seed * 1000 + fold)
            split_across += len(_split_groups_across(*naive, doc["near_duplicates"]))
    assert split_across > 0


def test_a_fold_with_one_training_patient_is_refused_before_ray(tmp_path):
    write_blob_folders(tmp_path / "data", n=2)
    # two patients with an image of each class: each of 2 folds trains on one patient
    rows = [f"{c}/{c}{i}.png,p{i}" for c in ("no", "yes") for i in range(2)]
    (tmp_path / "data" / "patients.csv").write_text("image,patient_id\n" + "\n".join(rows) + "\n")
    config = _config(tmp_path).replace(n_folds=2, fold=0)
    frame = fold_data.load_catalog(config)
    with pytest.raises(TrainConfigError, match=r"fold 0 of .*splits\.json trains on 1 patient group\(s\)") as error:
        fold_data.ensure_split_file(config, frame)
    assert "inner_val_fraction 0.3" in str(error.value) and "inner_val_fraction 0 " in str(error.value)
    assert not (tmp_path / "run" / "splits.json").exists()  # a refused split is not kept
    with pytest.raises(TrainConfigError, match="fold 0 of"):
        preflight(config, resume=False)  # what `tumorbench train` and every search run before Ray
    # Without nested selection the same folds are fine (each validates on itself).
    doc = fold_data.ensure_split_file(config.replace(inner_val_fraction=0.0), frame)
    assert len(doc["folds"]) == 2
    # ...and an existing split file is checked too when nested selection is asked for again.
    with pytest.raises(TrainConfigError, match="fold 0 of"):
        fold_data.ensure_split_file(config, frame)


@pytest.mark.parametrize("seed", range(8))
def test_a_small_training_fold_keeps_every_class_on_both_sides_of_the_inner_split(seed):
    # 6 training cases, 4 + 2 per class (a 12-case study at 2 folds): a plain 5-way group split puts one
    # case in the inner validation, whose AUC is then undefined on every epoch.
    train = pd.DataFrame({"patient_id": [f"p{i}" for i in range(6)], "label": ["a"] * 4 + ["b"] * 2})
    inner_train, inner_val = inner_split(train, 0.2, seed)
    assert set(inner_val["label"]) == {"a", "b"} and set(inner_train["label"]) == {"a", "b"}
    assert len(inner_train) + len(inner_val) == 6
    assert not set(inner_train["patient_id"]) & set(inner_val["patient_id"])
