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
        candidates=(
            Candidate("unet", {"model": "unet_tiny"}, {"lr": tune.grid_search([1e-2, 1e-4])}, "grid"),
            Candidate("segresnet", {"model": "segresnet_tiny"}),
        ),
    )
    result = run_study(study, tmp_path / "out", preset="smoke")
    out = tmp_path / "out"

    # The search: the kept trial has the lowest mean (inner-validation) HD95 of its finished trials.
    trials = pd.read_csv(out / "trials.csv")
    unet = trials[(trials["model"] == "unet") & (trials["status"] == "done")]
    assert len(unet) == 2
    chosen = json.loads((out / "configs.json").read_text())["unet"]
    lowest = unet.loc[unet["hd95_mean"].idxmin(), "params"]
    assert json.loads(lowest) == chosen

    # The leaderboard: lowest pooled HD95 first (inf, a missed tumour, last).
    lb = pd.read_csv(out / "leaderboard.csv")
    pooled = lb["hd95_pooled"].tolist()
    assert pooled == sorted(pooled)
    assert result["leaderboard"]["model"].tolist() == lb["model"].tolist()

    # The package: the best-ranked deep model, its fold with the lowest inner-validation HD95; that fold's
    # outer (reported) HD95 is the one folds.csv holds.
    folds = pd.read_csv(out / "folds.csv")
    dl_first = next(m for m in lb["model"] if m in ("unet", "segresnet"))
    own = folds[folds["model"] == dl_first].set_index("fold")
    manifest = json.loads((out / "manifest.json").read_text())["best"]
    assert manifest["model"] == dl_first
    assert manifest["outer_hd95"] == pytest.approx(own.loc[manifest["fold"], "hd95"])
    assert json.loads((out / "best" / "segmentation" / "model.json").read_text())["split"]["fold"] == manifest["fold"]
