"""Checkpoints that double as model packages: a package (:mod:`tumorbench.package`) + training state.

A checkpoint directory holds the package's ``model.pt`` and ``model.json``, and
``training_state.pt``: optimizer, scheduler, scaler and loop state (for resuming; Serve ignores it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from tumorbench.errors import DataError
from tumorbench.package import ModelManifest
from tumorbench.package.weights import load_weights, save_package
from tumorbench.training.state import LoopState

TRAINING_STATE = "training_state.pt"


def save_checkpoint(
    directory: str | Path, model: torch.nn.Module, manifest: ModelManifest, training_state: dict[str, Any] | None = None
) -> Path:
    """Write the package (weights + manifest) and, optionally, the training state into ``directory``."""
    directory = save_package(directory, model, manifest)
    if training_state is not None:
        torch.save(training_state, directory / TRAINING_STATE)
    return directory


def load_training_state(directory: str | Path) -> dict[str, Any]:
    """The optimizer/scheduler/loop state saved beside the weights."""
    path = Path(directory) / TRAINING_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise DataError(path, f"cannot read training state: {exc}") from exc


_FOLD_CHECKPOINT = re.compile(r"fold_(\d+)_epoch_\d+")


def fold_checkpoint_name(fold: int, epoch: int) -> str:
    """The folder name of a cross-validation trial's checkpoint: its fold is read back from it."""
    return f"fold_{fold}_epoch_{epoch:04d}"


def resume_latest(model, optimizer, scheduler, precision, *, fold: int | None = None) -> LoopState:
    """Restore everything from Ray's latest checkpoint of this run, if there is one (and, with ``fold``,
    if it is that fold's: a trial's run checkpoints each fold in turn)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return LoopState()
    named = _FOLD_CHECKPOINT.fullmatch(Path(checkpoint.path).name)
    if fold is not None and named and int(named.group(1)) != fold:
        # Another fold's (at a fold's start, the last fold's end): not read, as Train may have deleted it
        # already (it keeps one), and a rank's view of the latest checkpoint can lag a report behind.
        return LoopState()
    with checkpoint.as_directory() as directory:
        saved = load_training_state(directory)
        if fold is not None and saved.get("fold") != fold:
            return LoopState()
        load_weights(directory, model)
    # A restarted worker (a lost node, a crash) says where it continues from; the log is the operator's record.
    print(f"[tumorbench] resumed from checkpoint {checkpoint.path} (epoch {saved['loop']['epoch']})", flush=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if precision.scaler is not None and saved.get("scaler"):
        precision.scaler.load_state_dict(saved["scaler"])
    return LoopState(**saved["loop"])


def write_checkpoint(directory, model, manifest, optimizer, scheduler, precision, state, records, **extra) -> None:
    """A checkpoint folder: the package, the training state (``extra`` joins it) and the validation predictions."""
    save_checkpoint(
        directory,
        model,
        manifest,
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": precision.scaler.state_dict() if precision.scaler else None,
            "loop": vars(state),
            **extra,
        },
    )
    with open(f"{directory}/val_predictions.json", "w") as handle:
        json.dump(records, handle, default=float)
