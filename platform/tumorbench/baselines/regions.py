"""Region helpers of the threshold segmenters: body mask, hole filling, component statistics.

The segmenters' search over component thresholds works on per-component statistics
(:class:`Components`), so each image is thresholded once, whatever the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from skimage.morphology import ball, disk


def body_mask(x: np.ndarray, level: float = 0.1, smooth: float = 2.0) -> np.ndarray:
    """Foreground of one channel: the largest component above ``level`` of the 1-99 percentile range, holes filled.

    The channel is Gaussian-smoothed (sigma ``smooth`` voxels) first, so that background
    noise neither sets the percentiles nor joins the body.
    """
    smoothed = ndimage.gaussian_filter(x.astype(np.float32), smooth) if smooth > 0 else x
    low, high = np.percentile(smoothed, (1, 99))
    if high <= low:
        return np.zeros(x.shape, dtype=bool)
    labels, n = ndimage.label(smoothed > low + level * (high - low))
    if n == 0:
        return np.zeros(x.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return fill_holes(labels == sizes.argmax())


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions that do not touch the array border (2D or 3D).

    Same result as ``ndimage.binary_fill_holes`` with its default structure, from one
    labelling instead of an iterated dilation.
    """
    background, _ = ndimage.label(~mask)
    faces = [np.take(background, i, axis=a) for a in range(mask.ndim) for i in (0, -1)]
    outside = np.unique(np.concatenate([f.ravel() for f in faces]))
    return mask | ((background > 0) & ~np.isin(background, outside[outside > 0]))


def bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Slices of a non-empty mask's bounding box grown by ``margin`` voxels (clipped to the array)."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hits[0]) - margin, 0), int(hits[-1]) + 1 + margin))
    return tuple(box)


def relative_depth(body: np.ndarray) -> np.ndarray:
    """Chessboard distance to the body's edge divided by its maximum: 0 outside, 1 at the deepest voxel.

    The chamfer distance is an order of magnitude faster than the Euclidean one on
    volumes, and only its relative value is used.
    """
    depth = ndimage.distance_transform_cdt(body, metric="chessboard").astype(np.float32)
    return depth / max(float(depth.max()), 1.0)


class Components:
    """Connected candidate components of one image (cropped to ``box``) and the statistics the filters use.

    Args:
        x: Intensities of the crop.
        inner: Reference region of the contrast (crop).
        depth_map: Relative depth (crop); None, like ``candidate``, for no components.
        candidate: Candidate voxels (crop).
        polarity: ``bright`` or ``dark``: the sign of the contrast.
        opening_radius: Radius of the binary opening applied to the candidates.
        box: Where the crop lies in the full image; ``shape``: the full image's shape.
    """

    def __init__(
        self,
        x: np.ndarray,
        inner: np.ndarray,
        depth_map: np.ndarray | None,
        candidate: np.ndarray | None,
        polarity: str,
        opening_radius: int,
        box: tuple[slice, ...],
        shape: tuple[int, ...],
    ) -> None:
        self.box, self.shape = box, shape
        self.labels = np.zeros(x.shape, dtype=np.int32)
        self.size = self.contrast = self.depth = np.zeros(0)
        if candidate is None or depth_map is None or not candidate.any():
            return
        if opening_radius > 0:
            footprint = disk(opening_radius) if x.ndim == 2 else ball(opening_radius)
            candidate = ndimage.binary_opening(candidate, structure=footprint)
        self.labels, n = ndimage.label(candidate)
        if n == 0:
            return
        flat = self.labels.ravel()
        self.size = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
        mean = np.bincount(flat, weights=x.ravel(), minlength=n + 1)[1:] / self.size
        inside = x[inner]
        sign = 1.0 if polarity == "bright" else -1.0
        self.contrast = sign * (mean - inside.mean()) / (inside.std() or 1.0)
        depth = np.zeros(n + 1)
        hit = flat > 0
        np.maximum.at(depth, flat[hit], depth_map.ravel()[hit])  # ndimage.maximum sorts every voxel
        self.depth = depth[1:]

    def mask(self, min_size: float, min_contrast: float, min_depth: float) -> np.ndarray:
        """Full-size boolean mask of the components that pass the three thresholds."""
        keep = (self.size >= min_size) & (self.contrast >= min_contrast) & (self.depth >= min_depth)
        out = np.zeros(self.shape, dtype=bool)
        out[self.box] = np.isin(self.labels, np.flatnonzero(keep) + 1)
        return out

    def scored(self, target: np.ndarray) -> ComponentScores:
        """Statistics of the components against a full-size reference mask (the labels are not kept)."""
        tp = np.bincount(self.labels.ravel(), weights=target[self.box].ravel(), minlength=len(self.size) + 1)[1:]
        return ComponentScores(self.size, self.contrast, self.depth, tp, int(np.count_nonzero(target)))


class ComponentScores(NamedTuple):
    """Per-component size, contrast, depth and true-positive voxels of one image, and its target size."""

    size: np.ndarray
    contrast: np.ndarray
    depth: np.ndarray
    tp: np.ndarray
    target: int


def grid_search(
    scores: Sequence[ComponentScores], group_ids: np.ndarray, grids: tuple[Sequence[float], ...]
) -> tuple[float, tuple[float, float, float]]:
    """Best mean per-group Dice over the (min_size, min_contrast, min_depth) grid, and those thresholds.

    A group's Dice pools its images' voxel counts (``2 sum TP / (sum |P| + sum |T|)``);
    a group with empty prediction and target scores 1. Ties keep the first (loosest) thresholds.
    """
    n_groups = int(group_ids.max()) + 1
    target = np.bincount(group_ids, weights=[s.target for s in scores], minlength=n_groups)
    comp_group = np.concatenate([np.full(len(s.size), g, dtype=np.int64) for g, s in zip(group_ids, scores)])
    size, contrast, depth, tp = (
        np.concatenate([getattr(s, f) for s in scores]) for f in ("size", "contrast", "depth", "tp")
    )
    best = (-np.inf, (0.0, 0.0, 0.0))
    for min_size in grids[0]:
        for min_contrast in grids[1]:
            passing = (size >= min_size) & (contrast >= min_contrast)
            for min_depth in grids[2]:
                keep = passing & (depth >= min_depth)
                tp_g = np.bincount(comp_group[keep], weights=tp[keep], minlength=n_groups)
                total = np.bincount(comp_group[keep], weights=size[keep], minlength=n_groups) + target
                dice = np.divide(2 * tp_g, total, out=np.ones(n_groups), where=total > 0).mean()
                if dice > best[0] + 1e-12:
                    best = (float(dice), (min_size, min_contrast, min_depth))
    return best
