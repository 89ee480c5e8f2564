"""Checkpoints that double as model packages: weights + ``model.json`` (+ training state).

A checkpoint directory holds:

- ``model.pt``: the model's ``state_dict`` (loadable with ``torch.load(weights_only=True)``);
- ``model.json``: the manifest: model name and keywords, task, preprocessing, class
  names, input spec, data and split hashes, metrics, package versions;
- ``training_state.pt``: optimizer, scheduler, scaler and loop state (for resuming; Serve ignores it).
"""

from __future__ import annotations

import json
import platform as std_platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from tumorbench.errors import DataError

MANIFEST = "model.json"
WEIGHTS = "model.pt"
TRAINING_STATE = "training_state.pt"
MANIFEST_FORMAT = "tumorbench-model/1"
_VERSIONED = ("tumorbench", "torch", "monai", "timm", "ray", "numpy", "scikit-learn")


def package_versions() -> dict[str, str]:
    """Versions of the packages a model package depends on."""
    versions = {"python": std_platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class ModelManifest:
    """What a model package says about itself (``model.json``)."""

    name: str
    task: str
    model_kwargs: dict[str, Any]
    spatial_dims: int
    data_dims: int
    in_channels: int
    out_channels: int
    preprocess: dict[str, Any]
    class_names: list[str] | None = None
    positive_class: str | None = None
    channel_names: list[str] | None = None
    roi_size: list[int] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    epoch: int = -1
    versions: dict[str, str] = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    format: str = MANIFEST_FORMAT

    def __post_init__(self) -> None:
        if self.format != MANIFEST_FORMAT:
            raise ValueError(f"unsupported model package format {self.format!r} (expected {MANIFEST_FORMAT})")
        if self.task not in ("classification", "segmentation", "gan"):
            raise ValueError(f"unknown task {self.task!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, default=float)


def save_checkpoint(directory: str | Path, model: torch.nn.Module, manifest: ModelManifest,
                    training_state: dict[str, Any] | None = None) -> Path:
    """Write weights, manifest and (optionally) training state into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(getattr(model, "module", model).state_dict(), directory / WEIGHTS)
    (directory / MANIFEST).write_text(manifest.to_json())
    if training_state is not None:
        torch.save(training_state, directory / TRAINING_STATE)
    return directory


def read_manifest(directory: str | Path) -> ModelManifest:
    """Read and validate ``model.json``.

    Raises:
        DataError: Missing, unreadable or invalid manifest.
    """
    path = Path(directory) / MANIFEST
    try:
        return ModelManifest(**json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise DataError(path, "not a tumorbench model package (no model.json)") from exc
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise DataError(path, f"invalid model manifest: {exc}") from exc


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelManifest]:
    """Rebuild a packaged model in eval mode (weights read with ``weights_only=True``)."""
    from tumorbench.models import create_model

    manifest = read_manifest(directory)
    model = create_model(manifest.name, **manifest.model_kwargs)
    load_weights(directory, model, device)
    return model.to(device).eval(), manifest


def load_weights(directory: str | Path, model: torch.nn.Module, device: str | torch.device = "cpu") -> None:
    """Load a package's ``model.pt`` into ``model`` (its DDP wrapper, if any, is looked through)."""
    path = Path(directory) / WEIGHTS
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        getattr(model, "module", model).load_state_dict(state)
    except (OSError, RuntimeError, ValueError) as exc:
        raise DataError(path, f"cannot load weights: {exc}") from exc


def load_training_state(directory: str | Path) -> dict[str, Any]:
    """The optimizer/scheduler/loop state saved beside the weights."""
    path = Path(directory) / TRAINING_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise DataError(path, f"cannot read training state: {exc}") from exc
