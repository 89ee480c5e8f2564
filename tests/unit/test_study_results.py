"""The study's per-search summary: best trial and the trials table."""

from __future__ import annotations

import json
import math

import pytest

from tumorbench.study.results import best_trial, trials_frame


def _row(trial: str, status: str, mean: float, params: dict, epochs: int) -> dict:
    return {
        "trial": trial,
        "status": status,
        "params": params,
        "folds_done": 3 if status == "done" else 1,
        "mean": mean,
        "sd": 0.01,
        "folds": [],
        "epochs_spent": epochs,
        "path": "",
        "checkpoint": None,
        "error": "boom" if status == "error" else None,
    }


ROWS = [  # as trial_rows returns them: proposal order; Optuna's trial names are random hashes
    _row("trial_d027d0aa", "done", 0.74, {"lr": 0.001}, 12),
    _row("trial_1d05d620", "stopped", 0.95, {"lr": 0.003}, 4),  # a partial mean never wins
    _row("trial_0a9e1b2c", "done", 0.81, {"lr": 0.01, "__choice": 1}, 12),
    _row("trial_f00dcafe", "error", math.nan, {"lr": 0.1}, 0),
]


def test_best_trial_needs_every_fold():
    assert best_trial(ROWS, "max", 3)["trial"] == "trial_0a9e1b2c"
    assert best_trial(ROWS, "min", 3)["trial"] == "trial_d027d0aa"
    with pytest.raises(RuntimeError, match="no trial completed all 3 folds.*boom"):
        best_trial([r for r in ROWS if r["status"] != "done"], "max", 3)


def test_trials_frame_in_proposal_order():
    table = trials_frame(ROWS, "resnet18", "bayes", "auc")
    assert table["number"].tolist() == [1, 2, 3, 4]
    assert table["trial"].tolist() == [r["trial"] for r in ROWS]
    assert table["status"].tolist() == ["done", "stopped", "done", "error"]
    assert json.loads(table.loc[2, "params"]) == {"lr": 0.01}  # searcher bookkeeping keys dropped
    assert table["epochs_spent"].sum() == 28
    assert {"model", "searcher", "auc_mean", "auc_sd", "folds_done", "error"} <= set(table.columns)


def test_code_version_is_this_checkout():
    import subprocess
    from pathlib import Path

    from tumorbench.study.manifest import code_version

    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
    ).stdout
    assert code_version() == {"git_commit": head, "git_dirty": bool(status.strip())}


def test_trial_rows_in_start_order():
    """A restored ResultGrid lists trials in another order; rows follow each trial's first report."""
    from types import SimpleNamespace

    import pandas as pd
    from pyarrow.fs import LocalFileSystem

    from tumorbench.tuning.search import trial_rows

    def result(name: str, first: float | None, folds: int, error: Exception | None = None):
        history = None if first is None else pd.DataFrame({"timestamp": [first, first + 60]})
        metrics = {"folds_done": folds, "auc_mean": 0.8, "epochs_spent": 4 * folds} if first is not None else {}
        return SimpleNamespace(
            path=f"/x/{name}",
            metrics=metrics,
            error=error,
            config={"lr": 0.1},
            # a finished trial's closing report carries its checkpoint (folds.json, out-of-fold predictions)
            checkpoint=SimpleNamespace(filesystem=LocalFileSystem(), path=f"/x/{name}/ck") if folds == 3 else None,
            metrics_dataframe=history,
        )

    grid = [
        result("trial_b", 200.0, 3),
        result("trial_err", None, 0, RuntimeError("x")),
        result("trial_a", 100.0, 1),
        result("trial_c", 300.0, 3),
    ]
    rows = trial_rows(grid, "auc", 3)
    assert [r["trial"] for r in rows] == ["trial_a", "trial_b", "trial_c", "trial_err"]
    assert [r["status"] for r in rows] == ["stopped", "done", "done", "error"]
    assert [r["epochs_spent"] for r in rows] == [4, 12, 12, 0]
    assert rows[1]["checkpoint"] == "/x/trial_b/ck"
    # every fold reported, but cut before the closing report, with no fold results to rebuild it from: not done
    cut = result("trial_d", 400.0, 3)
    cut.checkpoint = None
    [row] = trial_rows([cut], "auc", 3)
    assert row["status"] == "stopped" and row["checkpoint"] is None
