"""Explanation scores of a study: bounded out-of-fold cases per fold, explanations.csv, leaderboard, report."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from conftest import write_blob_folders
from model_packages import CLS2D, SEG3D, make_package
from tumorbench.data.catalog import scan
from tumorbench.data.splits import SplitConfig, make_splits
from tumorbench.data.synthetic import make_study
from tumorbench.explain.study import explanation_summary, merge_into_leaderboard, write_explanations
from tumorbench.reporting.sections import explanations_section


def _collect(lines):
    return lambda line, **_: lines.append(line)


def _records(package, n_folds):
    return [SimpleNamespace(fold=f, checkpoint=str(package)) for f in range(n_folds)]


def test_classification_study_explanations_are_bounded_and_merged(tmp_path):
    write_blob_folders(tmp_path / "data", n=6)
    frame = scan(tmp_path / "data", "image-folder")
    doc = make_splits(frame, SplitConfig(n_folds=2, seed=0))
    package = make_package(tmp_path / "cls", CLS2D)
    table = write_explanations(
        tmp_path,
        "classification",
        {"cnn": _records(package, 2)},
        frame,
        doc,
        ["cnn"],
        per_fold=3,
        class_names=["no", "yes"],
    )
    assert len(table) == 6 and sorted(table["fold"].unique()) == [0, 1]
    by_id = frame.set_index("case_id")["label"]
    assert (by_id[table["case_id"]] == "yes").all()  # positive cases first (each fold has 3 of them)
    assert table["pointing"].isna().all()  # class folders carry no masks
    assert table[["deletion_auc", "insertion_auc"]].stack().between(0, 1).all()
    assert table.groupby("fold")["rand_rank_corr"].nunique().eq(1).all()  # one check per fold
    assert (tmp_path / "explanations.csv").is_file() and (tmp_path / "explanations" / "cnn_best.png").is_file()

    lb = pd.DataFrame({"rank": [1, 2], "model": ["cnn", "logreg"], "kind": ["dl", "baseline"]})
    merged = merge_into_leaderboard(lb, table)
    assert merged.loc[0, "expl_n_explained"] == 6 and math.isnan(merged.loc[1, "expl_deletion_auc"])
    assert merged.loc[0, "expl_deletion_auc"] == pytest.approx(table["deletion_auc"].mean())
    html = explanations_section(tmp_path)
    assert "does each model look at the tumor" in html and html.count("<img") == 2


def test_segmentation_study_scores_pointing_and_energy_per_patient(tmp_path):
    root = make_study("brain-mri", tmp_path / "brats", cases=2, seed=0)
    frame = scan(root, "brats")
    doc = make_splits(frame, SplitConfig(n_folds=2, seed=0))
    package = make_package(tmp_path / "seg", SEG3D)
    lines = []
    records = {"unet": _records(package, 2)}
    table = write_explanations(tmp_path, "segmentation", records, frame, doc, ["unet"], 1, echo=_collect(lines))
    assert len(table) == 2 and set(table["patient_id"]) == set(frame["patient_id"])
    assert [line.split(";")[0] for line in lines] == [
        "[explain] unet fold 1: 1 cases (1/2)",
        "[explain] unet fold 2: 1 cases (2/2)",
    ]
    assert "left" in lines[0] and "left" not in lines[1]
    assert table["pointing"].isin([0.0, 1.0]).all() and table["energy_in_tumor"].between(0, 1).all()
    summary = explanation_summary(table)
    assert summary.loc[0, "pointing"] == pytest.approx(table["pointing"].mean())
    assert isinstance(summary.loc[0, "rand_flagged"], (bool, np.bool_))
