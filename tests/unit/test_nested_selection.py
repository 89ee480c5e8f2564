"""Nested selection: what is chosen (epoch, early stop, the configuration's score) depends on the inner
validation patients only; the outer fold is scored once, by the chosen model. Runs in-process, no Ray."""

from __future__ import annotations

import pandas as pd
import torch

from conftest import write_blob_folders
from tumorbench.training import data as fold_data
from tumorbench.training.config import TrainConfig
from tumorbench.training.loop import fit_fold, seed_everything
from tumorbench.training.nested import inner_split
from tumorbench.training.tasks import build_model


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
