"""A study ranked by a lower-is-better metric (HD95) picks the lowest everywhere: search, package, leaderboard."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from ray import tune

from tumorbench.study.runner import run_study
from tumorbench.study.spec import Candidate, Study

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_hd95_study_selects_the_lowest_hd95(ray_session, tmp_path):
    patch = [32, 32, 32]
    study = Study(
        name="hd95",
        task="segmentation",
        data=None,
        synthetic=("brain-mri", 6),
        n_folds=2,
        primary="hd95",
        scheduler="none",
        baselines=("otsu",),
        explain_cases=0,  # nothing here is about explanations; they cost a Grad-CAM pass per fold
        config={
            "spatial_dims": 3,
            "epochs": 1,
            "batch_size": 2,
            "workers": 1,
            "augment": {},
            "warmup_epochs": 0,
            "preprocess": {"label_map": "binary"},
            "sampling": {"mode": "patch3d", "patch_size": patch, "num_samples": 1},
            "roi_size": patch,
        },
        # Two trials are the least that make the search's choice a choice; one deep model and one baseline
        # make a leaderboard to order. Every trial is 2 Ray Train runs (~25-40 s each on 2 cores).
        candidates=(Candidate("unet", {"model": "unet_tiny"}, {"lr": tune.grid_search([1e-2, 1e-4])}, "grid"),),
    )
    result = run_study(study, tmp_path / "out", preset="smoke")
    out = tmp_path / "out"

    # The search: the kept trial has the lowest mean (inner-validation) HD95 of its finished trials.
    trials = pd.read_csv(out / "trials.csv")
    unet = trials[(trials["model"] == "unet") & (trials["status"] == "done")]
    assert len(unet) == 2
    chosen = json.loads((out / "configs.json").read_text())["unet"]
    kept = unet.loc[unet["hd95_mean"].idxmin()]
    assert json.loads(kept["params"]) == chosen

    # The leaderboard: lowest pooled HD95 first (inf, a missed tumour, last).
    lb = pd.read_csv(out / "leaderboard.csv")
    assert sorted(lb["model"]) == ["otsu", "unet"]
    pooled = lb["hd95_pooled"].tolist()
    assert pooled == sorted(pooled)
    assert result["leaderboard"]["model"].tolist() == lb["model"].tolist()

    # The package: the kept trial's fold with the lowest inner-validation HD95 (of two folds, the lower one is
    # the one at or below their mean); that fold's outer (reported) HD95 is the one folds.csv holds.
    folds = pd.read_csv(out / "folds.csv")
    own = folds[folds["model"] == "unet"].set_index("fold")
    manifest = json.loads((out / "manifest.json").read_text())["best"]
    assert manifest["model"] == "unet"
    assert manifest["inner_hd95"] <= kept["hd95_mean"] + 1e-9
    assert manifest["outer_hd95"] == pytest.approx(own.loc[manifest["fold"], "hd95"])
    assert json.loads((out / "best" / "segmentation" / "model.json").read_text())["split"]["fold"] == manifest["fold"]
