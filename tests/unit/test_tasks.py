"""The task registry: metric panels, directions honoured everywhere, refusals before any Ray work."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tumorbench.evaluation.leaderboard import leaderboard
from tumorbench.evaluation.paired import paired_statistics
from tumorbench.study.spec import Candidate, Study, StudyError
from tumorbench.tasks import Task, TaskError, get_task, list_tasks, register_task
from tumorbench.training.config import TrainConfig, TrainConfigError
from tumorbench.training.loop import LoopState


def test_registry_lists_tasks_and_refuses_unknown_names():
    assert list_tasks() == ["classification", "gan", "segmentation"]
    assert list_tasks(servable=True) == ["classification", "segmentation"]
    assert list_tasks(rankable=True) == ["classification", "segmentation"]
    with pytest.raises(TaskError, match=r"unknown task 'detection' \(choose from \['classification', 'gan'"):
        get_task("detection")
    assert get_task(get_task("gan")) is get_task("gan")


def test_directions_and_metric_checks():
    seg, cls = get_task("segmentation"), get_task("classification")
    assert [seg.mode(m) for m in ("dice", "hd95", "hd95_ET", "dice_WT", None)] == ["max", "min", "min", "max", "max"]
    assert cls.mode() == "max" and cls.primary == "auc" and seg.primary == "dice"
    with pytest.raises(TaskError, match="task 'segmentation' has no metric 'auc'"):
        seg.check_metric("auc")
    with pytest.raises(TaskError, match="has no metric 'dice_XX'"):
        seg.check_metric("dice_XX")  # not a BraTS region
    assert seg.better(3.0, 5.0, "hd95") and not seg.better(5.0, 3.0, "hd95") and seg.better(0.8, 0.7)
    assert not seg.better(float("nan"), 1.0, "hd95") and seg.better(9.0, float("nan"), "hd95")
    values = [4.0, float("nan"), 2.0, float("inf")]
    assert sorted(values, key=lambda v: seg.sort_key(v, "hd95"))[:3] == [2.0, 4.0, float("inf")]


def test_a_new_task_is_one_registered_class():
    @register_task
    class Detection(Task):
        name = "detection_test_only"
        metrics = ("froc", "distance")
        primary = "froc"
        lower_is_better = frozenset({"distance"})

    task = get_task("detection_test_only")
    assert task.mode("distance") == "min" and task.mode() == "max"
    with pytest.raises(TaskError, match="registered twice"):
        register_task(Detection)


def test_train_config_selects_epochs_by_the_tasks_direction(tmp_path):
    config = TrainConfig(task="segmentation", model="unet_tiny", data="d", out="o", metric="hd95")
    assert (config.selection_metric, config.selection_mode) == ("hd95", "min")
    assert TrainConfig(task="classification", model="resnet18_tiny", data="d", out="o").selection_metric == "auc"
    with pytest.raises(TrainConfigError, match="task 'classification' has no metric 'dice'"):
        TrainConfig(task="classification", model="resnet18_tiny", data="d", out="o", metric="dice")
    state = LoopState()
    assert [state.update(v, e, "min") for e, v in enumerate([9.0, 4.0, 6.0, 3.5])] == [True, True, False, True]
    assert (state.best, state.best_epoch) == (3.5, 3)


def test_study_refuses_a_metric_its_task_lacks_before_ray():
    candidates = (Candidate("unet", {"model": "unet_tiny"}),)
    with pytest.raises(StudyError, match="study s: task 'segmentation' has no metric 'auc'"):
        Study(name="s", task="segmentation", data=None, candidates=candidates, primary="auc")
    with pytest.raises(StudyError, match="gan study has no score"):
        Study(name="s", task="gan", data=None, candidates=(Candidate("g", {"model": "unet_tiny"}),))
    study = Study(name="s", task="segmentation", data=None, candidates=candidates, primary="hd95")
    assert (study.metric, study.mode) == ("hd95", "min")


def _hd95_predictions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for model, offset in (("near", 2.0), ("far", 9.0), ("mid", 5.0)):
        for p in range(12):
            rows.append(
                {
                    "model": model,
                    "kind": "dl" if model != "mid" else "baseline",
                    "fold": p % 3,
                    "case_id": f"p{p}",
                    "patient_id": f"p{p}",
                    "dice": 0.9 - offset / 20,
                    "hd95": offset + rng.normal(0, 0.5),
                }
            )
    return pd.DataFrame(rows)


def test_hd95_leaderboard_ranks_lowest_first_and_differences_favour_the_reference():
    pred = _hd95_predictions()
    lb = leaderboard(pred, task="segmentation", primary="hd95", n_boot=200)
    assert lb["model"].tolist() == ["near", "mid", "far"]
    stats = paired_statistics(pred, task="segmentation", primary="hd95")
    assert (stats["reference"] == "near").all()
    fold_t = stats[stats["test"] == "corrected_t"].set_index("model")
    means = pred.groupby(["model", "fold"])["hd95"].mean().groupby("model").mean()
    # The reference's advantage: model minus reference for a distance (positive favours the reference).
    assert fold_t.at["far", "difference"] == pytest.approx(means["far"] - means["near"])
    assert fold_t.at["far", "difference"] > 0 and fold_t.at["mid", "difference"] > 0


def test_task_registry_does_not_import_torch():
    code = "import sys, tumorbench.tasks; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_an_infinite_hd95_is_a_real_worst_score_and_nan_no_score():
    from tumorbench.training.validation import summarize_segmentation
    from tumorbench.tuning.search import best_row

    inf, nan = float("inf"), float("nan")
    rows = [{"status": "done", "mean": inf}, {"status": "done", "mean": 7.0}, {"status": "done", "mean": nan}]
    assert best_row(rows, "min")["mean"] == 7.0
    assert best_row(rows[:1], "min")["mean"] == inf  # every configuration missed a tumour: still a result
    state = LoopState()
    assert [state.update(v, e, "min") for e, v in enumerate([nan, inf, 5.0, inf])] == [False, True, True, False]
    records = [
        {"patient_id": "a", "dice": 0.5, "hd95": 4.0},
        {"patient_id": "b", "dice": 0.0, "hd95": inf},
        {"patient_id": "c", "dice": 1.0, "hd95": nan},
    ]
    summary = summarize_segmentation(records)
    assert summary["hd95"] == inf and summary["dice"] == pytest.approx(0.5)
    assert summarize_segmentation(records[::2])["hd95"] == 4.0  # NaN (both masks empty) is skipped, as in folds.csv
