"""One Tune trial: a configuration scored by k-fold cross-validation, one Ray Train run per fold.

The folds run in turn inside the trial (a Ray Train run costs ~20 s of start-up
on 2 cores whatever its work, so one trial per fold would pay it k times for
the same configuration and keep a searcher from seeing the configuration as
one point). After each fold the trial reports the running mean and SD of the
fold scores, so ASHA (time attribute ``folds_done``) can stop a poor
configuration after its first fold, and checkpoints the out-of-fold
predictions so far, so a resumed trial continues at its next fold.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tumorbench import storage
from tumorbench.training.config import TrainConfig, TrainConfigError
from tumorbench.tuning.space import apply_params, decode_params

FOLDS_FILE = "folds.json"
OOF_FILE = "oof_predictions.json"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a search shares (sent once through ``tune.with_parameters``).

    Args:
        base: ``TrainConfig.to_dict()`` of the study's base config, ``split_file`` set.
        n_folds: Folds each trial trains (the first ``n_folds`` of the split file).
        metric: Per-fold metric (a key of the validation metrics, e.g. ``auc``, ``dice``).
        mode: ``max`` or ``min``.
        worker_resources: Ray resources of each Train worker (what one trial may use).
        experiment: The experiment's working folder on the trial's node (fold histories, TensorBoard).
        choices: Decode table of labelled categorical values (``space.searcher_space``).
        storage: The experiment on storage (``storage_path/name``), where checkpoints go and fold
            records are copied; default ``experiment``.
        split: The split file's text, written on nodes that do not have it.
    """

    base: dict[str, Any]
    n_folds: int
    metric: str
    mode: str
    worker_resources: dict[str, float]
    experiment: str
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)
    storage: str | None = None
    split: str | None = None


def trial_dirname(trial) -> str:
    """Tune's folder name for a trial (short, since fold folders nest below it)."""
    return trial_dirname_for(trial.trial_id)


def trial_dirname_for(trial_id: str) -> str:
    return f"trial_{trial_id}"


@dataclass
class FoldRecord:
    """The outcome of one fold: its best epoch's score and where that checkpoint lies (a path or URI).

    Under nested selection ``score`` and ``best_epoch`` come from the inner validation patients
    (what ranks configurations, drives ASHA and picks the package), and ``outer`` holds the fold's
    own metrics, scored once by the chosen model (what the leaderboard reports).
    ``seconds`` is the fold's Ray Train run end to end; ``overhead_seconds`` what of it
    was not training or validating (actor start-up, checkpointing, shutdown).
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
        tune_metric(metric): float(np.mean(scores)),
        f"{metric}_sd": float(np.std(scores, ddof=1)) if len(scores) > 1 else float("nan"),
        "epochs_spent": int(sum(f.epochs for f in folds)),
    }
    return report | {f"fold_{f.fold}_{metric}": f.score for f in folds}


def best_checkpoint(result, metric: str, mode: str) -> tuple[str, dict[str, Any]]:
    """The kept checkpoint of a Train run that scores best on ``metric``, by Ray's ``Result.get_best_checkpoint``
    (ties: the first; inf is a real, worst distance), as a path or URI (``tumorbench.storage``).

    Ray ranks a NaN like a number (a NaN listed first would win), so NaN scores are set aside first; a run
    with no score but NaN gives its first kept checkpoint.
    """
    kept = result.best_checkpoints or []
    if not kept:
        raise TrainConfigError(f"training in {result.path} kept no checkpoint to score")
    scored = [(c, m) for c, m in kept if not math.isnan(float(m.get(metric, math.nan)))]
    if not scored:
        return storage.uri_of(kept[0][0].filesystem, kept[0][0].path), kept[0][1]
    best = replace(result, best_checkpoints=scored).get_best_checkpoint(metric, mode)
    return storage.uri_of(best.filesystem, best.path), next(m for c, m in scored if c.path == best.path)


def run_fold(config: TrainConfig, setup: TrialSetup) -> tuple[FoldRecord, list[dict]]:
    """Train one fold through Ray Train; its best epoch's score and out-of-fold predictions."""
    from tumorbench.training.trainer import fit, has_snapshot, read_history, run_storage

    # A fold cut short by a crash (or a lost node) continues from its own Train snapshot.
    resume = has_snapshot(config)
    started = time.perf_counter()
    result = fit(config, resume=resume, resources=setup.worker_resources, verbose=False)
    seconds = time.perf_counter() - started
    work = sum(
        float(row.get("train_seconds") or 0) + float(row.get("val_seconds") or 0) for row in read_history(config.out)
    )
    path, metrics = best_checkpoint(result, setup.metric, setup.mode)
    outer, records = fold_predictions(config, run_storage(config), path)
    for record in records:
        record["fold"] = config.fold
    record = FoldRecord(
        fold=config.fold,
        score=float(metrics.get(setup.metric, float("nan"))),
        best_epoch=int(metrics.get("epoch", -1)),
        epochs=int(result.metrics["epoch"]) + 1,
        checkpoint=path,
        metrics=_numbers(metrics),
        seconds=seconds,
        overhead_seconds=max(0.0, seconds - work) if not resume else float("nan"),
        outer=_numbers(outer or {}),
    )
    return record, records


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def fold_predictions(config: TrainConfig, run_storage: str, checkpoint: str) -> tuple[dict | None, list[dict]]:
    """What a finished fold reports: under nested selection its outer metrics and predictions, read from
    the fold's storage (rank 0 may have run on another node); otherwise the chosen checkpoint's own
    validation predictions (the fold validated itself) and no outer metrics.

    Raises:
        TrainConfigError: Nested selection, but the run left no outer predictions.
    """
    from tumorbench.training.nested import outer_location, read_outer, uses_nested

    if not uses_nested(config):
        return None, json.loads(storage.read_text(storage.join(checkpoint, "val_predictions.json")))
    outer, records = read_outer(run_storage)
    if records is None:
        raise TrainConfigError(
            f"fold {config.fold}: training finished without the outer fold's predictions at "
            f"{outer_location(run_storage)}"
        )
    return outer, records


def write_state(directory: str | Path, folds: list[FoldRecord], oof: list[dict]) -> None:
    """The trial checkpoint: per-fold outcomes (best checkpoint paths included) and out-of-fold predictions."""
    directory = Path(directory)
    (directory / FOLDS_FILE).write_text(json.dumps([asdict(f) for f in folds], indent=1, default=float))
    (directory / OOF_FILE).write_text(json.dumps(oof, default=float))


def read_state(location: str | Path) -> tuple[list[FoldRecord], list[dict]]:
    """Folds done and out-of-fold predictions from a trial checkpoint folder (a path or URI)."""
    folds = [FoldRecord(**f) for f in json.loads(storage.read_text(storage.join(location, FOLDS_FILE)))]
    return folds, json.loads(storage.read_text(storage.join(location, OOF_FILE)))


def crossval_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """Tune trial function: train fold after fold, reporting the running mean after each."""
    from ray import tune

    config = apply_params(TrainConfig.from_dict(setup.base), decode_params(params, setup.choices))
    # Not get_trial_dir(): that is a staging folder on the driver that Tune copies to storage at
    # every sync. Folds checkpoint to storage directly (other nodes' workers reach it, and a retried
    # trial on another node resumes from it); their histories start in a folder on this node.
    trial = trial_dirname_for(tune.get_context().get_trial_id())
    trial_dir = Path(setup.experiment) / trial
    trial_storage = storage.join(setup.storage or setup.experiment, trial)
    folds: list[FoldRecord] = []
    oof: list[dict] = []
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as directory:
            folds, oof = read_state(directory)
    from tumorbench.training.data import materialize_split

    materialize_split(config, setup.split)  # this node may not see the driver's disk
    for fold in range(len(folds), setup.n_folds):
        name = f"fold_{fold}"
        fold_config = config.replace(fold=fold, out=str(trial_dir / name), storage=storage.join(trial_storage, name))
        record, records = run_fold(fold_config, setup)
        # The fold's history and TensorBoard events join its checkpoints (a no-op when storage is this folder).
        storage.upload(fold_config.out, fold_config.storage)
        folds.append(record)
        oof.extend(records)
        with tempfile.TemporaryDirectory() as directory:
            write_state(directory, folds, oof)
            tune.report(summary_metrics(folds, setup.metric), checkpoint=tune.Checkpoint.from_directory(directory))
