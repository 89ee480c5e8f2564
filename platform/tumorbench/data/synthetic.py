"""Deterministic synthetic studies: the project's embedded default data.

Two small phantoms that exercise the same code paths as the real data:

- brain MRI in the BraTS 2021 layout (four modalities plus a 0/1/2/4 label map,
  LPS-stored like real BraTS so canonicalization is exercised);
- lung CT as real DICOM series in Hounsfield units, one benign-like (smooth,
  round) or malignant-like (spiculated) nodule per series, a nodule mask in the
  series' RAS geometry and a ``labels.csv``.

Every case is drawn from ``numpy.random.default_rng([seed, case...])``, so one seed
gives byte-identical files on every run and a brain case does not depend on how many
others are generated (lung benign/malignant labels are dealt over the whole study to
hit the requested fraction exactly).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from tumorbench.data.writers import write_dicom_series, write_nifti
from tumorbench.errors import DataError

BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")
LUNG_LABEL_COLUMNS = (
    "case_id",
    "patient_id",
    "series_dir",
    "mask",
    "label",
    "malignancy",
    "nodule_center_ijk",
    "nodule_radius_mm",
)

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
_LUNG_CENTRE = (0.2, 0.01, -0.12)  # right-lung centre as a fraction of the field of view
_HU = {"air": -1000.0, "fat": -90.0, "tissue": 40.0, "bone": 400.0, "lung": -850.0, "calcium": 450.0}


def _check_common(name: str, cases: int, shape: tuple, spacing: tuple, noise: float) -> None:
    if cases < 1:
        raise ValueError(f"{name}.cases must be >= 1, got {cases}")
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"{name}.shape must be 3 sizes >= 16, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"{name}.spacing must be 3 positive mm values, got {spacing}")
    if noise < 0:
        raise ValueError(f"{name}.noise must be >= 0, got {noise}")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")


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
        _check_common("BrainPhantomConfig", self.cases, self.shape, self.spacing, self.noise)
        _check_fraction("BrainPhantomConfig.tumor_free_fraction", self.tumor_free_fraction)
        if not 0.0 <= self.bias_field <= 1.0:
            raise ValueError(f"BrainPhantomConfig.bias_field must be within [0, 1], got {self.bias_field}")


@dataclass(frozen=True)
class LungPhantomConfig:
    """Synthetic chest CT study of DICOM series with one nodule each.

    Args:
        cases: Number of series (cases).
        shape: Voxels per axis (I, J, K); K is the axial slice count.
        spacing: Voxel size in mm (a small, child-sized chest at the default).
        seed: Base seed; patient p uses ``default_rng([seed, p])``.
        noise: Gaussian noise sigma in HU.
        malignant_fraction: Fraction of patients with a spiculated, malignant-like nodule.
        repeat_scan_fraction: Fraction of patients with a second series (a follow-up of
            the same nodule), so splits must group by patient.
    """

    cases: int = 12
    shape: tuple[int, int, int] = (64, 64, 32)
    spacing: tuple[float, float, float] = (1.5, 1.5, 2.5)
    seed: int = 0
    noise: float = 12.0
    malignant_fraction: float = 0.5
    repeat_scan_fraction: float = 0.25

    def __post_init__(self) -> None:
        _check_common("LungPhantomConfig", self.cases, self.shape, self.spacing, self.noise)
        _check_fraction("LungPhantomConfig.malignant_fraction", self.malignant_fraction)
        _check_fraction("LungPhantomConfig.repeat_scan_fraction", self.repeat_scan_fraction)


def _every(index: int, fraction: float) -> bool:
    """True for an evenly spread ``fraction`` of indices, independently of the total."""
    return int(np.floor((index + 1) * fraction + 1e-9)) > int(np.floor(index * fraction + 1e-9))


def _grid_mm(shape: tuple[int, ...], spacing: tuple[float, ...]) -> list[np.ndarray]:
    """Voxel-centre coordinates in mm relative to the volume centre, broadcastable."""
    axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)]
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (correlation length ``sigma`` voxels)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-6)


def _ellipsoid_radius(grid: list[np.ndarray], centre, semi_axes) -> np.ndarray:
    return np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, semi_axes)))


def _prepare_out(out_dir: str | Path, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(out, "output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(out, "output folder is not empty; choose an empty folder or pass overwrite=True")
    out.mkdir(parents=True, exist_ok=True)
    return out


# ----------------------------------------------------------------------------- brain


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
    rho = _ellipsoid_radius(grid, centre, semi) * (1 + 0.02 * _smooth_field(rng, cfg.shape, 4.0))
    classes = np.zeros(cfg.shape, dtype=np.uint8)
    for limit, tissue in ((1.0, _SCALP), (0.95, _BONE), (0.89, _CSF), (0.86, _GM)):
        classes[rho < limit] = tissue
    # A wavy grey/white boundary gives the brain a gyral-like texture.
    classes[rho < 0.70 + 0.07 * _smooth_field(rng, cfg.shape, 1.5)] = _WM
    for side in (-1, 1):
        v_centre = centre + semi * np.array([0.10 * side, -0.02, 0.05])
        classes[_ellipsoid_radius(grid, v_centre, semi * np.array([0.06, 0.22, 0.12])) < 1] = _CSF
    return classes, rho < 0.86, semi


def _add_tumor(rng: np.random.Generator, cfg: BrainPhantomConfig, grid, classes, brain, semi) -> None:
    """Paint nested irregular edema > enhancing core > necrosis into ``classes``."""
    direction = rng.normal(size=3)
    centre = semi * 0.86 * direction / np.linalg.norm(direction) * rng.uniform(0.0, 0.5)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    r_edema = rng.uniform(0.24, 0.36) * float(np.mean(semi)) * 0.86
    r_core = r_edema * rng.uniform(0.6, 0.8)
    necrotic = rng.uniform(0.45, 0.7)
    core_field = _smooth_field(rng, cfg.shape, 2.5)
    edema = distance / r_edema + 0.18 * _smooth_field(rng, cfg.shape, 3.0) < 1
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
    grid = _grid_mm(config.shape, config.spacing)
    classes, brain, semi = _head_classes(rng, config, grid)
    if not _every(index, config.tumor_free_fraction):
        _add_tumor(rng, config, grid, classes, brain, semi)
    seg = np.zeros(config.shape, dtype=np.uint8)
    for tissue, label in _BRATS_LABEL.items():
        seg[classes == tissue] = label
    tumor = classes >= _EDEMA
    fov = np.array(config.shape) * np.array(config.spacing)
    sigma = config.noise * _MR_SCALE * _BRAIN_SIGNAL["t1"][_WM]
    case = {"seg": seg}
    for name in BRATS_MODALITIES:
        texture = _smooth_field(rng, config.shape, 1.2)
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
    out = _prepare_out(out_dir, overwrite)
    affine = brats_affine(config.shape, config.spacing)
    for index in range(config.cases):
        case_id = f"SynthBraTS_{index:05d}"
        for name, array in brain_case(config, index).items():
            write_nifti(out / case_id / f"{case_id}_{name}.nii.gz", array, affine)
    return out


# ----------------------------------------------------------------------------- lung


@dataclass(frozen=True)
class _Nodule:
    centre_mm: np.ndarray
    radius_mm: float
    malignant: bool
    calcified: bool
    spikes: tuple[tuple[np.ndarray, float], ...]  # (unit direction, length mm)


def _lung_plan(config: LungPhantomConfig) -> list[tuple[int, int]]:
    """(patient, scan) pairs, one per case; some patients get a second scan."""
    plan, patient = [], 0
    while len(plan) < config.cases:
        scans = 2 if _every(patient, config.repeat_scan_fraction) and config.cases - len(plan) >= 2 else 1
        plan += [(patient, scan) for scan in range(scans)]
        patient += 1
    return plan


def _chest(rng: np.random.Generator, cfg: LungPhantomConfig, grid) -> tuple[np.ndarray, np.ndarray]:
    """HU map of body, fat, spine and lungs (with vessels), and the lung mask."""
    fov = np.array(cfg.shape) * np.array(cfg.spacing)
    body_semi = fov[:2] * np.array([0.46, 0.36]) * rng.uniform(0.93, 1.02, 2)
    body_rho = np.sqrt((grid[0] / body_semi[0]) ** 2 + ((grid[1] - 0.03 * fov[1]) / body_semi[1]) ** 2)
    hu = np.full(cfg.shape, _HU["air"], dtype=np.float32)
    hu[np.broadcast_to(body_rho < 1, cfg.shape)] = _HU["fat"]
    hu[np.broadcast_to(body_rho < 0.9, cfg.shape)] = _HU["tissue"]
    spine = (grid[0] / (0.07 * fov[0])) ** 2 + ((grid[1] - 0.25 * fov[1]) / (0.07 * fov[1])) ** 2 < 1
    hu[np.broadcast_to(spine, cfg.shape)] = _HU["bone"]
    lungs = np.zeros(cfg.shape, dtype=bool)
    for side in (-1, 1):
        centre = fov * np.array(_LUNG_CENTRE) * (side, 1, 1)
        lungs |= _ellipsoid_radius(grid, centre, fov * np.array([0.15, 0.25, 0.62]) * rng.uniform(0.92, 1.05, 3)) < 1
    lungs &= np.broadcast_to(body_rho < 0.86, cfg.shape)
    hu[lungs] = _HU["lung"] + 25 * _smooth_field(rng, cfg.shape, 1.0)[lungs]
    vessels = np.zeros(cfg.shape, dtype=bool)
    for side in (-1, 1):
        hilum = fov * np.array([0.09 * side, 0.0, -0.05])
        for _ in range(8):
            offset = rng.uniform(-1, 1, 3) * np.array([0.13, 0.22, 0.4])
            tip = fov * (np.array(_LUNG_CENTRE) * (side, 1, 1) + offset)
            vessels |= _segment_distance(grid, hilum, tip) < rng.uniform(0.8, 1.8)
    hu[vessels & lungs] = _HU["tissue"]
    return hu, lungs


def _segment_distance(grid, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    axis = end - start
    rel = [g - s for g, s in zip(grid, start)]
    t = np.clip(sum(r * a for r, a in zip(rel, axis)) / float(axis @ axis), 0.0, 1.0)
    return np.sqrt(sum((r - t * a) ** 2 for r, a in zip(rel, axis)))


def _draw_nodule(rng: np.random.Generator, cfg: LungPhantomConfig, lungs: np.ndarray, malignant: bool) -> _Nodule:
    spacing = np.array(cfg.spacing)
    # Padding makes the volume edge count as outside, so nodules are not cut off there.
    depth = ndimage.distance_transform_edt(np.pad(lungs, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    radius = rng.uniform(6.0, 10.0) if malignant else rng.uniform(4.0, 7.0)
    radius = float(min(radius, 0.6 * depth.max()))  # small custom grids must still fit a nodule
    candidates = np.argwhere(depth >= 1.3 * radius)
    if len(candidates):
        ijk = candidates[rng.integers(len(candidates))]
    else:
        ijk = np.unravel_index(depth.argmax(), depth.shape)
    centre = (np.asarray(ijk) - (np.array(cfg.shape) - 1) / 2) * spacing
    spikes = ()
    if malignant:
        dirs = rng.normal(size=(int(rng.integers(6, 13)), 3))
        spikes = tuple((d / np.linalg.norm(d), radius * rng.uniform(1.0, 2.0)) for d in dirs)
    return _Nodule(centre, radius, malignant, bool(not malignant and rng.random() < 0.4), spikes)


def _nodule_mask(cfg: LungPhantomConfig, grid, nodule: _Nodule, growth: float, rng: np.random.Generator) -> np.ndarray:
    """Benign: smooth near-sphere. Malignant: lobulated sphere with tapering radial spikes."""
    radius = nodule.radius_mm * growth
    rel = [g - c for g, c in zip(grid, nodule.centre_mm)]
    distance = np.sqrt(sum(r**2 for r in rel))
    wobble = (0.15 if nodule.malignant else 0.03) * _smooth_field(rng, cfg.shape, 2.0)
    mask = distance < radius * (1 + wobble)
    for direction, length in nodule.spikes:
        along = sum(r * d for r, d in zip(rel, direction))
        across = np.sqrt(np.maximum(distance**2 - along**2, 0.0))
        reach = radius + length * growth
        mask |= (along > 0) & (along < reach) & (across < 0.45 * radius * (1 - along / reach))
    return mask


def _lung_affine(rng: np.random.Generator, cfg: LungPhantomConfig) -> np.ndarray:
    """Axial RAS affine whose DICOM (LPS) origin sits at a scanner-like table position."""
    (si, sj, sk), fov = cfg.spacing, np.array(cfg.shape) * np.array(cfg.spacing)
    origin_lps = np.array(
        [-fov[0] / 2 + rng.uniform(-10, 10), -fov[1] / 2 + rng.uniform(-10, 30), rng.uniform(-350, -150)]
    )
    return np.array(
        [[-si, 0, 0, -origin_lps[0]], [0, -sj, 0, -origin_lps[1]], [0, 0, sk, origin_lps[2]], [0, 0, 0, 1]], dtype=float
    )


def lung_case(config: LungPhantomConfig, patient: int, scan: int, malignant: bool) -> dict:
    """Generate one series: ``hu`` (float32), ``mask`` (uint8), ``affine`` (RAS) and nodule facts."""
    patient_rng = np.random.default_rng([config.seed, patient])
    scan_rng = np.random.default_rng([config.seed, patient, scan])
    grid = _grid_mm(config.shape, config.spacing)
    hu, lungs = _chest(patient_rng, config, grid)
    nodule = _draw_nodule(patient_rng, config, lungs, malignant)
    growth = 1.0 if scan == 0 or not malignant else float(scan_rng.uniform(1.05, 1.2))
    mask = _nodule_mask(config, grid, nodule, growth, np.random.default_rng([config.seed, patient, 1000])) & lungs
    hu[mask] = _HU["tissue"] + 15 * scan_rng.standard_normal(int(mask.sum()))
    if nodule.calcified:
        distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, nodule.centre_mm)))
        hu[mask & (distance < 0.45 * nodule.radius_mm)] = _HU["calcium"]
    hu = ndimage.gaussian_filter(hu, 0.5) + config.noise * scan_rng.standard_normal(config.shape, dtype=np.float32)
    centre_ijk = np.rint(nodule.centre_mm / np.array(config.spacing) + (np.array(config.shape) - 1) / 2).astype(int)
    rating = (5 if nodule.radius_mm > 8 else 4) if malignant else (2 if nodule.radius_mm > 5.5 else 1)
    return {
        "hu": np.clip(hu, -1024, 3071).astype(np.float32),
        "mask": mask.astype(np.uint8),
        "affine": _lung_affine(scan_rng, config),
        "centre_ijk": [int(v) for v in centre_ijk],
        "radius_mm": round(nodule.radius_mm * growth, 2),
        "malignancy": rating,
    }


def make_lung_study(
    out_dir: str | Path, config: LungPhantomConfig = LungPhantomConfig(), *, overwrite: bool = False
) -> Path:
    """Write ``<patient>/scan_<s>/slice_XXX.dcm``, ``<patient>/scan_<s>_nodule_mask.nii.gz``, ``labels.csv``.

    Returns:
        The study folder.
    """
    out = _prepare_out(out_dir, overwrite)
    plan = _lung_plan(config)
    patients = sorted({p for p, _ in plan})
    order = np.random.default_rng([config.seed, 999_999]).permutation(len(patients))
    malignant = {patients[n] for n in order[: int(round(len(patients) * config.malignant_fraction))]}
    rows = []
    for patient, scan in plan:
        patient_id, series = f"SYNTH-LUNG-{patient:04d}", f"scan_{scan}"
        case = lung_case(config, patient, scan, patient in malignant)
        write_dicom_series(
            out / patient_id / series,
            case["hu"],
            case["affine"],
            patient_id=patient_id,
            series_description=f"synthetic chest CT {series}",
            uid_seed=f"{config.seed}/{patient}/{scan}",
        )
        mask_rel = f"{patient_id}/{series}_nodule_mask.nii.gz"
        write_nifti(out / mask_rel, case["mask"], case["affine"], dtype=np.uint8)
        rows.append(
            {
                "case_id": f"{patient_id}_{series}",
                "patient_id": patient_id,
                "series_dir": f"{patient_id}/{series}",
                "mask": mask_rel,
                "label": "malignant" if patient in malignant else "benign",
                "malignancy": case["malignancy"],
                "nodule_center_ijk": json.dumps(case["centre_ijk"]),
                "nodule_radius_mm": case["radius_mm"],
            }
        )
    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LUNG_LABEL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
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
