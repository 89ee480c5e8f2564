"""Deterministic synthetic studies: the project's embedded default data.

Two small phantoms that exercise the same code paths as the real data:

- brain MRI in the BraTS 2021 layout (four modalities plus a 0/1/2/4 label map,
  LPS-stored like real BraTS so canonicalization is exercised);
- lung CT as real DICOM series in Hounsfield units, one benign-like (smooth,
  round) or malignant-like (spiculated) nodule per series, a nodule mask in the
  series' RAS geometry and a ``labels.csv`` (:mod:`tumorbench.data.synthetic_lung`).

Every case is drawn from ``numpy.random.default_rng([seed, case...])``, so one seed
gives byte-identical files on every run and a brain case does not depend on how many
others are generated (lung benign/malignant labels are dealt over the whole study to
hit the requested fraction exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from tumorbench.data import synthetic_common as common
from tumorbench.data.synthetic_lung import LungPhantomConfig, make_lung_study
from tumorbench.data.writers import write_nifti

BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")

# Brain tissue classes and their relative signal per modality (WM on T1 ~ 0.85).
# Mimics clinical contrast: edema bright on T2/FLAIR, enhancing rim bright on T1ce,
# necrosis dark on T1ce, the whole tumor slightly dark on T1, CSF nulled on FLAIR.
_AIR, _SCALP, _BONE, _CSF, _GM, _WM, _EDEMA, _NECROSIS, _ENHANCING = range(9)
_BRAIN_SIGNAL = {
    "t1": (0.0, 0.95, 0.15, 0.25, 0.62, 0.85, 0.55, 0.35, 0.60),
    "t1ce": (0.0, 0.95, 0.15, 0.25, 0.63, 0.85, 0.57, 0.28, 1.25),
    "t2": (0.0, 0.55, 0.10, 1.00, 0.62, 0.42, 0.92, 1.05, 0.70),
    "flair": (0.0, 0.70, 0.10, 0.12, 0.62, 0.48, 1.00, 0.55, 0.82),
}
_BRATS_LABEL = {_EDEMA: 2, _NECROSIS: 1, _ENHANCING: 4}
_MR_SCALE = 1000.0


@dataclass(frozen=True)
class BrainPhantomConfig:
    """Synthetic BraTS-like brain MRI study.

    Args:
        cases: Number of cases.
        shape: Voxels per axis (I, J, K).
        spacing: Voxel size in mm; the head fills ~85% of the field of view.
        seed: Base seed; case n uses ``default_rng([seed, n])``.
        noise: Rician noise sigma relative to white-matter signal.
        bias_field: Strength of the smooth multiplicative bias field (log scale).
        tumor_free_fraction: Fraction of cases with no tumor (all-zero seg), spread evenly.
    """

    cases: int = 12
    shape: tuple[int, int, int] = (64, 64, 40)
    spacing: tuple[float, float, float] = (3.0, 3.0, 4.0)
    seed: int = 0
    noise: float = 0.03
    bias_field: float = 0.2
    tumor_free_fraction: float = 0.0

    def __post_init__(self) -> None:
        common.check_common("BrainPhantomConfig", self.cases, self.shape, self.spacing, self.noise)
        common.check_fraction("BrainPhantomConfig.tumor_free_fraction", self.tumor_free_fraction)
        if not 0.0 <= self.bias_field <= 1.0:
            raise ValueError(f"BrainPhantomConfig.bias_field must be within [0, 1], got {self.bias_field}")


def brats_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """LPS-stored affine like real BraTS (x = -i, y = -j) with a non-zero centre offset."""
    (ni, nj, nk), (si, sj, sk) = shape, spacing
    return np.array(
        [
            [-si, 0, 0, si * (ni - 1) / 2],
            [0, -sj, 0, sj * (nj - 1) / 2 + 18.0],
            [0, 0, sk, -sk * (nk - 1) / 2 + 12.0],
            [0, 0, 0, 1],
        ],
        dtype=float,
    )


def _head_classes(rng: np.random.Generator, cfg: BrainPhantomConfig, grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue class map, the brain mask and the head semi-axes (mm)."""
    fov = np.array(cfg.shape) * np.array(cfg.spacing)
    semi = fov * np.array([0.40, 0.46, 0.42]) * rng.uniform(0.93, 1.03, 3)
    centre = rng.normal(0.0, 0.015, 3) * fov
    rho = common.ellipsoid_radius(grid, centre, semi) * (1 + 0.02 * common.smooth_field(rng, cfg.shape, 4.0))
    classes = np.zeros(cfg.shape, dtype=np.uint8)
    for limit, tissue in ((1.0, _SCALP), (0.95, _BONE), (0.89, _CSF), (0.86, _GM)):
        classes[rho < limit] = tissue
    # A wavy grey/white boundary gives the brain a gyral-like texture.
    classes[rho < 0.70 + 0.07 * common.smooth_field(rng, cfg.shape, 1.5)] = _WM
    for side in (-1, 1):
        v_centre = centre + semi * np.array([0.10 * side, -0.02, 0.05])
        classes[common.ellipsoid_radius(grid, v_centre, semi * np.array([0.06, 0.22, 0.12])) < 1] = _CSF
    return classes, rho < 0.86, semi


def _add_tumor(rng: np.random.Generator, cfg: BrainPhantomConfig, grid, classes, brain, semi) -> None:
    """Paint nested irregular edema > enhancing core > necrosis into ``classes``."""
    direction = rng.normal(size=3)
    centre = semi * 0.86 * direction / np.linalg.norm(direction) * rng.uniform(0.0, 0.5)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    r_edema = rng.uniform(0.24, 0.36) * float(np.mean(semi)) * 0.86
    r_core = r_edema * rng.uniform(0.6, 0.8)
    necrotic = rng.uniform(0.45, 0.7)
    core_field = common.smooth_field(rng, cfg.shape, 2.5)
    edema = distance / r_edema + 0.18 * common.smooth_field(rng, cfg.shape, 3.0) < 1
    core = distance / r_core + 0.12 * core_field < 1
    # One shared field keeps necrosis strictly inside the core; dilation keeps a rim of edema.
    necrosis = distance / (r_core * necrotic) + 0.12 * core_field < 1
    edema |= ndimage.binary_dilation(core, iterations=1)
    classes[edema & brain] = _EDEMA
    classes[core & brain] = _ENHANCING
    classes[necrosis & brain] = _NECROSIS


def _bias(rng: np.random.Generator, grid, fov: np.ndarray, strength: float) -> np.ndarray:
    """Smooth multiplicative bias: exp of a random quadratic polynomial in [-1, 1]."""
    u = [2 * g / f for g, f in zip(grid, fov)]
    terms = [u[0], u[1], u[2], u[0] * u[1], u[1] * u[2], u[0] * u[2], u[0] ** 2, u[1] ** 2, u[2] ** 2]
    poly = sum(c * t for c, t in zip(rng.uniform(-1, 1, len(terms)), terms))
    poly = np.broadcast_to(poly, tuple(len(np.ravel(g)) for g in grid))
    return np.exp(strength * poly / (np.abs(poly).max() + 1e-6)).astype(np.float32)


def brain_case(config: BrainPhantomConfig, index: int) -> dict[str, np.ndarray]:
    """Generate case ``index``: float32 ``t1``/``t1ce``/``t2``/``flair`` and uint8 ``seg``."""
    rng = np.random.default_rng([config.seed, index])
    grid = common.grid_mm(config.shape, config.spacing)
    classes, brain, semi = _head_classes(rng, config, grid)
    if not common.every(index, config.tumor_free_fraction):
        _add_tumor(rng, config, grid, classes, brain, semi)
    seg = np.zeros(config.shape, dtype=np.uint8)
    for tissue, label in _BRATS_LABEL.items():
        seg[classes == tissue] = label
    tumor = classes >= _EDEMA
    fov = np.array(config.shape) * np.array(config.spacing)
    sigma = config.noise * _MR_SCALE * _BRAIN_SIGNAL["t1"][_WM]
    case = {"seg": seg}
    for name in BRATS_MODALITIES:
        texture = common.smooth_field(rng, config.shape, 1.2)
        image = np.asarray(_BRAIN_SIGNAL[name], dtype=np.float32)[classes]
        image *= 1 + np.where(tumor, 0.08, 0.04) * texture
        image = ndimage.gaussian_filter(image, 0.6) * _MR_SCALE * _bias(rng, grid, fov, config.bias_field)
        real = image + sigma * rng.standard_normal(config.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(config.shape, dtype=np.float32)
        case[name] = np.sqrt(real**2 + imag**2).astype(np.float32)  # magnitude of complex noise: Rician
    return case


def make_brain_study(
    out_dir: str | Path, config: BrainPhantomConfig = BrainPhantomConfig(), *, overwrite: bool = False
) -> Path:
    """Write ``out/SynthBraTS_NNNNN/SynthBraTS_NNNNN_{t1,t1ce,t2,flair,seg}.nii.gz``.

    Returns:
        The study folder.
    """
    out = common.prepare_out(out_dir, overwrite)
    affine = brats_affine(config.shape, config.spacing)
    for index in range(config.cases):
        case_id = f"SynthBraTS_{index:05d}"
        for name, array in brain_case(config, index).items():
            write_nifti(out / case_id / f"{case_id}_{name}.nii.gz", array, affine)
    return out


def make_study(
    kind: Literal["brain-mri", "lung-ct"],
    out_dir: str | Path,
    *,
    cases: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Generate the default synthetic study of one ``kind`` (used by ``tumorbench data synth``).

    Args:
        kind: ``brain-mri`` (BraTS-layout NIfTI) or ``lung-ct`` (DICOM + labels.csv).
        out_dir: Target folder; must be empty unless ``overwrite``.
        cases: Number of cases; the config default when None.
        seed: Base seed; the config default when None.
        overwrite: Write into a non-empty folder (existing files with the same names are replaced).
    """
    if kind not in PHANTOMS:
        raise ValueError(f"unknown synthetic task {kind!r}; choose one of {', '.join(PHANTOMS)}")
    default, make = PHANTOMS[kind]
    config = replace(default(), **{k: v for k, v in (("cases", cases), ("seed", seed)) if v is not None})
    return make(out_dir, config, overwrite=overwrite)


# Synthetic kinds -> (default config, writer).
PHANTOMS = {"brain-mri": (BrainPhantomConfig, make_brain_study), "lung-ct": (LungPhantomConfig, make_lung_study)}
