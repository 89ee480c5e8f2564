"""Untrained tiny model packages (weights + ``model.json``) for inference and Serve tests.

``tests/`` is on ``sys.path`` through its ``conftest.py``, so test modules import this
as ``model_packages``. No training: a seeded ``*_tiny`` model saved with
``save_package``; the last layer's bias is shifted so masks hold both classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tumorbench.models import create_model
from tumorbench.package import ModelManifest
from tumorbench.package.weights import save_package

SEG2D = dict(
    name="unet_tiny",
    task="segmentation",
    spatial_dims=2,
    data_dims=2,
    in_channels=3,
    out_channels=1,
    preprocess={"spatial_size": [64, 64], "normalize": "zscore"},
    data={"layout": "lgg"},
)
CLS2D = dict(
    name="resnet18_tiny",
    task="classification",
    spatial_dims=2,
    data_dims=2,
    in_channels=3,
    out_channels=2,
    preprocess={"spatial_size": [64, 64], "normalize": "zscore", "channels": 3},
    class_names=["no", "yes"],
    positive_class="yes",
    data={"layout": "image-folder"},
)
SEG3D = dict(
    name="unet_tiny",
    task="segmentation",
    spatial_dims=3,
    data_dims=3,
    in_channels=4,
    out_channels=3,
    preprocess={"normalize": "zscore", "label_map": "brats"},
    channel_names=["WT", "TC", "ET"],
    roi_size=[32, 32, 32],
    data={"layout": "brats"},
)
CT3D = dict(
    name="unet_tiny",
    task="segmentation",
    spatial_dims=3,
    data_dims=3,
    in_channels=1,
    out_channels=1,
    preprocess={"normalize": "ct_window", "ct_window": [-600.0, 1500.0], "spatial_size": [32, 32, 16]},
    data={"layout": "dicom"},
)
SPECS = {"seg2d": SEG2D, "cls2d": CLS2D, "seg3d": SEG3D, "ct3d": CT3D}


def _manifest(spec: dict, **fields) -> ModelManifest:
    """``spec``'s manifest with ``fields`` over it (both builders below write theirs through this)."""
    return ModelManifest(**{**spec, **fields})


def make_package(directory: str | Path, spec: dict, *, seed: int = 0, metrics: dict | None = None) -> Path:
    """Save a seeded, untrained package described by ``spec`` (one of the dicts above)."""
    torch.manual_seed(seed)
    kwargs = (
        {"spatial_dims": spec["spatial_dims"], "in_channels": spec["in_channels"], "out_channels": spec["out_channels"]}
        if spec["task"] == "segmentation"
        else {"in_chans": spec["in_channels"], "num_classes": spec["out_channels"]}
    )
    model = create_model(spec["name"], **kwargs).eval()
    if spec["task"] == "segmentation":
        _spread_outputs(model)
    manifest = _manifest(spec, model_kwargs=kwargs, metrics=metrics or {"dice": 0.5}, epoch=3)
    return save_package(directory, model, manifest)


def make_packages(root: Path, names: tuple[str, ...] = tuple(SPECS)) -> dict[str, Path]:
    """One seeded package per name of :data:`SPECS`, each in its own folder under ``root``."""
    return {name: make_package(root / name, SPECS[name]) for name in names}


def _spread_outputs(model: torch.nn.Module) -> None:
    # Random weights give probabilities within ~0.01 of 0.5; scaling the last conv spreads them,
    # so a threshold at 0.5 is far from almost every pixel.
    last = [
        m
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d))
    ][-1]
    with torch.no_grad():
        last.weight.mul_(20.0)


def synthetic_png(path: Path, size: tuple[int, int] = (100, 120), seed: int = 0) -> Path:
    """An RGB PNG with a bright blob on noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[0], : size[1]]
    image = rng.normal(60, 15, (*size, 3))
    image[(yy - size[0] // 2) ** 2 + (xx - size[1] // 3) ** 2 < (min(size) // 5) ** 2] += 120
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
    return path


def manifest_only(
    path: Path, task: str, metrics: dict, name: str = "unet_tiny", layout: str = "lgg", epoch: int = 3
) -> Path:
    """A folder with a valid ``model.json`` and no weights: enough for package discovery."""
    spec = {"segmentation": SEG2D, "classification": CLS2D}.get(task, dict(SEG2D, task=task))
    manifest = _manifest(spec, name=name, data={"layout": layout}, metrics=metrics, epoch=epoch, model_kwargs={})
    path.mkdir(parents=True)
    (path / "model.json").write_text(manifest.to_json())
    return path
