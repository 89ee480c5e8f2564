"""Synthetic lung CT: DICOM series in Hounsfield units with one nodule each.

One benign-like (smooth, round) or malignant-like (spiculated) nodule per series, a nodule mask
in the series' RAS geometry and a ``labels.csv``; some patients get a second series (a follow-up
of the same nodule). Patient ``p`` is drawn from ``numpy.random.default_rng([seed, p])``; the
benign/malignant labels are dealt over the whole study to hit the requested fraction exactly.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from tumorbench.data import synthetic_common as common
from tumorbench.data.writers import write_dicom_series, write_nifti

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
_LUNG_CENTRE = (0.2, 0.01, -0.12)  # right-lung centre as a fraction of the field of view
_HU = {"air": -1000.0, "fat": -90.0, "tissue": 40.0, "bone": 400.0, "lung": -850.0, "calcium": 450.0}


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
        common.check_common("LungPhantomConfig", self.cases, self.shape, self.spacing, self.noise)
        common.check_fraction("LungPhantomConfig.malignant_fraction", self.malignant_fraction)
        common.check_fraction("LungPhantomConfig.repeat_scan_fraction", self.repeat_scan_fraction)


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
        scans = 2 if common.every(patient, config.repeat_scan_fraction) and config.cases - len(plan) >= 2 else 1
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
        lungs |= (
            common.ellipsoid_radius(grid, centre, fov * np.array([0.15, 0.25, 0.62]) * rng.uniform(0.92, 1.05, 3)) < 1
        )
    lungs &= np.broadcast_to(body_rho < 0.86, cfg.shape)
    hu[lungs] = _HU["lung"] + 25 * common.smooth_field(rng, cfg.shape, 1.0)[lungs]
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
    wobble = (0.15 if nodule.malignant else 0.03) * common.smooth_field(rng, cfg.shape, 2.0)
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
    grid = common.grid_mm(config.shape, config.spacing)
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
    out = common.prepare_out(out_dir, overwrite)
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
