"""Handcrafted radiomics-style features for the classical classification baselines.

Input design: ``X`` is a sequence of cases, each either an image array or a mapping
``{"image": array, "mask": array | None}`` (other keys, e.g. ``case_id``, are ignored
except to name the case in errors). Images are ``(H, W)`` or channel-first
``(C, H, W)``; masks are ``(H, W)``, nonzero = lesion. :func:`load_feature_inputs`
builds such mappings from catalog rows.

Every image is processed the same way, whatever its size or channel count:

1. Channels: ``channels=None`` averages them into one grey plane (so grey and RGB
   images give vectors of the same length); a tuple of indices keeps those channels
   and computes the intensity and texture groups once per channel.
2. Intensities are scaled to [0, 1] between the image's ``clip_percentiles``.
3. The *region* is the lesion mask when there is a non-empty one and ``use_mask``,
   else the foreground (scaled intensity > ``foreground_threshold``), else the whole
   image. First-order statistics are measured on the region's native pixels.
4. Texture (GLCM, LBP) is measured on the region's bounding box (``crop``) resized to
   ``size`` x ``size``; HOG on that texture image resized to ``hog_size`` x ``hog_size``.
5. Shape comes from the mask at native resolution; zeros and ``shape_has_mask = 0``
   when the case has no (or an empty) mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy import stats
from skimage.feature import graycomatrix, graycoprops, hog, local_binary_pattern
from skimage.measure import regionprops
from skimage.transform import resize
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from tumorbench.data import io
from tumorbench.data.masks import stored_labels, target
from tumorbench.errors import DataError

GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
SHAPE_PROPS = ("area", "perimeter", "eccentricity", "solidity", "extent", "axis_major_length", "axis_minor_length")
_HOG = {"orientations": 9, "pixels_per_cell": (16, 16), "cells_per_block": (2, 2)}
_MIN_REGION = 4  # fewer pixels than this give no meaningful statistics


def quantize(x: np.ndarray, levels: int) -> np.ndarray:
    """Map [0, 1] intensities to ``levels`` grey levels 0..levels-1 (uint8) in equal bins."""
    return np.minimum(np.floor(np.clip(x, 0.0, 1.0) * levels), levels - 1).astype(np.uint8)


def first_order_features(values: np.ndarray, percentiles: Sequence[float], bins: int) -> list[float]:
    """Mean, std, skewness, kurtosis (Fisher, biased), percentiles and histogram entropy (bits).

    The histogram has ``bins`` equal bins over [0, 1].
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    hist = np.histogram(v, bins=bins, range=(0.0, 1.0))[0]
    p = hist[hist > 0] / hist.sum()
    flat = np.ptp(v) == 0  # skewness and kurtosis are undefined for a constant region
    return [
        float(v.mean()),
        float(v.std()),
        0.0 if flat else float(stats.skew(v)),
        0.0 if flat else float(stats.kurtosis(v)),
        *np.percentile(v, percentiles).tolist(),
        float(-(p * np.log2(p)).sum()),
    ]


def glcm_features(q: np.ndarray, distances: Sequence[int], levels: int) -> list[float]:
    """GLCM properties of a quantized image, averaged over 4 angles, per distance.

    Ordered property-major: ``contrast`` at every distance, then ``dissimilarity``...
    """
    matrix = graycomatrix(
        q, distances=list(distances), angles=list(GLCM_ANGLES), levels=levels, symmetric=True, normed=True
    )
    return [float(v) for prop in GLCM_PROPS for v in graycoprops(matrix, prop).mean(axis=1)]


def shape_features(mask: np.ndarray | None) -> list[float]:
    """Area, perimeter, eccentricity, solidity, extent, axis lengths, area fraction, has-mask flag.

    All lesion pixels count as one region (several components are measured together).
    """
    if mask is None or not mask.any():
        return [0.0] * (len(SHAPE_PROPS) + 2)
    props = regionprops(mask.astype(np.uint8))[0]
    values = [float(getattr(props, name)) for name in SHAPE_PROPS]
    return [*values, float(mask.sum()) / mask.size, 1.0]


def _bounding_box(region: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _fit_size(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape == (size, size):
        return x
    return resize(x, (size, size), order=1, anti_aliasing=True, preserve_range=True)


def _case_parts(item: Any, index: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Image (C, H, W) float64, mask (H, W) bool or None, and a name for error messages."""
    if isinstance(item, Mapping):
        label = str(item.get("case_id", item.get("path", f"X[{index}]")))
        image, mask = item.get("image"), item.get("mask")
    else:
        label, image, mask = f"X[{index}]", item, None
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or min(image.shape[1:]) < 2 or image.shape[0] < 1:
        raise DataError(label, f"expected a 2D image (H, W) or (C, H, W), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise DataError(label, "image contains NaN or infinite values")
    if mask is not None:
        mask = np.asarray(mask) != 0
        if mask.shape != image.shape[1:]:
            raise DataError(label, f"mask shape {mask.shape} differs from image shape {image.shape[1:]}")
    return image, mask, label


class HandcraftedFeatures(TransformerMixin, BaseEstimator):
    """First-order, GLCM, LBP, HOG and shape features of 2D images, as one fixed-length vector.

    Stateless: ``fit`` only validates the parameters and fixes the feature names, so the
    features of a case can be computed once and reused (see ``FeatureCache``).

    Args:
        first_order: Intensity statistics of the region.
        glcm: Grey-level co-occurrence properties (contrast, dissimilarity, homogeneity,
            energy, correlation, ASM; mean of 4 angles) at each of ``glcm_distances``.
        lbp: Histogram of uniform local binary patterns (``lbp_points``, ``lbp_radius``).
        hog: Histogram of oriented gradients of the ``hog_size`` image.
        shape: Lesion shape from the mask.
        channels: ``None`` for the channel mean, or a tuple of channel indices.
        size: Side of the square image texture is measured on.
        hog_size: Side of the square image HOG is measured on (a multiple of 16, at least 32).
        glcm_levels: Grey levels of the quantized image (2..256).
        glcm_distances: Pixel offsets of the co-occurrence matrices.
        lbp_points: Neighbours of each LBP code.
        lbp_radius: Radius of the LBP circle.
        hist_bins: Histogram bins of the intensity entropy.
        percentiles: Intensity percentiles reported (0-100).
        clip_percentiles: Low and high percentile mapped to 0 and 1.
        foreground_threshold: Scaled intensity above which a pixel is foreground.
        use_mask: Measure intensity and texture inside the mask when there is one.
        crop: Measure texture on the region's bounding box rather than the whole image.
        n_jobs: Parallel jobs for ``transform`` (joblib semantics).
    """

    def __init__(
        self,
        first_order: bool = True,
        glcm: bool = True,
        lbp: bool = True,
        hog: bool = True,
        shape: bool = True,
        channels: tuple[int, ...] | None = None,
        size: int = 128,
        hog_size: int = 64,
        glcm_levels: int = 32,
        glcm_distances: tuple[int, ...] = (1, 2, 4),
        lbp_points: int = 8,
        lbp_radius: float = 1.0,
        hist_bins: int = 32,
        percentiles: tuple[float, ...] = (10, 25, 50, 75, 90),
        clip_percentiles: tuple[float, float] = (1.0, 99.0),
        foreground_threshold: float = 0.05,
        use_mask: bool = True,
        crop: bool = True,
        n_jobs: int | None = None,
    ) -> None:
        self.first_order = first_order
        self.glcm = glcm
        self.lbp = lbp
        self.hog = hog
        self.shape = shape
        self.channels = channels
        self.size = size
        self.hog_size = hog_size
        self.glcm_levels = glcm_levels
        self.glcm_distances = glcm_distances
        self.lbp_points = lbp_points
        self.lbp_radius = lbp_radius
        self.hist_bins = hist_bins
        self.percentiles = percentiles
        self.clip_percentiles = clip_percentiles
        self.foreground_threshold = foreground_threshold
        self.use_mask = use_mask
        self.crop = crop
        self.n_jobs = n_jobs

    def _check_params(self) -> None:
        if not any((self.first_order, self.glcm, self.lbp, self.hog, self.shape)):
            raise ValueError("HandcraftedFeatures: every feature group is switched off")
        if self.channels is not None and (len(self.channels) == 0 or min(self.channels) < 0):
            raise ValueError(f"channels must be None or non-negative indices, got {self.channels!r}")
        if self.size < 8 or self.hog_size < 32 or self.hog_size % 16:
            raise ValueError(f"size must be >= 8 and hog_size a multiple of 16 >= 32, got {self.size}, {self.hog_size}")
        if not 2 <= self.glcm_levels <= 256 or not self.glcm_distances or min(self.glcm_distances) < 1:
            raise ValueError("glcm_levels must be in 2..256 and glcm_distances positive")
        low, high = self.clip_percentiles
        if not 0 <= low < high <= 100 or any(not 0 <= p <= 100 for p in self.percentiles):
            raise ValueError(f"percentiles must lie in 0..100 (clip low < high), got {self.clip_percentiles}")
        if self.hist_bins < 2 or self.lbp_points < 1 or self.lbp_radius <= 0:
            raise ValueError("hist_bins >= 2, lbp_points >= 1 and lbp_radius > 0 are required")

    def _names(self) -> list[str]:
        plane: list[str] = []
        if self.first_order:
            plane += [
                "first_order_mean",
                "first_order_std",
                "first_order_skewness",
                "first_order_kurtosis",
                *(f"first_order_p{p:g}" for p in self.percentiles),
                "first_order_entropy",
            ]
        if self.glcm:
            plane += [f"glcm_{prop}_d{d}" for prop in GLCM_PROPS for d in self.glcm_distances]
        if self.lbp:
            plane += [f"lbp_{k}" for k in range(self.lbp_points + 2)]
        if self.hog:
            (cell, _), (block, _) = _HOG["pixels_per_cell"], _HOG["cells_per_block"]
            blocks = self.hog_size // cell - block + 1  # block positions per axis
            plane += [f"hog_{k}" for k in range(blocks * blocks * block * block * _HOG["orientations"])]
        names = plane if self.channels is None else [f"ch{c}_{n}" for c in self.channels for n in plane]
        if self.shape:
            names += [f"shape_{n}" for n in (*SHAPE_PROPS, "area_fraction", "has_mask")]
        return names

    def fit(self, X: Sequence[Any] | None = None, y: Any = None) -> HandcraftedFeatures:
        """Validate the parameters and fix the feature names; nothing is learnt from X."""
        self._check_params()
        self.feature_names_out_ = np.asarray(self._names(), dtype=object)
        return self

    def transform(self, X: Sequence[Any]) -> np.ndarray:
        """Return the ``(len(X), n_features)`` float64 feature matrix."""
        check_is_fitted(self, "feature_names_out_")
        items = list(X)
        if self.n_jobs in (None, 1) or len(items) < 8:
            rows = [self._one(item, i) for i, item in enumerate(items)]
        else:
            rows = Parallel(n_jobs=self.n_jobs)(delayed(self._one)(item, i) for i, item in enumerate(items))
        out = np.asarray(rows, dtype=np.float64).reshape(len(items), len(self.feature_names_out_))
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns (``ch<k>_`` prefixed per channel when ``channels`` is set)."""
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()

    def _one(self, item: Any, index: int) -> list[float]:
        image, mask, label = _case_parts(item, index)
        if self.channels is None:
            planes = [image.mean(axis=0)]
        else:
            if max(self.channels) >= image.shape[0]:
                raise DataError(label, f"channels {self.channels} requested, the image has {image.shape[0]}")
            planes = [image[c] for c in self.channels]
        values = [v for plane in planes for v in self._plane(plane, mask)]
        return values + (shape_features(mask) if self.shape else [])

    def _scale(self, plane: np.ndarray) -> np.ndarray:
        low, high = np.percentile(plane, self.clip_percentiles)
        if high <= low:
            return np.zeros_like(plane)
        return np.clip((plane - low) / (high - low), 0.0, 1.0)

    def _region(self, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        if self.use_mask and mask is not None and mask.sum() >= _MIN_REGION:
            return mask
        foreground = x > self.foreground_threshold
        return foreground if foreground.sum() >= _MIN_REGION else np.ones_like(foreground)

    def _plane(self, plane: np.ndarray, mask: np.ndarray | None) -> list[float]:
        x = self._scale(plane)
        region = self._region(x, mask)
        out: list[float] = []
        if self.first_order:
            out += first_order_features(x[region], self.percentiles, self.hist_bins)
        if not (self.glcm or self.lbp or self.hog):
            return out
        # One anti-aliased resize of the (possibly large) box; HOG's smaller image comes from it.
        texture = _fit_size(x[_bounding_box(region)] if self.crop else x, self.size)
        if self.glcm:
            out += glcm_features(quantize(texture, self.glcm_levels), self.glcm_distances, self.glcm_levels)
        if self.lbp:
            codes = local_binary_pattern(quantize(texture, 256), self.lbp_points, self.lbp_radius, "uniform")
            n = self.lbp_points + 2
            out += (np.bincount(codes.astype(np.int64).ravel(), minlength=n)[:n] / codes.size).tolist()
        if self.hog:
            out += hog(_fit_size(texture, self.hog_size), **_HOG, feature_vector=True).tolist()
        return out


# ----------------------------------------------------------------------------- catalog rows


def as_records(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Catalog rows (a DataFrame or mappings) as a list of plain dicts."""
    if isinstance(rows, pd.DataFrame):
        return rows.to_dict("records")
    return [dict(r) for r in rows]


def _spatial(image: io.ImageData) -> np.ndarray:
    """Channel-first array of one file: (C, H, W) images, (C, I, J, K) volumes."""
    if image.meta.get("format") == "image2d":
        return image.array
    return image.array[None] if image.array.ndim == 3 else np.moveaxis(image.array, -1, 0)


def read_case(
    row: Mapping[str, Any], *, with_mask: bool = True, foreground: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray | None, tuple]:
    """Read one catalog row: channel-first image, binary mask (or None) and spacing.

    2D images come back ``(C, H, W)``; NIfTI and DICOM volumes ``(C, I, J, K)``,
    reoriented to RAS so that the last axis runs inferior -> superior (axial slices).
    All channel files of a case must share one spatial shape, and so must the mask;
    a mask is mapped to its target as the deep models' loader maps it
    (:mod:`tumorbench.data.masks`: any label, or the study's ``preprocess.foreground_labels``).
    """
    arrays, spacing = [], ()
    for path in row["image"]:
        data = io.read_image(path, canonical=True)
        array = _spatial(data)
        if arrays and array.shape[1:] != arrays[0].shape[1:]:
            first = arrays[0].shape[1:]
            raise DataError(path, f"shape {array.shape[1:]} differs from the case's first channel {first}")
        arrays.append(array)
        spacing = spacing or tuple(float(s) for s in data.spacing)
    image = np.concatenate(arrays, axis=0).astype(np.float32, copy=False)
    mask_path = row.get("mask")
    if not with_mask or not isinstance(mask_path, str):
        return image, None, spacing
    mask_data = io.read_image(mask_path, canonical=True)
    mask_array = _spatial(mask_data)
    if mask_array.shape[1:] != image.shape[1:]:
        raise DataError(mask_path, f"mask shape {mask_array.shape[1:]} differs from image shape {image.shape[1:]}")
    labels = stored_labels(mask_array, mask_data.meta.get("format"))
    return image, target(labels, foreground).any(axis=0), spacing


def axial_slice(image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The axial slice of a ``(C, I, J, K)`` volume with the largest mask area (middle one without tumour)."""
    depth = image.shape[-1]
    k = int(np.argmax(mask.sum(axis=(0, 1)))) if mask is not None and mask.any() else depth // 2
    return image[..., k], None if mask is None else mask[..., k], k


def load_feature_inputs(
    frame_rows: pd.DataFrame | Iterable[Mapping[str, Any]], *, with_masks: bool = True
) -> list[dict[str, Any]]:
    """Read catalog rows into :class:`HandcraftedFeatures` inputs.

    2D layouts (image-folder, lgg, lidc) give their image as is. A 3D volume (brats,
    msd, dicom) is reduced to one axial slice: the one with the largest lesion area when
    the case has a non-empty mask, else the middle slice (``slice_index`` records it).

    Args:
        frame_rows: Catalog rows (DataFrame or mappings with ``case_id``, ``image``, ``mask``).
        with_masks: Read the masks; switch off where the mask defines the label
            (tumour presence), or the features would leak it.

    Returns:
        One ``{"case_id", "image" (C, H, W), "mask" (H, W) bool or None, "slice_index"}`` per row.
    """
    inputs = []
    for row in as_records(frame_rows):
        image, mask, _ = read_case(row, with_mask=with_masks)
        k = None
        if image.ndim == 4:
            image, mask, k = axial_slice(image, mask)
        inputs.append({"case_id": row["case_id"], "image": image, "mask": mask, "slice_index": k})
    return inputs
