"""A time budget on a real Tune search: the first trial finishes, then no further trial is trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_search_config, write_blob_folders  # noqa: E402
from tumorbench.tuning.budget import BudgetGuard
from tumorbench.tuning.search import run_search, trial_rows

pytestmark = [pytest.mark.ray, pytest.mark.slow]
tune = pytest.importorskip("ray.tune")


def test_budget_ends_the_search_after_the_first_complete_trial(ray_session, tmp_path):
    data = tmp_path / "data"
    write_blob_folders(data)
    base = tiny_search_config(data, tmp_path / "unused")
    # 1 s of budget: the first trial still finishes (a search always gets one result), then nothing fits
    guard = BudgetGuard(1.0, n_folds=2, fold_seconds=20.0, grace=900.0)
    grid = run_search(
        base,
        {"lr": tune.loguniform(1e-3, 1e-2)},
        searcher="random",
        scheduler="none",
        num_samples=4,
        storage_path=tmp_path,
        name="budget",
        verbose=0,
        stopper=guard,
    )
    rows = trial_rows(grid, "auc", 2)
    assert [r["status"] for r in rows].count("done") == 1
    assert all(r["folds_done"] == 0 for r in rows if r["status"] != "done")  # later trials cut at once, if started
    assert guard.ended_by == "budget: no further trial fits"
    summary = guard.summary()
    assert summary["budget_s"] == 1.0 and summary["fold_seconds_seen"] > 0
    assert Path(rows[0]["path"]).exists()
