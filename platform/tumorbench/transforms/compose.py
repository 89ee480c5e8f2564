"""Assemble the transform chain of one split from the configs (:func:`build_transforms`)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai import transforms as mt
from monai.config import KeysCollection

from tumorbench.transforms.configs import AugmentConfig, PreprocessConfig, SamplingConfig
from tumorbench.transforms.custom import (
    IMAGE,
    LABEL,
    MASK,
    CLAHEd,
    ConvertToBratsRegionsd,
    LoadCased,
    RandAffineFracd,
    RandSliceSampled,
)

_FG = "_foreground"  # temporary single-channel crop guide for patch3d


class _UnionForegroundd(mt.MapTransform):
    """Store, under ``out_key``, a one-channel map of voxels that are nonzero in any mask channel."""

    def __init__(self, keys: KeysCollection, out_key: str) -> None:
        super().__init__(keys)
        self.out_key = out_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.out_key] = (d[key] != 0).any(dim=0, keepdim=True).to(torch.uint8)
        return d


def _above_minimum(x: Any) -> Any:
    return x > x.min()  # module level (not a lambda) so the chain pickles for workers and disk caches


def _intensity(pre: PreprocessConfig) -> list:
    steps: list = []
    if pre.normalize == "ct_window":  # first, while values are still HU
        level, width = pre.ct_window
        steps.append(mt.ScaleIntensityRanged(IMAGE, level - width / 2, level + width / 2, 0.0, 1.0, clip=True))
    if pre.denoise == "gaussian":
        steps.append(mt.GaussianSmoothd(IMAGE, sigma=pre.denoise_sigma))
    elif pre.denoise == "median":
        steps.append(mt.MedianSmoothd(IMAGE, radius=pre.median_radius))
    if pre.contrast == "clahe":
        steps.append(CLAHEd(IMAGE, clip_limit=pre.clahe_clip))
    elif pre.contrast == "histeq":
        steps.append(mt.HistogramNormalized(IMAGE, min=0, max=1))
    if pre.normalize == "zscore":
        steps.append(mt.NormalizeIntensityd(IMAGE, nonzero=True, channel_wise=True))
    elif pre.normalize == "minmax":
        steps.append(mt.ScaleIntensityd(IMAGE, minv=0.0, maxv=1.0, channel_wise=True))
    return steps


def _preprocess(pre: PreprocessConfig, dims: int, keys: list[str], slice2d: bool) -> list:
    with_mask = MASK in keys
    steps: list = [
        LoadCased(IMAGE, MASK if with_mask else None, spatial_dims=dims, canonical=pre.canonical, channels=pre.channels)
    ]
    if pre.label_map == "brats" and with_mask:
        steps.append(ConvertToBratsRegionsd(MASK, pre.enhancing_label, regions=pre.regions))
    elif (pre.label_map == "binary" or pre.foreground_labels) and with_mask:
        if pre.foreground_labels:  # the target labels only (the tumour, not its organ): others -> 0
            steps.append(mt.LabelFilterd(MASK, applied_labels=list(pre.foreground_labels)))
        steps.append(mt.ThresholdIntensityd(MASK, threshold=0.5, above=False, cval=1.0))  # labels >= 1 -> 1
    modes = ["bilinear", "nearest"][: len(keys)]
    if pre.spacing is not None:
        # scale_extent: keep the field of view (voxel edges), so 2 mm -> 1 mm doubles the shape
        steps.append(mt.Spacingd(keys, pixdim=pre.spacing, mode=modes, scale_extent=True, align_corners=True))
    if pre.crop_foreground:
        steps.append(
            mt.CropForegroundd(keys, IMAGE, select_fn=_above_minimum, start_coord_key=None, end_coord_key=None)
        )
    if pre.spatial_size is not None:
        size = tuple(pre.spatial_size) + ((-1,) if slice2d and len(pre.spatial_size) == 2 else ())
        linear = "bilinear" if dims == 2 else "trilinear"
        steps.append(
            mt.Resized(
                keys,
                size,
                mode=[linear, "nearest"][: len(keys)],
                align_corners=[False, None][: len(keys)],
                anti_aliasing=[True, False][: len(keys)],
            )
        )
    return steps + _intensity(pre)


def _sampling(sampling: SamplingConfig, keys: list[str]) -> list:
    if sampling.mode == "slice2d":
        steps: list = [RandSliceSampled(keys, MASK, sampling.pos_fraction, sampling.num_samples)]
        if sampling.patch_size is not None:
            steps.append(mt.ResizeWithPadOrCropd(keys, sampling.patch_size))
        return steps
    # multi-channel region masks: MONAI would treat channel 0 as background, so crop on their union
    return [
        mt.SpatialPadd(keys, sampling.patch_size),
        _UnionForegroundd(MASK, _FG),
        mt.RandCropByPosNegLabeld(
            [*keys, _FG],
            _FG,
            sampling.patch_size,
            pos=sampling.pos_fraction,
            neg=1.0 - sampling.pos_fraction,
            num_samples=sampling.num_samples,
        ),
        mt.DeleteItemsd(_FG),
    ]


def _augment(aug: AugmentConfig, keys: list[str], dims: int) -> list:
    bad = [a for a in aug.flip_axes if a >= dims]
    if bad:
        raise ValueError(f"flip_axes {bad} out of range for {dims}D samples")
    steps: list = []
    if aug.rotate_deg or aug.translate_frac or aug.scale:
        rotate = math.radians(aug.rotate_deg)
        steps.append(
            RandAffineFracd(
                keys,
                aug.translate_frac,
                prob=aug.prob,
                rotate_range=(rotate,) * (1 if dims == 2 else 3) if rotate else None,
                scale_range=(aug.scale,) * dims if aug.scale else None,
                mode=["bilinear", "nearest"][: len(keys)],
                padding_mode="zeros",
            )
        )
    steps += [mt.RandFlipd(keys, prob=aug.prob, spatial_axis=axis) for axis in aug.flip_axes]
    if aug.intensity_shift:
        steps.append(mt.RandShiftIntensityd(IMAGE, offsets=aug.intensity_shift, prob=aug.prob))
    if aug.intensity_scale:
        steps.append(mt.RandScaleIntensityd(IMAGE, factors=aug.intensity_scale, prob=aug.prob))
    if aug.noise_std:
        steps.append(mt.RandGaussianNoised(IMAGE, prob=aug.prob, std=aug.noise_std))
    return steps


def build_transforms(
    pre: PreprocessConfig,
    aug: AugmentConfig | None = None,
    *,
    spatial_dims: int = 2,
    with_mask: bool = True,
    train: bool = False,
    sampling: SamplingConfig | None = None,
    seed: int | None = None,
) -> mt.Compose:
    """Build the chain for one split.

    Args:
        pre: Deterministic preprocessing.
        aug: Augmentation, applied only when ``train``.
        spatial_dims: Dimensionality of the stored images (2 for PNG/JPEG, 3 for volumes).
        with_mask: Load ``mask`` (required by sampling and segmentation).
        train: Add sampling and augmentation. Validation/test chains have no random
            step and return whole images/volumes (for sliding-window or per-slice inference).
        sampling: How to draw training samples from volumes (needs ``spatial_dims=3``).
        seed: Seeds every random transform (``Compose.set_random_state``).

    Returns:
        A ``Compose`` mapping a case dict to ``image`` (float32, C x spatial), ``mask``
        (float32 with integer values; WT/TC/ET channels under ``label_map="brats"``)
        and ``label`` (int64) when the case has one; sampling yields a list of such dicts.
    """
    sampling = sampling or SamplingConfig()
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if sampling.mode != "none" and (spatial_dims != 3 or not with_mask):
        raise ValueError(f"{sampling.mode} sampling needs 3D inputs (spatial_dims=3) with masks (with_mask=True)")
    slice2d = sampling.mode == "slice2d"
    for name, value, lengths in (
        ("spacing", pre.spacing, (spatial_dims,)),
        ("spatial_size", pre.spatial_size, (2, 3) if slice2d else (spatial_dims,)),
    ):
        if value is not None and len(value) not in lengths:
            raise ValueError(f"{name} {value} does not fit {spatial_dims}D inputs")
    keys = [IMAGE, MASK] if with_mask else [IMAGE]
    steps = _preprocess(pre, spatial_dims, keys, slice2d)
    if train:
        steps += _sampling(sampling, keys) if sampling.mode != "none" else []
        if aug is not None and aug.active:
            steps += _augment(aug, keys, 2 if slice2d else spatial_dims)
    steps.append(mt.EnsureTyped(keys, dtype=torch.float32))
    steps.append(mt.EnsureTyped(LABEL, dtype=torch.long, track_meta=False, allow_missing_keys=True))
    chain = mt.Compose(steps)
    if seed is not None:
        chain.set_random_state(seed=seed)
    return chain
