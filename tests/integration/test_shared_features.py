"""A study's classifier baselines share one feature pass (Ray tasks) and score as if each fold computed its own."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import write_blob_folders  # noqa: E402
from tumorbench.data.catalog import scan
from tumorbench.data.splits import SplitConfig, fold_frames, make_splits
from tumorbench.study import results

pytestmark = [pytest.mark.ray]


def test_baselines_on_shared_features_equal_their_own(ray_session, tmp_path, monkeypatch):
    write_blob_folders(tmp_path / "data", n=10)
    frame = scan(tmp_path / "data")
    doc = make_splits(frame, SplitConfig(n_folds=2, seed=0, stratify="label"))
    params = {"logreg": {"search": False}, "random_forest": {"search": False, "n_estimators": 20}}
    study = SimpleNamespace(
        task="classification", baselines=("logreg", "random_forest"), baseline_params=params, seed=0, config={}
    )
    monkeypatch.setattr(results, "FEATURE_MIN_CASES", 8)  # 20 cases in 3 feature tasks
    shared = results.run_baselines(study, frame, doc, ["no", "yes"])
    own = []
    for name in study.baselines:
        for fold in range(2):
            train, val = fold_frames(frame, doc, fold)
            own.append(results.baseline_fold(name, "classification", train, val, fold, ["no", "yes"], 0, params[name]))
    key = ["model", "fold", "case_id"]
    shared, own = (t.sort_values(key).reset_index(drop=True) for t in (shared, pd.concat(own)))
    assert len(shared) == 2 * len(frame)  # every case once per baseline, out of fold
    pd.testing.assert_frame_equal(shared[own.columns], own, check_exact=False, rtol=1e-9)
    assert results.shared_features(SimpleNamespace(**{**vars(study), "baselines": ("otsu",)}), frame, doc) is None


def test_locked_test_refits_share_one_feature_pass_and_keep_the_test_sets_own_case_ids(ray_session, tmp_path):
    """The test folder reuses the training folder's file names (``no/no0.png`` in both): one feature cache holds
    both (the test cases tagged meanwhile), and every refit scores as a refit with a cache of its own."""
    from tumorbench.study import final

    write_blob_folders(tmp_path / "train", n=10)
    write_blob_folders(tmp_path / "test", n=4)
    frame, test = scan(tmp_path / "train"), scan(tmp_path / "test")
    test["patient_id"] = "t-" + test["patient_id"].astype(str)  # other patients, the same case ids
    assert set(test["case_id"]) <= set(frame["case_id"])
    params = {"logreg": {"search": False}, "random_forest": {"search": False, "n_estimators": 20}}
    study = SimpleNamespace(
        task="classification", baselines=("logreg", "random_forest"), baseline_params=params, seed=0, config={}
    )
    rows = final.final_baseline_rows(study, frame, {"excluded": [], "folds": []}, test, ["no", "yes"])
    renamed = test.assign(case_id="x/" + test["case_id"])
    own = pd.concat(
        [results.baseline_fold(n, "classification", frame, renamed, 0, ["no", "yes"], 0, params[n]) for n in params]
    )
    own["case_id"] = own["case_id"].str.removeprefix("x/")
    key = ["model", "case_id"]
    rows, own = (t.sort_values(key).reset_index(drop=True) for t in (rows, own))
    assert sorted(rows["case_id"].unique()) == sorted(test["case_id"]) and len(rows) == 2 * len(test)
    pd.testing.assert_frame_equal(rows[own.columns], own, check_exact=False, rtol=1e-9)
