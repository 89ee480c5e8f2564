"""Checkpoints that double as model packages: a package (:mod:`tumorbench.package`) + training state.

A checkpoint directory holds the package's ``model.pt`` and ``model.json``, and
``training_state.pt``: optimizer, scheduler, scaler and loop state (for resuming; Serve ignores it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tumorbench.errors import DataError
from tumorbench.package import ModelManifest
from tumorbench.package.weights import save_package

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
