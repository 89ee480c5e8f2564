"""The batched request path: 2D preprocessing and its inverse run on whole batches in the model deployment.

The ingress only decodes and lays out an upload (channel-first ``float32``, channels fitted)
into a :class:`RawInput`; the model deployment then resizes, normalizes, runs the forward
pass and maps the answers back for the whole batch at once, with plain torch
ops equal to the package's MONAI chain (``Resized`` with anti-aliasing = MONAI's
``GaussianFilter`` then ``interpolate``; ``NormalizeIntensityd`` / ``ScaleIntensityd`` /
``ScaleIntensityRanged`` channel-wise) instead of per-request ``MetaTensor`` bookkeeping.
Packages whose chain has more (spacing, cropping, denoising, contrast, 3D) take the
per-request path of :mod:`tumorbench.inference`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tumorbench.inference import Predictor
from tumorbench.results import SegmentationResult, measure_mask
from tumorbench.transforms import PreprocessConfig


@dataclass(frozen=True, eq=False)
class RawInput:
    """One decoded 2D upload before resizing and normalization.

    Attributes:
        array: ``(C, H, W)``, channels as the model takes them: ``uint8`` when every value is one
            (8-bit PNG / JPEG pixels: a quarter of the bytes to ship to the model), else ``float32``.
        spacing: Millimetres per axis of ``(H, W)``.
        spacing_known: False when the format carries no spacing (1 mm assumed).
        input_format: ``image2d`` or ``dicom``.
    """

    array: np.ndarray
    spacing: tuple[float, float]
    spacing_known: bool
    input_format: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[1:])


MAX_VALUES = 4 * 1024**2  # larger laid-out uploads (16 MB as float32) are resized in the ingress, not shipped


def supported(config: PreprocessConfig, data_dims: int) -> bool:
    """Whether a package's preprocessing is one the batched path reproduces exactly."""
    return (
        data_dims == 2
        and config.spacing is None
        and not config.crop_foreground
        and config.denoise == "none"
        and config.contrast == "none"
    )


def raw_input(preprocessor: Any, image: Any) -> RawInput:
    """Lay out a decoded image as the package's loader would (:meth:`Preprocessor.layout`)."""
    array, _, spacing, known = preprocessor.layout(image)
    return RawInput(compact(array), tuple(spacing), known, str(image.meta.get("format", "")))


def compact(array: np.ndarray) -> np.ndarray:
    """``array`` as ``uint8`` when that holds every value exactly, else ``float32``."""
    if array.dtype == np.uint8:  # decoded as 8-bit pixels (read_upload(dtype=None)): nothing to check
        return np.ascontiguousarray(array)
    with np.errstate(invalid="ignore"):  # a value the cast wraps or truncates compares unequal below
        small = np.ascontiguousarray(array, dtype=np.uint8)
    if small is array or np.array_equal(small, array):
        return small
    return np.ascontiguousarray(array, dtype=np.float32)


class BatchPath:
    """Preprocess, forward and restore a batch of :class:`RawInput` for one :class:`Predictor`."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.config = predictor.preprocessor.config
        self.size = tuple(self.config.spatial_size) if self.config.spatial_size else None

    @torch.no_grad()
    def run(self, inputs: Sequence[RawInput]) -> list[torch.Tensor]:
        """Foreground maps at each input's own size, or class probabilities; inputs grouped by shape."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(inputs):
            groups.setdefault(item.shape, []).append(i)
        out: list[torch.Tensor] = [torch.empty(0)] * len(inputs)
        for shape, indices in groups.items():
            batch = torch.from_numpy(np.stack([inputs[i].array for i in indices]))
            probs = self.predictor._forward(self.preprocess(batch).to(self.predictor.device)).float().cpu()
            if probs.ndim == 4 and tuple(probs.shape[2:]) != shape:  # the inverse of Resized: linear, no smoothing
                probs = F.interpolate(probs, size=shape, mode="bilinear", align_corners=False)
            for i, p in zip(indices, probs):
                out[i] = p
        return out

    @torch.no_grad()
    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> the model input, as the package's validation chain makes it per image."""
        if self.size is not None and tuple(batch.shape[2:]) != self.size:
            batch = resize_antialiased(batch, self.size)
        return normalize(batch, self.config)

    def finish(self, item: RawInput, probabilities: torch.Tensor, threshold: float) -> Any:
        """The result of one input from its restored probabilities (as :meth:`Predictor.postprocess`)."""
        if probabilities.ndim == 1:
            return self.predictor._classification(probabilities.numpy().astype(float), threshold)
        return segmentation_result(self.predictor, item, probabilities.numpy(), threshold)


def segmentation_result(predictor: Predictor, item: RawInput, probs: np.ndarray, threshold: float) -> Any:
    mask = (probs > threshold).astype(np.uint8)
    unit = float(np.prod(item.spacing))
    names = predictor.manifest.channel_names or (
        ["tumor"] if len(mask) == 1 else [f"channel{c}" for c in range(len(mask))]
    )
    regions = [{"name": n, **measure_mask(channel, unit, "area_mm2")} for n, channel in zip(names, mask)]
    return SegmentationResult(mask, np.eye(4), item.spacing, item.spacing_known, threshold, regions)


def resize_antialiased(batch: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """MONAI ``Resize(mode="bilinear", anti_aliasing=True)`` on a whole ``(N, C, H, W)`` batch.

    Gaussian smoothing (zero padded) and bilinear sampling are both separable and linear, so the
    whole resize is ``A_rows @ X @ A_cols.T`` with one small matrix per axis: far cheaper than
    smoothing every input pixel when only a few output pixels are needed.
    """
    rows, cols = (_resize_matrix(n, m) for n, m in zip(batch.shape[2:], size))
    return rows @ batch.float() @ cols.T


@functools.lru_cache(maxsize=64)  # (m, n) floats each: small
def _resize_matrix(n: int, m: int) -> torch.Tensor:
    """``(m, n)``: one axis of MONAI's anti-aliased linear resize from ``n`` to ``m`` samples."""
    from monai.networks.layers.convutils import gaussian_1d

    # Rows of the identity, resized along the axis: column j of the result weighs output j.
    interp = F.interpolate(torch.eye(n)[:, None, :], size=m, mode="linear", align_corners=False)[:, 0, :].T
    if n <= m:  # MONAI smooths only the axes it shrinks, with skimage's sigma (factor - 1) / 2
        return interp.contiguous()
    kernel = gaussian_1d(torch.tensor((n / m - 1) / 2), truncated=4.0, approx="erf").float()
    # interp @ (zero-padded convolution matrix) = each interpolation row convolved with the symmetric kernel
    smoothed = F.conv1d(interp[:, None, :], kernel.view(1, 1, -1), padding=(len(kernel) - 1) // 2)
    return smoothed[:, 0, :].contiguous()


def normalize(batch: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """The chain's intensity step, channel-wise on ``(N, C, ...)``, as MONAI computes it per image."""
    batch = batch.float()
    flat = batch.flatten(2)
    if config.normalize == "ct_window":
        level, width = config.ct_window
        return ((batch - (level - width / 2)) / width).clamp(0.0, 1.0)
    if config.normalize == "minmax":  # MONAI's rescale_array: a constant channel becomes 0
        low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
        span = high - low
        out = torch.where(span > 0, (flat - low) / torch.where(span > 0, span, 1.0), torch.zeros_like(flat))
        return out.view_as(batch)
    if config.normalize == "zscore":  # over nonzero voxels; zeros stay 0; std 0 -> 1
        nonzero = flat != 0
        count = nonzero.sum(-1, keepdim=True).clamp(min=1)
        mean = (flat * nonzero).sum(-1, keepdim=True) / count
        var = (((flat - mean) * nonzero) ** 2).sum(-1, keepdim=True) / count
        std = var.sqrt()
        std = torch.where(std == 0, torch.ones_like(std), std)
        return torch.where(nonzero, (flat - mean) / std, flat).view_as(batch)
    return batch
