"""A package's weights (``model.pt``): writing them with the manifest, and rebuilding the model (imports torch)."""

from __future__ import annotations

from pathlib import Path

import torch

from tumorbench.package.manifest import WEIGHTS, ModelManifest, PackageError, read_manifest, write_manifest


def save_package(directory: str | Path, model: torch.nn.Module, manifest: ModelManifest) -> Path:
    """Write ``model.pt`` (the ``state_dict``; a DDP wrapper is looked through) and ``model.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(getattr(model, "module", model).state_dict(), directory / WEIGHTS)
    write_manifest(directory, manifest)
    return directory


def load_weights(directory: str | Path, model: torch.nn.Module, device: str | torch.device = "cpu") -> None:
    """Load a package's ``model.pt`` (``weights_only=True``) into ``model`` (its DDP wrapper is looked through)."""
    path = Path(directory) / WEIGHTS
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        getattr(model, "module", model).load_state_dict(state)
    except (OSError, RuntimeError, ValueError) as exc:
        raise PackageError(path, f"cannot load weights: {exc}") from exc


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelManifest]:
    """Rebuild a packaged model in eval mode from its validated manifest and weights."""
    from tumorbench.models import create_model

    manifest = read_manifest(directory)
    model = create_model(manifest.name, **manifest.model_kwargs)
    load_weights(directory, model, device)
    return model.to(device).eval(), manifest
