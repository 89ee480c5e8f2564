"""What a study leaves behind: the winner as a model package under ``best/<task>/``, fold checkpoints
on this machine, and a copy of the results beside the searches on the study's storage."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from tumorbench import storage
from tumorbench.tasks import get_task

RESULT_FILES = (
    "leaderboard.csv",
    "folds.csv",
    "predictions.csv",
    "stats.csv",
    "trials.csv",
    "configs.json",
    "manifest.json",
    "report.html",
    "splits.json",
)


def package_best(winner: str, fold_records: dict[str, list], out: Path, task: str, metric: str) -> dict:
    """Copy the winner's best fold model to ``best/<task>/`` (weights + model.json) for Serve."""
    rank = get_task(task)
    chosen = min(fold_records[winner], key=lambda r: rank.sort_key(r.score, metric))
    target = out / "best" / task
    storage.download(chosen.checkpoint, target, skip=("training_state.pt",))
    return {
        "model": winner,
        "fold": chosen.fold,
        "epoch": chosen.best_epoch,
        f"inner_{metric}": chosen.score,
        f"outer_{metric}": chosen.outer.get(metric),
        "source": chosen.checkpoint,
        "package": str(target),
        "note": "the fold model with the best inner-validation score (not retrained on all folds); the "
        "study's estimate of it is the leaderboard's outer-fold row, not this fold's score",
    }


def package_final(winner: str, final: dict, lb: pd.DataFrame, out: Path, task: str, metric: str) -> dict:
    """The winner's final model (retrained on every training patient) as ``best/<task>/``; its metrics are the
    outer-CV estimate and the locked test score, each a pooled estimate with its CI."""
    target = out / "best" / task
    storage.download(final["checkpoints"][winner], target, skip=("training_state.pt",))  # replaces target

    def estimate(table: pd.DataFrame) -> dict[str, float]:
        row = table.set_index("model").loc[winner]
        return {
            metric: float(row[f"{metric}_pooled"]),
            "ci_low": float(row[f"{metric}_ci_low"]),
            "ci_high": float(row[f"{metric}_ci_high"]),
        }

    return {
        "model": winner,
        "package": str(target),
        "source": final["checkpoints"][winner],
        "cv_estimate": estimate(lb),
        "test": estimate(final["leaderboard"]),
        "note": "the winning configuration retrained on every training patient (its inner split chose the "
        "epoch); metrics: the outer-CV estimate and the locked test set, scored once",
    }


def local_records(records: list, folder: Path) -> list:
    """Fold records whose checkpoints are local folders (remote ones are downloaded under ``folder``)."""
    local = []
    for record in records:
        if storage.is_remote(record.checkpoint):
            target = folder / f"fold_{record.fold}"
            storage.download(record.checkpoint, target, skip=("training_state.pt",))
            record = replace(record, checkpoint=str(target))
        local.append(record)
    return local


def copy_results(out: Path, root: str) -> None:
    """The results (tables, report, figures, best package) beside the searches on storage, when that is elsewhere."""
    if not storage.is_remote(root) and Path(root).resolve() == out:
        return
    for name in RESULT_FILES:
        if (out / name).is_file():
            storage.upload(out / name, storage.join(root, name))
    for folder in ("best", "figures", "overlays"):
        if (out / folder).is_dir():
            storage.upload(out / folder, storage.join(root, folder))
