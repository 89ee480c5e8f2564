"""A trial's folds in one Ray Train run (``training.crossval``): one start-up, per-fold outcomes, resume mid-trial."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sklearn.metrics import roc_auc_score

from conftest import tiny_search_config, write_blob_folders  # noqa: E402
from tumorbench.training.crossval import FOLD_RESULT, read_fold_result
from tumorbench.training.trainer import fit, has_snapshot, read_history
from tumorbench.tuning.budget import BudgetGuard
from tumorbench.tuning.search import prepare_base, run_search, trial_rows
from tumorbench.tuning.trial import collect_folds

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_one_run_trains_every_fold_and_a_resumed_run_skips_finished_ones(ray_session, tmp_path):
    write_blob_folders(tmp_path / "data")
    base, n_folds = prepare_base(tiny_search_config(tmp_path / "data", tmp_path / "unused"), tmp_path / "exp", None)
    run = base.replace(out=str(tmp_path / "trial"), epochs=2)
    folds = [
        {"fold": k, "out": str(tmp_path / "trial" / f"fold_{k}"), "storage": str(tmp_path / "trial" / f"fold_{k}")}
        for k in range(n_folds)
    ]
    fit(run, verbose=False, folds=folds)
    records, oof = collect_folds(run, folds)
    assert [r.fold for r in records] == [0, 1] and all(r.epochs == 2 for r in records)
    for record, spec in zip(records, folds, strict=True):
        history = read_history(spec["out"])
        assert [int(row["epoch"]) for row in history] == [0, 1]  # each fold's epochs in its own history
        best = max(float(row["auc"]) for row in history)  # the inner validation's best epoch is the fold's score
        assert record.score == pytest.approx(best)
        part = [r for r in oof if r["fold"] == record.fold]
        # nested selection: the outer fold, scored once; sklearn's AUC on the saved predictions
        assert record.outer["auc"] == pytest.approx(
            roc_auc_score([r["y_true"] for r in part], [r["probs"][1] for r in part])
        )
        assert json.loads((Path(record.checkpoint) / "model.json").read_text())["split"]["fold"] == record.fold
    kept = sorted(p.name for p in (tmp_path / "trial" / "train").glob("fold_*_epoch_*"))
    assert kept == ["fold_1_epoch_0001"]  # Train keeps the latest state only; each fold's best is its best/

    # A run cut short after fold 0: fold 1's outcome is lost, Train's latest checkpoint is fold 1's last epoch.
    (Path(folds[1]["storage"]) / FOLD_RESULT).unlink()
    stamp = (Path(folds[0]["out"]) / "history.csv").stat().st_mtime
    assert has_snapshot(run)
    fit(run, resume=True, verbose=False, folds=folds)
    assert (Path(folds[0]["out"]) / "history.csv").stat().st_mtime == stamp  # fold 0 not trained again
    again = read_fold_result(folds[1]["storage"])
    assert again is not None and again.score == pytest.approx(records[1].score) and again.epochs == 2
    assert len(read_history(folds[1]["out"])) == 2  # resumed at its last epoch: nothing trained twice


def test_a_trial_cut_mid_run_frees_its_workers_for_the_next(ray_session, tmp_path):
    import ray
    from ray import tune

    write_blob_folders(tmp_path / "data")
    base = tiny_search_config(tmp_path / "data", tmp_path / "unused").replace(epochs=2000)
    # everything cut at 75 s, inside fold 0: after the trial's start-up (~30 s on a slow 2-core machine, where a
    # 30 s cut came before the first epoch) and long before 2000 epochs of these 16 images end (~0.2 s each)
    guard = BudgetGuard(0.0, n_folds=2, fold_seconds=20.0, grace=75.0)
    grid = run_search(
        base,
        {"lr": tune.choice([3e-3])},
        searcher="random",
        scheduler="none",
        num_samples=1,
        storage_path=tmp_path,
        name="cut",
        verbose=0,
        stopper=guard,
    )
    [row] = trial_rows(grid, "auc", 2)
    assert row["status"] == "stopped" and 0 < row["epochs_spent"] < 2000  # cut in fold 0
    assert guard.ended_by == "hard deadline: running folds cut"
    # Train's cleaner removes the cut run's placement group (through the State API, served by the dashboard);
    # were it leaked, the next trial's workers would wait for its CPUs for ever.
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 1.99 and time.monotonic() < deadline:
        time.sleep(1)
    assert ray.available_resources().get("CPU", 0) == pytest.approx(2.0)
