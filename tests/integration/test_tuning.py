"""Ray Tune searches end to end on tiny data: k-fold trials through Ray Train, out-of-fold predictions, resume."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from conftest import tiny_search_config, write_blob_folders  # noqa: E402
from tumorbench.data.catalog import scan
from tumorbench.tuning import search as search_module
from tumorbench.tuning.search import run_search
from tumorbench.tuning.space import SearchSpaceError
from tumorbench.tuning.trial import read_state

pytestmark = [pytest.mark.ray, pytest.mark.slow]
tune = pytest.importorskip("ray.tune")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tuning") / "data"
    write_blob_folders(root)
    return root


def test_refused_space_raises_before_ray_starts(data_root, tmp_path, monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a space that should have been refused")

    monkeypatch.setattr(search_module, "ensure_ray", no_ray)
    with pytest.raises(SearchSpaceError, match="grid search needs grid_search/choice values, got uniform for lr"):
        run_search(
            tiny_search_config(data_root, tmp_path / "out"),
            {"lr": tune.uniform(1e-4, 1e-2)},
            searcher="grid",
            storage_path=tmp_path,
            name="refused",
            verbose=0,
        )
    assert not (tmp_path / "refused").exists()


def _reported(result) -> list[dict]:
    return result.metrics_dataframe.sort_values("training_iteration").to_dict("records")


def test_grid_search_crossval_trials_oof_and_resume(ray_session, data_root, tmp_path, capfd):
    base = tiny_search_config(data_root, tmp_path / "unused")
    space = {"lr": tune.grid_search([3e-3, 1e-2])}
    kwargs = dict(searcher="grid", scheduler="none", storage_path=tmp_path, name="grid", verbose=0)
    grid = run_search(base, space, **kwargs)
    assert len(grid) == 2 and not grid.errors
    captured = capfd.readouterr()
    for tune_output in ("Configuration for experiment", "Trial status", "View detailed results", "Wrote the latest"):
        assert tune_output not in captured.out + captured.err, tune_output  # Tune silent at verbose=0
    assert captured.out.count("fold 2/2") == 2  # our live lines: one per trial's last fold
    assert sorted(r.config["lr"] for r in grid) == [3e-3, 1e-2]

    split = json.loads((tmp_path / "grid" / "splits.json").read_text())
    expected = sorted(set(scan(str(data_root))["case_id"]) - set(split["excluded"]))
    assert len(expected) == 24
    for result in grid:
        # One Train run trains both folds; Tune sees every epoch (ASHA's time), each fold's end, the outcome.
        rows = _reported(result)
        assert [int(r["folds_done"]) for r in rows] == [0, 1, 1, 2, 2]
        assert [int(r["epochs_spent"]) for r in rows] == [1, 1, 2, 2, 2]  # 1 epoch x 2 folds
        folds = [rows[-1]["fold_0_auc"], rows[-1]["fold_1_auc"]]
        assert rows[0]["auc_mean"] == pytest.approx(folds[0]) == rows[1]["auc_mean"]
        assert rows[2]["auc_mean"] == pytest.approx(np.mean(folds)) == rows[-1]["auc_mean"]  # fold 1's epoch counts
        assert rows[-1]["auc_sd"] == pytest.approx(statistics.stdev(folds))
        runs = list(Path(result.path).rglob("checkpoint_manager_snapshot.json"))
        assert len(runs) == 1 and [p.name for p in runs[0].parent.glob("fold_*_epoch_*")] == ["fold_1_epoch_0000"]
        fold_records, oof = read_state(result.checkpoint.path)
        # Out-of-fold predictions: every usable case of the split exactly once, in its own fold.
        assert sorted(r["case_id"] for r in oof) == expected
        for fold in (0, 1):
            part = [r for r in oof if r["fold"] == fold]
            assert sorted(r["case_id"] for r in part) == sorted(split["folds"][fold]["val"])
            # The fold's reported (outer) AUC is sklearn's on its saved predictions ('yes' is class 1); the
            # score the trial ranks by is the inner validation's, which never saw these cases.
            auc = roc_auc_score([r["y_true"] for r in part], [r["probs"][1] for r in part])
            assert fold_records[fold].outer["auc"] == pytest.approx(auc)
            assert folds[fold] == pytest.approx(fold_records[fold].score)
            assert Path(fold_records[fold].checkpoint, "model.json").is_file()
            assert list(Path(result.path, f"fold_{fold}", "tensorboard").glob("events.out.tfevents.*"))
        assert list(Path(result.path).glob("events.out.tfevents.*"))  # Tune's per-trial TensorBoard log

    # Resuming a finished search reruns nothing: the same trials, no new epochs.
    stamps = {p: p.stat().st_mtime for p in (tmp_path / "grid").rglob("history.csv")}
    again = run_search(base, space, **kwargs, resume=True)
    assert sorted(r.config["lr"] for r in again) == [3e-3, 1e-2]
    assert {p: p.stat().st_mtime for p in (tmp_path / "grid").rglob("history.csv")} == stamps
    with pytest.raises(Exception, match="already holds a search"):
        run_search(base, space, **kwargs)


def test_failed_trials_are_recorded_and_the_search_goes_on(ray_session, data_root, tmp_path):
    # A GAN checkpoint that does not exist fails each trial at its start, before any Train run.
    missing = [str(tmp_path / "no_gan_a"), str(tmp_path / "no_gan_b")]
    grid = run_search(
        tiny_search_config(data_root, tmp_path / "unused"),
        {"gan_checkpoint": tune.grid_search(missing)},
        searcher="grid",
        scheduler="none",
        storage_path=tmp_path,
        name="failing",
        verbose=0,
    )
    assert len(grid) == 2 and len(grid.errors) == 2
    assert all("model.json" in str(error) for error in grid.errors)
