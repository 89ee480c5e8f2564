"""Helpers shared by the synthetic phantoms (:mod:`tumorbench.data.synthetic`, :mod:`tumorbench.data.synthetic_lung`):
config checks, even spreading of a fraction, voxel grids in mm, smooth random fields, output folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from tumorbench.errors import DataError


def check_common(name: str, cases: int, shape: tuple, spacing: tuple, noise: float) -> None:
    if cases < 1:
        raise ValueError(f"{name}.cases must be >= 1, got {cases}")
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"{name}.shape must be 3 sizes >= 16, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"{name}.spacing must be 3 positive mm values, got {spacing}")
    if noise < 0:
        raise ValueError(f"{name}.noise must be >= 0, got {noise}")


def check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")


def every(index: int, fraction: float) -> bool:
    """True for an evenly spread ``fraction`` of indices, independently of the total."""
    return int(np.floor((index + 1) * fraction + 1e-9)) > int(np.floor(index * fraction + 1e-9))


def grid_mm(shape: tuple[int, ...], spacing: tuple[float, ...]) -> list[np.ndarray]:
    """Voxel-centre coordinates in mm relative to the volume centre, broadcastable."""
    axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)]
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (correlation length ``sigma`` voxels)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-6)


def ellipsoid_radius(grid: list[np.ndarray], centre, semi_axes) -> np.ndarray:
    return np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, semi_axes)))


def prepare_out(out_dir: str | Path, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(out, "output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(out, "output folder is not empty; choose an empty folder or pass overwrite=True")
    out.mkdir(parents=True, exist_ok=True)
    return out
