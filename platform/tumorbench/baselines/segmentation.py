"""Classical segmentation baselines: multi-level Otsu and k-means inside the body mask.

Both segmenters take channel-first images, ``(C, H, W)`` slices or ``(C, I, J, K)``
volumes (a 2-dim array is one grey channel; a 3-dim array is always a 2D image with
channels), and return boolean masks of the spatial shape. Per image:

1. The body mask: voxels of the (smoothed) chosen channel above ``foreground_level`` of
   its 1-99 percentile range, largest connected component, holes filled. Depth is a voxel's
   (chessboard) distance to the body's edge divided by the largest such distance (0 at
   the edge, 1 at the centre); the ``rim`` (depth below it: scalp and skull of images that were
   not skull-stripped, like the LGG slices) is left out of the next steps.
2. Candidate voxels inside the rim: the brightest (or darkest) Otsu class or k-means cluster.
3. A binary opening (``opening_radius``), then connected components, each kept when it
   has at least ``min_size`` voxels, a contrast (mean intensity minus the mean inside
   the rim, in standard deviations, sign-flipped for dark lesions) of at least
   ``min_contrast``, and a largest depth of at least ``min_depth``.

``fit`` learns whatever is left as ``None`` / ``"auto"``: the channel, the polarity and
the three component thresholds, by exhaustive search for the best mean training Dice
(per group when ``groups`` is given: patients' pooled Dice over their slices, the
per-volume Dice of Buda et al. for LGG). Only the
component statistics depend on the thresholds, so the search costs one thresholding
per image and channel.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_multiotsu, threshold_otsu
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import ThreadpoolController

from tumorbench.baselines.regions import Components, body_mask, bounding_box, grid_search, relative_depth
from tumorbench.errors import DataError

POLARITIES = ("bright", "dark")
MIN_SIZE_GRID = (0, 16, 32, 64, 128, 256, 512, 1024)
MIN_CONTRAST_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
MIN_DEPTH_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def _channels_first(image: Any, name: str) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim not in (3, 4) or 0 in array.shape:
        raise DataError(name, f"expected (H, W), (C, H, W) or (C, I, J, K), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(name, "image contains NaN or infinite values")
    return array


class _ThresholdSegmenter(BaseEstimator):
    """Shared fit / predict of the segmenters; subclasses propose candidate voxels."""

    def _candidates(self, x: np.ndarray, region: np.ndarray) -> dict[str, np.ndarray] | None:
        """Bright and dark candidate voxels inside ``region``, or None when it cannot be split."""
        raise NotImplementedError

    def _check_params(self) -> None:
        if self.polarity not in ("auto", *POLARITIES):
            raise ValueError(f"polarity must be auto, bright or dark, got {self.polarity!r}")
        if self.opening_radius < 0 or not 0 <= self.foreground_level < 1 or not 0 <= self.rim < 1:
            raise ValueError("opening_radius must be >= 0, foreground_level and rim in [0, 1)")

    def _grids(self) -> tuple[Sequence[float], ...]:
        return tuple(
            g if v is None else (v,)
            for v, g in (
                (self.min_size, MIN_SIZE_GRID),
                (self.min_contrast, MIN_CONTRAST_GRID),
                (self.min_depth, MIN_DEPTH_GRID),
            )
        )

    def _components(self, x: np.ndarray) -> dict[str, Components]:
        shape, body = x.shape, body_mask(x, self.foreground_level)
        if not body.any():
            full = tuple(slice(None) for _ in shape)
            return {pol: Components(x, body, None, None, pol, 0, full, shape) for pol in POLARITIES}
        box = bounding_box(body)  # everything below runs on the body's box only
        x, body = x[box], body[box]
        depth = relative_depth(body)
        # The rim (scalp and skull when not skull-stripped) is left out of the thresholds and the candidates.
        inner = depth >= self.rim if self.rim > 0 else body
        candidates = self._candidates(x, inner) if inner.sum() > 1 else None
        return {
            pol: Components(
                x, inner, depth, None if candidates is None else candidates[pol], pol, self.opening_radius, box, shape
            )
            for pol in POLARITIES
        }

    def fit(self, X: Sequence[Any], y: Sequence[Any] | None = None, groups: Sequence[Any] | None = None):
        """Learn channel, polarity and component thresholds from images and their masks.

        Args:
            X: Images, or ``(image, mask)`` pairs when ``y`` is None.
            y: Binary masks of the images' spatial shapes.
            groups: Patient of each image: Dice is pooled per patient before averaging.
        """
        self._check_params()
        pairs = list(X) if y is None else list(zip(X, y))
        if not pairs:
            raise ValueError("fit needs at least one (image, mask) pair")
        images = [_channels_first(img, f"X[{i}]") for i, (img, _) in enumerate(pairs)]
        masks = [np.asarray(m) != 0 for _, m in pairs]
        for i, (img, m) in enumerate(zip(images, masks)):
            if m.shape != img.shape[1:]:
                raise DataError(f"y[{i}]", f"mask shape {m.shape} differs from image shape {img.shape[1:]}")
        n_channels = min(img.shape[0] for img in images)
        group_ids = np.unique(
            np.asarray(groups if groups is not None else np.arange(len(images)), dtype=str), return_inverse=True
        )[1].ravel()
        if len(group_ids) != len(images):
            raise ValueError(f"groups: {len(group_ids)} groups for {len(images)} images")
        channels = range(n_channels) if self.channel is None else [self.channel]
        polarities = POLARITIES if self.polarity == "auto" else (self.polarity,)
        best: tuple = (-np.inf,)
        for c in channels:
            if c >= n_channels:
                raise ValueError(f"channel {c} requested, the images have {n_channels}")
            scores: dict[str, list] = {pol: [] for pol in polarities}
            for img, m in zip(images, masks):
                comps = self._components(img[c])
                for pol in polarities:
                    scores[pol].append(comps[pol].scored(m))
            for pol in polarities:
                score, thresholds = grid_search(scores[pol], group_ids, self._grids())
                if score > best[0]:
                    best = (score, c, pol, thresholds)
        self.train_score_, self.channel_, self.polarity_, thresholds = best
        self.min_size_, self.min_contrast_, self.min_depth_ = (float(t) for t in thresholds)
        self.n_channels_ = n_channels
        return self

    def predict(self, X: Sequence[Any]) -> list[np.ndarray]:
        """Boolean lesion masks, one per image, of the images' spatial shapes."""
        check_is_fitted(self, "channel_")
        out = []
        for i, image in enumerate(X):
            array = _channels_first(image, f"X[{i}]")
            if array.shape[0] <= self.channel_:
                raise DataError(f"X[{i}]", f"channel {self.channel_} learnt, the image has {array.shape[0]}")
            comps = self._components(array[self.channel_])[self.polarity_]
            out.append(comps.mask(self.min_size_, self.min_contrast_, self.min_depth_))
        return out

    def fitted_params(self) -> dict[str, Any]:
        """What ``fit`` chose, as plain values (for reports)."""
        check_is_fitted(self, "channel_")
        return {
            "channel": int(self.channel_),
            "polarity": self.polarity_,
            "min_size": self.min_size_,
            "min_contrast": self.min_contrast_,
            "min_depth": self.min_depth_,
            "train_dice": self.train_score_,
        }


class OtsuSegmenter(_ThresholdSegmenter):
    """Otsu thresholding inside the rim; the brightest (or darkest) class is the lesion.

    Args:
        classes: Otsu classes; 2 is classic Otsu, 3 or more multi-level Otsu (better for
            hyperintense lesions, whose class then excludes the normal tissue).
        channel: Channel to threshold; None learns the best one.
        polarity: ``bright``, ``dark`` or ``auto`` (learnt).
        min_size: Smallest component kept (voxels); None learns it.
        min_contrast: Smallest component contrast (standard deviations); None learns it.
        min_depth: Smallest largest-depth of a component (0-1, see the module); None learns it.
        opening_radius: Radius of the binary opening of the candidates (0: none).
        foreground_level: Body threshold as a fraction of the 1-99 percentile range.
        rim: Depth below which voxels are never lesion (0: none; skull-stripped volumes
            such as BraTS lose lesion voxels at the brain's edge with the default).
    """

    def __init__(
        self,
        classes: int = 3,
        channel: int | None = None,
        polarity: str = "auto",
        min_size: float | None = None,
        min_contrast: float | None = None,
        min_depth: float | None = None,
        opening_radius: int = 1,
        foreground_level: float = 0.1,
        rim: float = 0.15,
    ) -> None:
        self.classes = classes
        self.channel = channel
        self.polarity = polarity
        self.min_size = min_size
        self.min_contrast = min_contrast
        self.min_depth = min_depth
        self.opening_radius = opening_radius
        self.foreground_level = foreground_level
        self.rim = rim

    def _check_params(self) -> None:
        super()._check_params()
        if self.classes < 2:
            raise ValueError(f"classes must be at least 2, got {self.classes}")

    def _candidates(self, x: np.ndarray, region: np.ndarray) -> dict[str, np.ndarray] | None:
        values = x[region]
        if np.ptp(values) == 0:
            return None
        try:
            t = threshold_multiotsu(values, classes=self.classes) if self.classes > 2 else [threshold_otsu(values)]
        except ValueError:  # too few distinct intensities for this many classes
            return None
        return {"bright": region & (x > t[-1]), "dark": region & (x <= t[0])}


@functools.cache
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()  # scanning the loaded libraries costs ~20 ms: once per process


class KMeansSegmenter(_ThresholdSegmenter):
    """K-means on intensities inside the rim (and a smoothed intensity); the brightest (darkest) cluster is the lesion.

    Centres start evenly spaced over the (0.5-99.5 percentile) feature range, so results are deterministic.

    Args:
        n_clusters: Clusters of the voxels inside the rim.
        smooth_sigma: Gaussian sigma of the second, smoothed-intensity feature (0: intensity only).
        max_samples: Voxels the centres are fitted on (all voxels are then assigned).
        random_state: Seed of the voxel sample.
        channel, polarity, min_size, min_contrast, min_depth, opening_radius, foreground_level, rim:
            As for :class:`OtsuSegmenter`.
    """

    def __init__(
        self,
        n_clusters: int = 3,
        smooth_sigma: float = 1.0,
        max_samples: int = 5000,
        random_state: int = 0,
        channel: int | None = None,
        polarity: str = "auto",
        min_size: float | None = None,
        min_contrast: float | None = None,
        min_depth: float | None = None,
        opening_radius: int = 1,
        foreground_level: float = 0.1,
        rim: float = 0.15,
    ) -> None:
        self.n_clusters = n_clusters
        self.smooth_sigma = smooth_sigma
        self.max_samples = max_samples
        self.random_state = random_state
        self.channel = channel
        self.polarity = polarity
        self.min_size = min_size
        self.min_contrast = min_contrast
        self.min_depth = min_depth
        self.opening_radius = opening_radius
        self.foreground_level = foreground_level
        self.rim = rim

    def _check_params(self) -> None:
        super()._check_params()
        if self.n_clusters < 2 or self.max_samples < self.n_clusters or self.smooth_sigma < 0:
            raise ValueError("n_clusters >= 2, max_samples >= n_clusters and smooth_sigma >= 0 are required")

    def _candidates(self, x: np.ndarray, region: np.ndarray) -> dict[str, np.ndarray] | None:
        features = x[region][:, None].astype(np.float64)
        if self.smooth_sigma > 0:
            features = np.column_stack([features, ndimage.gaussian_filter(x, self.smooth_sigma)[region]])
        if len(features) < self.n_clusters or np.ptp(features[:, 0]) == 0:
            return None
        rng = np.random.default_rng(self.random_state)
        sample = features[rng.choice(len(features), min(len(features), self.max_samples), replace=False)]
        # Centres spread evenly over the intensity range rather than over quantiles: a small
        # bright lesion would otherwise share its quantile centre with the normal tissue.
        low, high = np.quantile(sample, (0.005, 0.995), axis=0)
        init = np.linspace(low, high, self.n_clusters)
        if len(np.unique(sample[:, 0])) < self.n_clusters or high[0] <= low[0]:
            return None  # fewer distinct intensity levels than clusters
        # One image is a tiny problem: OpenMP threads only add start-up and contention costs.
        with _threadpools().limit(limits=1):
            kmeans = KMeans(n_clusters=self.n_clusters, init=init, n_init=1).fit(sample)
            assigned = kmeans.predict(features)
        order = np.argsort(kmeans.cluster_centers_[:, 0])
        out = {}
        for pol, cluster in (("bright", order[-1]), ("dark", order[0])):
            mask = np.zeros(x.shape, dtype=bool)
            mask[region] = assigned == cluster
            out[pol] = mask
        return out


SEGMENTERS: Mapping[str, type[_ThresholdSegmenter]] = {"otsu": OtsuSegmenter, "kmeans": KMeansSegmenter}


def make_segmenter(method: str, **params: Any) -> _ThresholdSegmenter:
    """Build ``otsu`` or ``kmeans`` with the given parameters."""
    if method not in SEGMENTERS:
        raise ValueError(f"unknown segmentation method {method!r}; choose one of {', '.join(SEGMENTERS)}")
    return SEGMENTERS[method](**params)
