"""Live progress lines of a search (Tune callback, driven here by hand: no Ray started) and the serve link."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

from tumorbench.study.publish import best_note, link_best
from tumorbench.tuning.progress import SearchProgress, format_duration, remaining_estimate


def test_durations_and_remaining_time():
    assert [format_duration(s) for s in (0, 59.6, 75, 3725)] == ["0s", "1m00s", "1m15s", "1h02m"]
    assert remaining_estimate(30.0, 0, 6) is None
    assert remaining_estimate(30.0, 2, 6) == 60.0  # 15 s per fold, 4 folds to go


def test_a_line_per_fold_with_score_mean_elapsed_and_time_left():
    lines, now = [], [0.0]
    progress = SearchProgress(
        "unet",
        "dice",
        n_folds=3,
        num_trials=2,
        keys=["lr"],
        clock=lambda: now[0],
        echo=lambda text, flush: lines.append(text),
    )
    trial = SimpleNamespace(trial_id="a", config={"lr": 0.003, "other": 1}, status="RUNNING")
    progress.on_trial_start(0, [trial], trial)
    now[0] = 40.0
    progress.on_trial_result(
        1, [trial], trial, {"folds_done": 1, "fold_0_dice": 0.5, "dice_mean": 0.5, "epochs_spent": 4}
    )
    now[0] = 80.0
    progress.on_trial_result(
        2, [trial], trial, {"folds_done": 2, "fold_1_dice": 0.7, "dice_mean": 0.6, "epochs_spent": 7}
    )
    assert lines == [
        "[search unet] trial 1/2 {lr=0.003} started; elapsed 0s",
        "[search unet] trial 1/2 {lr=0.003} fold 1/3: epochs 4, dice=0.5000 (mean 0.5000); elapsed 40s, ~3m20s left",
        "[search unet] trial 1/2 {lr=0.003} fold 2/3: epochs 3, dice=0.7000 (mean 0.6000); elapsed 1m20s, ~2m40s left",
    ]
    now[0] = 200.0
    progress.on_step_end(3, [trial])  # no fold for two minutes: a heartbeat
    assert lines[-1] == "[search unet] 1 trial(s) training, 2 of ~6 folds done; elapsed 3m20s, ~6m40s left"


def test_best_note_is_honest_when_a_baseline_leads():
    best = {"model": "unet"}
    assert "first place is kmeans" in best_note("kmeans", best)
    assert "first place" not in best_note("unet", best)


def test_link_best_points_runs_best_task_at_the_latest_package(tmp_path):
    first, second = tmp_path / "a" / "best" / "segmentation", tmp_path / "b" / "best" / "segmentation"
    first.mkdir(parents=True), second.mkdir(parents=True)
    root = tmp_path / "runs" / "best"
    assert link_best(first, "segmentation", root).resolve() == first.resolve()
    assert link_best(second, "segmentation", root).resolve() == second.resolve()
    (root / "classification").mkdir()  # a real folder someone put there is never replaced
    assert link_best(first, "classification", root) is None
    assert sorted(p.name for p in root.iterdir()) == ["classification", "segmentation"]


def test_tune_output_selects_the_silent_engine_only_at_verbose_0(monkeypatch):
    from ray.tune.experimental.output import AirVerbosity, get_air_verbosity

    from tumorbench.tuning.search import _tune_output

    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    with _tune_output(0):
        assert get_air_verbosity(0) is None  # the legacy engine: nothing at verbosity 0, no experiment box
    assert get_air_verbosity(0) == AirVerbosity.SILENT and "RAY_AIR_NEW_OUTPUT" not in os.environ
    with _tune_output(1):
        assert get_air_verbosity(1) == AirVerbosity.DEFAULT
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")
    with _tune_output(0):
        assert get_air_verbosity(0) is None
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"


def test_tune_output_drops_tensorboardx_nan_warnings_at_every_verbosity(caplog):
    import numpy as np
    from tensorboardX.x2num import make_np

    from tumorbench.tuning.search import _tune_output

    for verbose in (0, 1):
        caplog.clear()
        with caplog.at_level(logging.WARNING), _tune_output(verbose):
            make_np(np.array([float("nan")]))  # what Tune's TBX logger does with a one-fold SD
        assert "NaN or Inf" not in caplog.text
    with caplog.at_level(logging.WARNING):  # outside a search the warning is tensorboardX's business again
        make_np(np.array([float("inf")]))
    assert "NaN or Inf found in input tensor." in caplog.text


def test_tune_output_drops_only_the_fetch_warning_of_trials_that_never_reported(caplog):
    """Tune's own end-of-search code (``ExperimentAnalysis._fetch_trial_dataframes``): trials without any result
    file (stopped before their first report) are not warned about; a trial whose results cannot be read is."""
    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis

    from tumorbench.tuning.search import _tune_output

    class Analysis(ExperimentAnalysis):
        def __init__(self, trials):  # no experiment folder: only the fetch loop is exercised
            self.trials = trials

        def _fetch_trial_dataframe(self, trial):
            if trial.trial_id == "unreadable":
                raise ValueError("progress.csv: Expected 3 fields in line 4, saw 5")
            raise FileNotFoundError(  # Tune's own message for a trial folder without result files
                f"Could not fetch metrics for {trial.trial_id}: both result.json and progress.csv were not found at /x"
            )

    cut = [SimpleNamespace(trial_id=f"t{i}") for i in range(2)]
    for verbose in (0, 1):
        caplog.clear()
        with caplog.at_level(logging.WARNING), _tune_output(verbose):
            Analysis(cut)._fetch_trial_dataframes()
        assert "Failed to fetch metrics" not in caplog.text
        with caplog.at_level(logging.WARNING), _tune_output(verbose):
            Analysis([*cut, SimpleNamespace(trial_id="unreadable")])._fetch_trial_dataframes()
        assert "Failed to fetch metrics for 3 trial(s)" in caplog.text and "Expected 3 fields" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # outside a search Tune warns as it does
        Analysis(cut)._fetch_trial_dataframes()
    assert "Failed to fetch metrics for 2 trial(s)" in caplog.text


def test_tune_output_keeps_optunas_study_lines_out_of_a_search():
    """Records, not a stream: Optuna's own handler writes to the stderr of its first import."""
    import optuna

    from tumorbench.tuning.search import _tune_output

    class Records(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    logger, records, before = logging.getLogger("optuna"), Records(), optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)  # Optuna's default, whatever ran before
    logger.addHandler(records)
    try:
        with _tune_output(1):
            optuna.create_study()  # what OptunaSearch does as a Bayesian search starts
        assert not any("A new study created" in m for m in records.messages)
        assert logger.level == optuna.logging.INFO
        optuna.create_study()
        assert any("A new study created" in m for m in records.messages)  # outside a search: Optuna's default
    finally:
        logger.removeHandler(records)
        optuna.logging.set_verbosity(before)
