"""Dataset fingerprint (as nnU-Net makes one): what a planner needs to size a study.

Computed from a catalog (:func:`tumorbench.data.catalog.scan`): sizes, spacings,
channels, intensity statistics (percentiles, mean and SD over foreground pixels,
or every pixel without masks), class balance, foreground fraction, patients and
images per patient, and byte-identical duplicates.

Memory stays bounded: at most ``max_cases`` cases are read (a seeded random
sample, announced in ``sample``), and at most ``pixels_per_case`` intensity
values per channel are kept from each. Catalog-level numbers (cases, patients,
labels, duplicates, bytes on disk) always cover every case. No case id or file
name is stored: a fingerprint can be shared.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tumorbench.data.catalog import data_dims
from tumorbench.data.image import mask_grid_problem
from tumorbench.data.itk_io import with_data_file
from tumorbench.data.masks import stored_labels, target
from tumorbench.errors import DataError

FINGERPRINT_FILE = "fingerprint.json"
PERCENTILES = (0.5, 50.0, 99.5)

# Perceptual near-duplicate grouping (another module) plugs in here: catalog -> groups of row indices.
NearDuplicateFinder = Callable[[pd.DataFrame], list[list[int]]]


@dataclass(frozen=True)
class FingerprintConfig:
    """How much of a dataset to read.

    Args:
        max_cases: Cases read for sizes and intensities (a random sample above it).
        max_volumes: The same cap for 3D layouts (a volume costs ~100 slices).
        pixels_per_case: Intensity values kept per case and channel.
        hash_duplicates: Hash every image file to count byte-identical copies.
        seed: Seed of the case sample and the pixel sample.
    """

    max_cases: int = 300
    max_volumes: int = 20
    pixels_per_case: int = 2000
    hash_duplicates: bool = True
    seed: int = 0


def unusable_cases(frame: pd.DataFrame, config: FingerprintConfig | None = None, workers: int = 2) -> list[str]:
    """The cases a sampled fingerprint did not read, checked now: the errors of those that cannot be used.

    2D cases are read as the fingerprint reads them (decoded, mask on its grid): a millisecond or two each.
    Volumes are not read whole (minutes for a large 3D set): their headers, data lengths and grids are checked
    (:func:`tumorbench.data.integrity.volume_case_problem`: NIfTI files and DICOM series). So a study need not
    meet a corrupt file inside a Train worker.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tumorbench.data.integrity import volume_case_problem

    config = config or FingerprintConfig()
    volumes = data_dims(frame) == 3
    limit = config.max_volumes if volumes else config.max_cases
    if len(frame) <= limit:
        return []
    rest = frame.drop(_sample(frame, limit, config.seed).index)

    def problem(row: dict[str, Any]) -> str | None:
        if volumes:
            return volume_case_problem(row)
        try:
            _read_case(row, 1, np.random.default_rng(0))
        except DataError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:  # decoding releases the GIL
        return [p for p in pool.map(problem, rest.to_dict("records")) if p is not None]


def _sample(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    if len(frame) <= limit:
        return frame
    return frame.sample(n=limit, random_state=seed).sort_index()


def _read_case(row: dict[str, Any], keep: int, rng: np.random.Generator) -> dict[str, Any]:
    """Spatial shape, spacing, channels, foreground fraction and sampled intensities of one case."""
    from tumorbench.data import io

    arrays, shape, spacing, first = [], None, None, None
    for path in row["image"]:  # volumes in RAS, as the loader reads them: a mask stored otherwise still fits
        image = io.read_image(path, canonical=True)
        first = image if first is None else first
        array = (
            image.array
            if image.meta.get("format") == "image2d"
            else (np.moveaxis(image.array, -1, 0) if image.array.ndim == 4 else image.array[None])
        )
        shape = shape or tuple(int(s) for s in array.shape[1:])
        spacing = spacing or tuple(float(s) for s in image.spacing)
        arrays.extend(array)
    foreground, fraction, labels = None, None, ()
    if isinstance(row.get("mask"), str):
        data = io.read_image(row["mask"], canonical=True)
        if problem := mask_grid_problem(first, data):  # as data check says it; the loader would stop mid-study
            raise DataError(row["mask"], problem)
        mask = data.array[0] if data.array.ndim == len(shape) + 1 else data.array
        foreground = target(stored_labels(mask, data.meta.get("format")))  # JPEG masks' edge noise is not tumour
        fraction = float(foreground.mean())
        labels = _labels(mask[foreground])
    samples = []
    for channel in arrays:
        values = channel[foreground] if foreground is not None and foreground.any() else channel.ravel()
        if values.size > keep:
            values = values[rng.choice(values.size, keep, replace=False)]
        samples.append(values.astype(np.float32))
    return {
        "shape": shape,
        "spacing": spacing,
        "channels": len(arrays),
        "fraction": fraction,
        "labels": labels,
        "samples": samples,
        "bytes": int(sum(a.size for a in arrays) * 4),
    }


def _labels(values: np.ndarray) -> tuple[int, ...]:
    """The non-zero label values of a mask's foreground (organ 1 + tumour 2...); () unless integers."""
    every = values[:: max(1, values.size // 4096)]  # a label map is integers throughout: a spread-out check
    if not values.size or not np.allclose(every, np.rint(every)):
        return ()
    return tuple(int(v) for v in np.unique(np.rint(values))[:32])


def _summary(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, float)
    return {"min": float(array.min()), "median": float(np.median(array)), "max": float(array.max())}


def _intensity(per_case: list[list[np.ndarray]], channels: int) -> list[dict[str, float]]:
    stats = []
    for c in range(channels):
        values = np.concatenate([case[c] for case in per_case if len(case) > c] or [np.zeros(1, np.float32)])
        p = np.percentile(values, PERCENTILES)
        stats.append(
            {
                "mean": float(values.mean()),
                "std": float(values.std()),
                "p00_5": float(p[0]),
                "p50": float(p[1]),
                "p99_5": float(p[2]),
                "values": int(values.size),
            }
        )
    return stats


def _duplicates(frame: pd.DataFrame, hash_files: bool, near: NearDuplicateFinder | None) -> dict[str, Any]:
    from tumorbench.data.splits import find_duplicates

    groups = find_duplicates(frame) if hash_files else None
    result: dict[str, Any] = {
        "method": "sha256 of the image bytes" if hash_files else "not computed",
        "groups": None if groups is None else len(groups),
        "redundant_copies": None if groups is None else sum(len(g) - 1 for g in groups),
        "near_duplicate_groups": None,
        "near_duplicate_method": None,
    }
    if near is not None:
        near_groups = near(frame)
        result |= {
            "near_duplicate_groups": len(near_groups),
            "near_duplicate_method": getattr(near, "__name__", type(near).__name__),
        }
    return result


def _catalog_part(frame: pd.DataFrame) -> dict[str, Any]:
    per_patient = frame.groupby("patient_id").size().to_numpy()
    labels = frame["label"].dropna()
    task = "classification" if len(labels) else "segmentation"
    paths = {Path(p) for paths in frame["image"] for p in paths}
    # A DICOM case is its series folder: the files in it (a folder shared by several series counted once);
    # a MetaImage / NRRD header, itself and the data file it names.
    files = {f for p in paths for f in (p.iterdir() if p.is_dir() else with_data_file(p))}
    disk = sum(f.stat().st_size for f in files if f.is_file())
    return {
        "layout": frame.attrs.get("layout"),
        "task": task,
        "cases": len(frame),
        "patients": int(frame["patient_id"].nunique()),
        "images_per_patient": _summary(per_patient),
        "classes": {str(k): int(v) for k, v in sorted(Counter(labels).items())},
        # patients per class: a stratified k-fold split needs k of every class (planner, data.splits)
        "class_patients": {
            str(k): int(v) for k, v in frame.dropna(subset=["label"]).groupby("label")["patient_id"].nunique().items()
        },
        "with_mask": int(frame["mask"].map(lambda m: isinstance(m, str)).sum()),
        "disk_bytes": int(disk),
    }


def compute_fingerprint(
    frame: pd.DataFrame,
    config: FingerprintConfig | None = None,
    *,
    near_duplicates: NearDuplicateFinder | None = None,
    unreadable: list[str] | None = None,
) -> dict[str, Any]:
    """The fingerprint of a scanned catalog (a JSON-serializable dict).

    Args:
        frame: A catalog from :func:`~tumorbench.data.catalog.scan` (``attrs["layout"]`` set).
        config: Sampling limits.
        near_duplicates: Optional perceptual near-duplicate finder (groups of row indices).
        unreadable: When given, each sampled case that cannot be read is appended to it (its error: file and
            problem); the fingerprint itself only counts them (it holds no file names).

    Raises:
        DataError: No sampled case could be read.
    """
    config = config or FingerprintConfig()
    volumes = data_dims(frame) == 3
    limit = config.max_volumes if volumes else config.max_cases
    sample = _sample(frame, limit, config.seed)
    rng = np.random.default_rng(config.seed)
    reads, failed = [], []
    for row in sample.to_dict("records"):
        try:
            reads.append(_read_case(row, config.pixels_per_case, rng))
        except DataError as exc:
            failed.append(str(exc))  # data check lists each one; the fingerprint only counts them
    if unreadable is not None:
        unreadable += failed
    if not reads:
        raise DataError(frame.attrs.get("root", "dataset"), "no case could be read for the fingerprint")
    channels = Counter(r["channels"] for r in reads).most_common(1)[0][0]
    shapes = np.asarray([r["shape"] for r in reads if len(r["shape"]) == len(reads[0]["shape"])])
    fractions = [r["fraction"] for r in reads if r["fraction"] is not None]
    part = _catalog_part(frame)
    return part | {
        "spatial_dims": 3 if volumes else 2,
        "channels": int(channels),
        "shapes": {"x".join(map(str, k)): v for k, v in Counter(r["shape"] for r in reads).most_common(10)},
        "median_shape": [int(v) for v in np.median(shapes, axis=0)],
        "min_shape": [int(v) for v in shapes.min(axis=0)],
        "max_shape": [int(v) for v in shapes.max(axis=0)],
        "median_spacing": [float(v) for v in np.median([r["spacing"] for r in reads], axis=0)],
        # with masks, only masked cases' foreground counts (a case without its mask would mix in background)
        "intensity": _intensity([r["samples"] for r in reads if r["fraction"] is not None or not fractions], channels),
        "intensity_region": "foreground (mask > 0)" if fractions else "whole image",
        "foreground": None
        if not fractions
        else {
            "cases_with_foreground": float(np.mean([f > 0 for f in fractions])),
            "mean_fraction": float(np.mean(fractions)),
            "mean_fraction_when_present": float(np.mean([f for f in fractions if f > 0])) if any(fractions) else 0.0,
            "labels": sorted({v for r in reads for v in r["labels"]}),  # several: organ + tumour masks?
        },
        "decoded_bytes_per_case": float(np.mean([r["bytes"] for r in reads])),
        "duplicates": _duplicates(frame, config.hash_duplicates, near_duplicates),
        "sample": {
            "read": len(reads),
            "unreadable": len(failed),
            "of": len(frame),
            "sampled": len(sample) < len(frame),
            "seed": config.seed,
            "note": (
                f"sizes and intensities from a random sample of {len(sample)} of {len(frame)} cases"
                if len(sample) < len(frame)
                else "every case read"
            ),
        },
        "config": asdict(config),
    }


def write_fingerprint(fingerprint: dict[str, Any], folder: str | Path) -> Path:
    """Store ``fingerprint.json`` in a results folder."""
    path = Path(folder) / FINGERPRINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fingerprint, indent=1))
    return path


def format_fingerprint(fp: dict[str, Any]) -> str:
    """The fingerprint as a few text lines (for ``data check`` and the planner)."""
    ipp = fp["images_per_patient"]
    lines = [
        f"fingerprint ({fp['sample']['note']})",
        f"  {fp['cases']} images, {fp['patients']} patients, images per patient {ipp['min']:g}/"
        f"{ipp['median']:g}/{ipp['max']:g} (min/median/max); {fp['spatial_dims']}D, {fp['channels']} channel(s)",
        f"  median size {'x'.join(map(str, fp['median_shape']))} (min {'x'.join(map(str, fp['min_shape']))}, "
        f"max {'x'.join(map(str, fp['max_shape']))}), spacing {'x'.join(f'{v:g}' for v in fp['median_spacing'])} mm",
        f"  on disk {fp['disk_bytes'] / 2**20:.1f} MB, decoded ~{fp['decoded_bytes_per_case'] / 2**10:.0f} KiB/case",
    ]
    for c, s in enumerate(fp["intensity"]):
        lines.append(
            f"  intensity ch{c} ({fp['intensity_region']}): mean {s['mean']:.4g} sd {s['std']:.4g}, "
            f"p0.5 {s['p00_5']:.4g} p50 {s['p50']:.4g} p99.5 {s['p99_5']:.4g}"
        )
    if fp["classes"]:
        total = sum(fp["classes"].values())
        lines.append("  classes " + ", ".join(f"{k} {v} ({v / total:.0%})" for k, v in fp["classes"].items()))
    if fp["foreground"]:
        f = fp["foreground"]
        lines.append(
            f"  foreground in {f['cases_with_foreground']:.0%} of cases, {f['mean_fraction']:.2%} of "
            f"pixels on average ({f['mean_fraction_when_present']:.2%} where present)"
            + (f"; mask labels {', '.join(map(str, f['labels']))}" if len(f.get("labels") or ()) > 1 else "")
        )
    d = fp["duplicates"]
    if d["groups"] is not None:
        near = "" if d["near_duplicate_groups"] is None else f"; {d['near_duplicate_groups']} near-duplicate groups"
        lines.append(
            f"  duplicates {d['groups']} groups, {d['redundant_copies']} redundant copies ({d['method']})" + near
        )
    return "\n".join(lines)
