"""A Tune trial's folds in one Ray Train run: the worker side.

A Ray Train run costs ~20-30 s of start-up on 2 cores (controller and worker actors, process group,
imports) whatever its work; a trial that started one per fold paid it k times (41% of the yes/no
default study's time went to what was not training or validating). Here the workers train the
trial's folds in turn inside one run, so it is paid once per trial.

Per fold, on the fold's storage (``<trial storage>/fold_<k>``, reachable from every node):

- ``best/``: the package of the epoch its validation chose, with that epoch's ``val_predictions.json``
  (what :class:`FoldRecord`'s ``checkpoint`` names, and what a study packages);
- ``outer/``: under nested selection, the outer fold scored once (``training.nested``);
- ``fold_result.json``: the fold's :class:`FoldRecord`, written when it is done; a resumed run skips it.

Every epoch is reported with the running cross-validation summary (a Tune trial forwards it with
``TuneReportCallback``, so ASHA can stop a configuration mid-fold) and, as Train's checkpoint, the
resume state of the fold in training (the latest only: the best per fold is ``best/``).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tumorbench import storage
from tumorbench.package.weights import save_package
from tumorbench.training.checkpoint import fold_checkpoint_name, resume_latest, write_checkpoint
from tumorbench.training.config import TrainConfig
from tumorbench.training.state import LoopState

FOLD_RESULT = "fold_result.json"
BEST_DIR = "best"


@dataclass
class FoldRecord:
    """The outcome of one fold: its best epoch's score and where that checkpoint lies (a path or URI).

    Under nested selection ``score`` and ``best_epoch`` come from the inner validation patients
    (what ranks configurations, drives ASHA and picks the package), and ``outer`` holds the fold's
    own metrics, scored once by the chosen model (what the leaderboard reports).
    ``seconds`` is the fold's time in its Train run; ``overhead_seconds`` what of it was not training
    or validating (data and model set-up, checkpointing, outer scoring; fold 0 also carries the run's
    start-up and shutdown).
    """

    fold: int
    score: float
    best_epoch: int
    epochs: int
    checkpoint: str
    metrics: dict[str, float]
    seconds: float = 0.0
    overhead_seconds: float = 0.0
    outer: dict[str, float] = field(default_factory=dict)


def tune_metric(metric: str) -> str:
    """The name searchers and schedulers rank trials by."""
    return f"{metric}_mean"


def summary_metrics(folds: list[FoldRecord], metric: str) -> dict[str, Any]:
    """What a trial reports after a fold: running mean and SD (ddof=1; NaN for one fold) and each fold."""
    scores = np.asarray([f.score for f in folds], float)
    report = {
        "folds_done": len(folds),
        tune_metric(metric): float(np.mean(scores)) if len(scores) else float("nan"),
        f"{metric}_sd": float(np.std(scores, ddof=1)) if len(scores) > 1 else float("nan"),
        "epochs_spent": int(sum(f.epochs for f in folds)),
    }
    return report | {f"fold_{f.fold}_{metric}": f.score for f in folds}


def epoch_metrics(done: list[FoldRecord], metric: str, current_best: float | None, epochs: int) -> dict[str, Any]:
    """What a trial reports after an epoch of its next fold: the summary of the folds done, with the running
    mean taken over them and the fold in training's best score so far, and the epochs spent in all.

    Every trial trains its folds in the same order and reports at the same epoch counts, so ASHA
    compares configurations on the same folds at each rung.
    """
    report = summary_metrics(done, metric)
    running = [f.score for f in done] + ([current_best] if current_best is not None else [])
    report[tune_metric(metric)] = float(np.mean(running)) if running else float("nan")
    return report | {"epochs_spent": int(sum(f.epochs for f in done)) + epochs}


def read_fold_result(location: str) -> FoldRecord | None:
    """The :class:`FoldRecord` of a finished fold at its storage ``location``, or None."""
    path = storage.join(location, FOLD_RESULT)
    return FoldRecord(**json.loads(storage.read_text(path))) if storage.exists(path) else None


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class FoldReporter:
    """One fold's epochs inside a trial's run: reports them, keeps the best package (rank 0), records the fold.

    Passed to ``loop.train_one`` as its ``reporter`` and ``resume``.
    """

    def __init__(self, config: TrainConfig, done: list[FoldRecord], rank: int) -> None:
        self.config, self.done, self.rank = config, done, rank
        self.location = config.storage or config.out
        self.best_dir = storage.join(self.location, BEST_DIR)
        self.has_best = storage.exists(storage.join(self.best_dir, "model.json"))
        self.started = time.perf_counter()
        self.work = 0.0
        self.state = LoopState()

    def resume(self, model, optimizer, scheduler, precision) -> LoopState:
        self.state = resume_latest(model, optimizer, scheduler, precision, fold=self.config.fold)
        return self.state

    def __call__(self, rank, metrics, model, optimizer, scheduler, precision, state, manifest, records) -> None:
        import ray.train

        self.state = state
        self.work += float(metrics.get("train_seconds", 0)) + float(metrics.get("val_seconds", 0))
        metric = self.config.selection_metric
        report = metrics | epoch_metrics(self.done, metric, state.best, state.epoch + 1) | {"fold": self.config.fold}
        if rank != 0:
            ray.train.report(report)
            return
        if metrics.get("improved") or not self.has_best:  # the first epoch stands in until one scores
            with tempfile.TemporaryDirectory() as directory:
                save_package(directory, getattr(model, "module", model), manifest)
                with open(f"{directory}/val_predictions.json", "w") as handle:
                    json.dump(records, handle, default=float)
                storage.upload(directory, self.best_dir)
            self.has_best = True
        with tempfile.TemporaryDirectory() as directory:
            write_checkpoint(
                directory, model, manifest, optimizer, scheduler, precision, state, records, fold=self.config.fold
            )
            ray.train.report(
                report,
                checkpoint=ray.train.Checkpoint.from_directory(directory),
                checkpoint_dir_name=fold_checkpoint_name(self.config.fold, int(metrics["epoch"])),
            )

    def finish(self, outer: tuple[dict, list[dict]] | None) -> FoldRecord:
        """The fold's record (rank 0 writes it to the fold's storage), and the fold-end report every rank makes."""
        import ray.train

        state = self.state
        rows = [row for row in state.history if int(row.get("epoch", -2)) == state.best_epoch] or state.history[:1]
        seconds = time.perf_counter() - self.started
        record = FoldRecord(
            fold=self.config.fold,
            score=float("nan") if state.best is None else float(state.best),
            best_epoch=int(state.best_epoch),
            epochs=int(state.epoch) + 1,
            checkpoint=self.best_dir,
            metrics=_numbers(rows[0] if rows else {}),
            seconds=seconds,
            overhead_seconds=max(0.0, seconds - self.work),
            outer=_numbers(outer[0] if outer else {}),
        )
        if self.rank == 0:
            storage.write_text(storage.join(self.location, FOLD_RESULT), json.dumps(asdict(record), default=float))
        done = [*self.done, record]
        ray.train.report(summary_metrics(done, self.config.selection_metric) | {"fold": record.fold, "fold_end": True})
        return record
