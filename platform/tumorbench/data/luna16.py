"""LUNA16 (``subset0``..``subset9/<seriesuid>.mhd`` + ``annotations.csv``) made a segmentation set of nodule masks.

LUNA16 marks each nodule of >= 3 mm that at least 3 of 4 LIDC readers accepted by its centre (world mm, in the
LPS frame ITK reads the ``.mhd`` in) and its diameter; it ships no masks. tumorbench trains and scores on masks, so
:func:`write_masks` draws each nodule as a ball of its diameter around its centre on the scan's own grid, as
nnDetection's and MONAI's LUNA16 recipes do. The output is a ``paired`` set: ``images/<seriesuid>.mhd`` (links to
the scan and its data file: nothing copied) and ``masks/<seriesuid>.mha``; a scan without nodules gets an empty
mask, a negative case. LUNA16 gives no patient IDs: each scan is its own patient (LIDC has one scan per patient
but for a few).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tumorbench.data import itk_io
from tumorbench.data.image import LPS_TO_RAS
from tumorbench.data.layouts.common import data_files
from tumorbench.data.layouts.image_folder import LUNG_MASKS
from tumorbench.errors import DataError

COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")


@dataclass(frozen=True)
class Summary:
    scans: int
    scans_with_nodules: int
    nodules: int
    outside: int  # nodules whose centre lies outside their scan (not drawn)
    without_scan: int  # annotations of scans not found (a subset not downloaded)


def find_annotations(root: Path) -> Path:
    """``annotations.csv`` at the root or one folder down (``CSVFILES/``, ``evaluationScript/annotations/``)."""
    for pattern in ("annotations.csv", "*/annotations.csv", "*/*/annotations.csv"):
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    raise DataError(root, "no annotations.csv (LUNA16's nodule list) at the root or one or two folders down")


def read_annotations(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"seriesuid": str})
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable CSV ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)} (LUNA16: {', '.join(COLUMNS)})")
    numbers = table[list(COLUMNS[1:])].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(numbers.to_numpy(dtype=float)).all(axis=1) | (numbers["diameter_mm"] <= 0).to_numpy()
    if bad.any():
        raise DataError(path, f"{int(bad.sum())} row(s) without finite coordinates and a positive diameter")
    return pd.concat([table[["seriesuid"]], numbers], axis=1)


def scans(root: Path) -> dict[str, Path]:
    """Every ``.mhd`` under the root by series UID (its file name); a UID found twice is refused.

    The release's lung segmentations (``seg-lungs-LUNA16/``, named as the scans) are not scans: left out.
    """
    found: dict[str, Path] = {}
    for path in data_files(root):
        if path.suffix.lower() == ".mhd" and not any(LUNG_MASKS.match(part) for part in path.relative_to(root).parts):
            if path.stem in found:
                raise DataError(path, f"a second scan named {path.name} (also {found[path.stem]})")
            found[path.stem] = path
    if not found:
        raise DataError(root, "no .mhd scans under it (LUNA16: subset0/ ... subset9/ of <seriesuid>.mhd + .raw)")
    return found


def ball_mask(info: dict, centres_lps: np.ndarray, diameters: np.ndarray) -> tuple[np.ndarray, int]:
    """A (I, J, K) uint8 mask with a ball per nodule, and how many centres fell outside the scan."""
    shape, affine = info["shape"][:3], info["affine"]
    mask = np.zeros(shape, dtype=np.uint8)
    to_voxel = np.linalg.inv(affine)
    reach = np.linalg.norm(to_voxel[:3, :3], axis=1)  # voxels per mm along each index axis, at most
    outside = 0
    for centre_lps, diameter in zip(centres_lps, diameters, strict=True):
        centre = LPS_TO_RAS[:3, :3] @ centre_lps
        index = to_voxel[:3, :3] @ centre + to_voxel[:3, 3]
        if np.any(index < -0.5) or np.any(index > np.array(shape) - 0.5):
            outside += 1
            continue
        radius = diameter / 2
        low = np.maximum(np.floor(index - radius * reach), 0).astype(int)
        high = np.minimum(np.ceil(index + radius * reach) + 1, shape).astype(int)
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(low, high)], indexing="ij"), axis=-1)
        world = grid @ affine[:3, :3].T + affine[:3, 3]
        inside = np.linalg.norm(world - centre, axis=-1) <= radius
        box = tuple(slice(a, b) for a, b in zip(low, high))
        mask[box] |= inside.astype(np.uint8)
    return mask, outside


def write_masks(root: str | Path, out: str | Path) -> Summary:
    """Write ``out/images`` (links) and ``out/masks`` for every LUNA16 scan under ``root`` (a progress bar on
    stderr: LUNA16's 888 scans take minutes)."""
    import SimpleITK as sitk
    from tqdm import tqdm

    root, out = Path(root), Path(out)
    table = read_annotations(find_annotations(root))
    found = scans(root)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    nodules = outside = with_nodules = 0
    for uid, path in tqdm(found.items(), desc="drawing nodule masks", unit="scan", leave=False, mininterval=2.0):
        reader, info = itk_io.open_header(path)
        rows = table[table["seriesuid"] == uid]
        mask, missed = ball_mask(info, rows[["coordX", "coordY", "coordZ"]].to_numpy(), rows["diameter_mm"].to_numpy())
        nodules, outside, with_nodules = nodules + len(rows) - missed, outside + missed, with_nodules + bool(mask.any())
        image = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)))  # ITK's (K, J, I) order
        image.SetOrigin(reader.GetOrigin())
        image.SetSpacing(reader.GetSpacing())
        image.SetDirection(reader.GetDirection())
        sitk.WriteImage(image, str(out / "masks" / f"{uid}.mha"), True)
        for source in itk_io.with_data_file(path):
            _link(source, out / "images" / source.name)
    without = int((~table["seriesuid"].isin(found)).sum())
    return Summary(len(found), with_nodules, nodules, outside, without)


def _link(source: Path, target: Path) -> None:
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        os.symlink(source.resolve(), target)
    except OSError as exc:  # a file system without links
        raise DataError(target, f"cannot link to {source} ({exc.strerror or exc})") from exc
