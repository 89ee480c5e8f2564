"""One Tune trial: a configuration scored by k-fold cross-validation, in one Ray Train run.

The folds run in turn inside the trial's single Train run (``training.crossval``): a Ray Train
run costs ~20-30 s of start-up on 2 cores whatever its work, so a run per fold paid it k times,
and one trial per fold would keep a searcher from seeing the configuration as one point. Every
epoch reaches Tune (``TuneReportCallback``) with the running mean of the fold scores, so ASHA
(time attribute ``epochs_spent``) can stop a poor configuration within its first fold. Each
finished fold is recorded on its storage, so a retried trial's run resumes at the fold it was
training. At the end the trial reports the fold scores with a checkpoint holding every fold's
outcome and the out-of-fold predictions (``folds.json``, ``oof_predictions.json``).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tumorbench import storage
from tumorbench.training.config import TrainConfig, TrainConfigError
from tumorbench.training.crossval import FoldRecord, read_fold_result, summary_metrics, tune_metric
from tumorbench.tuning.space import apply_params, decode_params

# FoldRecord, summary_metrics and tune_metric live with the worker side (training.crossval); kept importable here.
__all__ = ["FoldRecord", "TrialSetup", "crossval_trial", "read_state", "summary_metrics", "tune_metric"]

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
    """Tune trial function: one Train run trains the folds in turn; then the trial's outcome, reported once."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from tumorbench.training.data import materialize_split
    from tumorbench.training.trainer import fit, has_snapshot

    config = apply_params(TrainConfig.from_dict(setup.base), decode_params(params, setup.choices))
    # Not get_trial_dir(): that is a staging folder on the driver that Tune copies to storage at
    # every sync. The run checkpoints to storage directly (other nodes' workers reach it, and a retried
    # trial on another node resumes from it); fold histories start in a folder on this node.
    trial = trial_dirname_for(tune.get_context().get_trial_id())
    trial_dir = Path(setup.experiment) / trial
    run = config.replace(out=str(trial_dir), storage=storage.join(setup.storage or setup.experiment, trial))
    folds = [
        {"fold": k, "out": str(trial_dir / f"fold_{k}"), "storage": storage.join(run.storage, f"fold_{k}")}
        for k in range(setup.n_folds)
    ]
    materialize_split(config, setup.split)  # this node may not see the driver's disk
    resume = has_snapshot(run)
    started = time.perf_counter()
    fit(
        run,
        resume=resume,
        resources=setup.worker_resources,
        verbose=False,
        callbacks=[TuneReportCallback()],
        folds=folds,
        model_checked=True,  # by the study (search.prepare_base); a trial's parameters cannot change the model
    )
    records, oof = collect_folds(run, folds)
    if not resume:  # the run's start-up and shutdown: what no fold measured
        records[0].overhead_seconds += max(0.0, time.perf_counter() - started - sum(r.seconds for r in records))
    with tempfile.TemporaryDirectory() as directory:
        write_state(directory, records, oof)
        tune.report(summary_metrics(records, setup.metric), checkpoint=tune.Checkpoint.from_directory(directory))


def collect_folds(run: TrainConfig, folds: list[dict[str, Any]]) -> tuple[list[FoldRecord], list[dict]]:
    """Every fold's record and out-of-fold predictions, from the fold storage the run wrote; the folds'
    histories and TensorBoard events (``out``, when given) join them there (a no-op when storage is the
    local folder)."""
    records, oof = [], []
    for spec in folds:
        record = read_fold_result(spec["storage"])
        if record is None:
            raise TrainConfigError(
                f"fold {spec['fold']}: the trial's run ended without its result at {spec['storage']}"
            )
        _, predictions = fold_predictions(run.replace(**spec), spec["storage"], record.checkpoint)
        records.append(record)
        oof.extend(p | {"fold": record.fold} for p in predictions)
        if spec.get("out") and Path(spec["out"]).exists():
            storage.upload(spec["out"], spec["storage"])
    return records, oof


CLOSING_STATE = "closing_state"


def recover_state(trial_path: str, n_folds: int) -> str | None:
    """A trial cut after its last fold but before its closing report (a hard deadline): its ``folds.json`` and
    out-of-fold predictions rebuilt from what its folds left on storage, at ``<trial>/closing_state``; None
    when a fold is missing (the trial did not finish) or the run's config is not beside it."""
    config_file = storage.join(trial_path, "config.json")
    folds = [{"fold": k, "storage": storage.join(trial_path, f"fold_{k}")} for k in range(n_folds)]
    if not storage.exists(config_file) or any(read_fold_result(f["storage"]) is None for f in folds):
        return None
    records, oof = collect_folds(TrainConfig.from_dict(json.loads(storage.read_text(config_file))), folds)
    location = storage.join(trial_path, CLOSING_STATE)
    with tempfile.TemporaryDirectory() as directory:
        write_state(directory, records, oof)
        storage.upload(directory, location)
    return location
