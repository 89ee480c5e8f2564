"""Scores of heatmaps: do they point at the tumor, are they faithful, do they depend on the model at all.

Pure functions of arrays (and, for the perturbation curves, a score callable):

- :func:`pointing_game`: the heatmap's peak lies inside the tumor mask (Zhang et al. 2018);
- :func:`energy_in_mask`: the fraction of heatmap mass inside the mask;
- :func:`perturbation_curve` / :func:`curve_auc`: deletion and insertion (Petsiuk et al. 2018, RISE):
  the explained score as the most salient pixels are removed from the image (deletion: a sharp drop,
  low AUC, is faithful) or revealed on a blank one (insertion: a fast rise, high AUC, is faithful);
- :func:`randomisation_check`: Adebayo et al. 2018's model-parameter randomisation test: heatmaps of
  the trained model and of a randomly re-initialised copy compared by Spearman rank correlation and
  SSIM; explanations that barely change are flagged (they describe the image, not the model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

# Adebayo et al. read similarity plots by eye; these cut-offs make the flag reproducible. A heatmap
# whose rank correlation or SSIM with the randomised model's stays above 0.5 is mostly independent of
# what the model learned.
RANK_CORR_LIMIT = 0.5
SSIM_LIMIT = 0.5


def _pair(heatmap: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heatmap, mask = np.asarray(heatmap, dtype=float), np.asarray(mask) > 0
    if heatmap.shape != mask.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} differs from mask shape {mask.shape}")
    return heatmap, mask


def pointing_game(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """1.0 when the heatmap's (first) maximum lies inside ``mask``, 0.0 when outside.

    NaN when the mask is empty (no tumor to point at); a constant heatmap points nowhere (0.0).
    """
    heatmap, mask = _pair(heatmap, mask)
    if not mask.any():
        return float("nan")
    if not np.isfinite(heatmap).all() or heatmap.max() == heatmap.min():
        return 0.0
    return float(mask.flat[int(np.argmax(heatmap))])


def energy_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the (non-negative) heatmap mass inside ``mask``; NaN for an empty mask or an all-zero map."""
    heatmap, mask = _pair(heatmap, mask)
    heatmap = np.clip(heatmap, 0, None)
    total = float(heatmap.sum())
    if not mask.any() or total <= 0:
        return float("nan")
    return float(heatmap[mask].sum() / total)


def perturbation_curve(
    score: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    heatmap: np.ndarray,
    mode: str,
    *,
    steps: int = 16,
    baseline: float | np.ndarray = 0.0,
) -> np.ndarray:
    """Scores of ``steps + 1`` images as the most salient pixels are deleted or inserted.

    Args:
        score: Maps a batch ``(B, C, *spatial)`` to ``(B,)`` scores of the explained output.
        image: ``(C, *spatial)`` input.
        heatmap: ``(*spatial)`` saliency; pixels are taken highest first (ties by index).
        mode: ``deletion`` (image -> baseline) or ``insertion`` (baseline -> image).
        steps: Equal steps of the pixel fraction from 0 to 1.
        baseline: What a removed pixel becomes (a scalar or an array shaped like ``image``).

    Returns:
        ``(steps + 1,)`` scores at pixel fractions ``0, 1/steps, ..., 1``.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    image = np.asarray(image, dtype=np.float32)
    if image.shape[1:] != np.shape(heatmap):
        raise ValueError(f"image shape {image.shape} does not match heatmap shape {np.shape(heatmap)}")
    background = np.broadcast_to(np.asarray(baseline, dtype=np.float32), image.shape)
    order = np.argsort(-np.asarray(heatmap, dtype=float).ravel(), kind="stable")
    n = order.size
    batch = []
    for k in range(steps + 1):
        chosen = np.zeros(n, dtype=bool)
        chosen[order[: int(round(k * n / steps))]] = True
        chosen = chosen.reshape(np.shape(heatmap))[None]
        start, end = (image, background) if mode == "deletion" else (background, image)
        batch.append(np.where(chosen, end, start))
    return np.asarray(score(np.stack(batch)), dtype=float).reshape(steps + 1)


def curve_auc(values: Sequence[float]) -> float:
    """Area under a curve sampled at equal steps over [0, 1] (trapezoidal rule)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        raise ValueError("a curve needs at least two points")
    return float(np.trapezoid(values, dx=1.0 / (values.size - 1)))


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two heatmaps' values (NaN when either is constant)."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"heatmaps of {a.size} and {b.size} values cannot be compared")
    if a.min() == a.max() or b.min() == b.max():
        return float("nan")
    return float(spearmanr(a, b).statistic)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two heatmaps scaled to [0, 1] (scikit-image; 2D or 3D, window shrunk for small sides)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"heatmap shapes {a.shape} and {b.shape} differ")
    side = min(a.shape)
    if side < 3:
        raise ValueError(f"heatmaps of shape {a.shape} are too small for SSIM (sides >= 3 needed)")
    window = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(a, b, data_range=1.0, win_size=window))


@dataclass(frozen=True)
class RandomisationResult:
    """Heatmaps of a trained model vs its randomised copy, over a set of images.

    Attributes:
        rank_corr: Mean Spearman correlation (NaN pairs skipped).
        ssim: Mean SSIM.
        flagged: True when either mean exceeds its limit: the explanation survives randomisation.
        n: Images compared.
    """

    rank_corr: float
    ssim: float
    flagged: bool
    n: int


def randomisation_check(
    trained: Sequence[np.ndarray],
    randomised: Sequence[np.ndarray],
    *,
    rank_limit: float = RANK_CORR_LIMIT,
    ssim_limit: float = SSIM_LIMIT,
) -> RandomisationResult:
    """Compare heatmaps pairwise (same images, trained vs randomised model) and flag survivors.

    A constant randomised (or trained) map shares no ranking with the other: its undefined rank
    correlation counts as 0. Flagged when the mean rank correlation exceeds ``rank_limit`` or the
    mean SSIM exceeds ``ssim_limit``.
    """
    if len(trained) != len(randomised) or not trained:
        raise ValueError(f"need equally many heatmaps, got {len(trained)} and {len(randomised)}")
    rhos = np.nan_to_num([rank_correlation(a, b) for a, b in zip(trained, randomised)], nan=0.0)
    sims = [ssim(a, b) for a, b in zip(trained, randomised)]
    rho, sim = float(np.mean(rhos)), float(np.mean(sims))
    return RandomisationResult(rho, sim, bool(rho > rank_limit or sim > ssim_limit), len(trained))
