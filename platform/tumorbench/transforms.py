"""MONAI dictionary transform chains built from typed, frozen configs.

A chain reads one case dict (``image``: paths, ``mask``: path or None, ``label``:
class index or None) into channel-first ``MetaTensor`` s and runs, in order:
load (+ RAS reorientation) -> BraTS regions -> resample -> foreground crop ->
resize -> intensity (CT window, denoise, contrast, z-score/min-max) -> [train]
slice/patch sampling -> [train] augmentation -> dtype. Everything before the first
random step is deterministic, so ``CacheDataset`` / ``PersistentDataset`` cache it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from monai import transforms as mt
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.utils import convert_to_dst_type, convert_to_numpy
from skimage.exposure import equalize_adapthist

from tumorbench.data.io import read_image
from tumorbench.errors import DataError

IMAGE, MASK, LABEL = "image", "mask", "label"
BRATS_REGIONS = ("WT", "TC", "ET")  # channel order, as in tumorbench.evaluation.metrics
_AFFINE_TOLERANCE_MM = 1e-2
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_FG = "_foreground"  # temporary single-channel crop guide for patch3d


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _tuples(config: Any, *names: str) -> None:
    # YAML / JSON / Tune hand over lists; frozen configs must stay hashable
    for name in names:
        value = getattr(config, name)
        if value is not None and not isinstance(value, tuple):
            object.__setattr__(config, name, tuple(value))


def _positive(name: str, values: Sequence[float] | None, lengths: tuple[int, ...] = (2, 3)) -> None:
    if values is not None and (len(values) not in lengths or any(not v > 0 for v in values)):
        raise ValueError(f"{name} must be {' or '.join(map(str, lengths))} positive numbers, got {values}")


@dataclass(frozen=True)
class PreprocessConfig:
    """Deterministic preprocessing.

    Args:
        normalize: ``zscore`` (per channel, over nonzero voxels; background stays 0),
            ``minmax`` (per channel to [0, 1]), ``ct_window`` or ``none``.
        ct_window: (level, width) in HU; ``ct_window`` maps it to [0, 1], clipped.
        denoise: ``gaussian`` (sigma in voxels), ``median`` (radius in voxels) or ``none``.
        contrast: ``clahe`` (per channel, after min-max scaling), ``histeq`` or ``none``.
        spacing: Target voxel size in mm (masks resampled with nearest neighbour).
        crop_foreground: Crop image and mask to the box of voxels above the image minimum.
        spatial_size: Final size, reached by resizing (image linear with anti-aliasing,
            mask nearest); resizing keeps the whole field of view, which a classifier
            needs. With slice2d sampling a 2-tuple resizes in-plane only.
        canonical: Reorient 3D volumes and their masks to RAS.
        channels: Force this many image channels, for sets mixing grey and colour files:
            one channel is repeated, RGB becomes grey (ITU-R 601 luma, as Pillow's "L").
        label_map: ``brats`` turns BraTS label maps into WT/TC/ET channels.
        enhancing_label: BraTS enhancing-tumour label (4 up to 2021, 3 in 2023) when a
            case carries no ``enhancing_label`` of its own.
    """

    normalize: Literal["zscore", "minmax", "ct_window", "none"] = "zscore"
    ct_window: tuple[float, float] = (-600.0, 1500.0)
    denoise: Literal["none", "gaussian", "median"] = "none"
    denoise_sigma: float = 0.5
    median_radius: int = 1
    contrast: Literal["none", "clahe", "histeq"] = "none"
    clahe_clip: float = 0.01
    spacing: tuple[float, ...] | None = None
    crop_foreground: bool = False
    spatial_size: tuple[int, ...] | None = None
    canonical: bool = True
    channels: int | None = None
    label_map: Literal["none", "brats"] = "none"
    enhancing_label: int = 4

    def __post_init__(self) -> None:
        _tuples(self, "ct_window", "spacing", "spatial_size")
        choices = {"normalize": ("zscore", "minmax", "ct_window", "none"), "denoise": ("none", "gaussian", "median"),
                   "contrast": ("none", "clahe", "histeq"), "label_map": ("none", "brats")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if len(self.ct_window) != 2 or not self.ct_window[1] > 0:
            raise ValueError(f"ct_window must be (level, width) with width > 0, got {self.ct_window}")
        if not self.denoise_sigma > 0 or self.median_radius < 1:
            raise ValueError("denoise_sigma must be > 0 and median_radius >= 1")
        if not 0 < self.clahe_clip <= 1:
            raise ValueError(f"clahe_clip must be in (0, 1], got {self.clahe_clip}")
        _positive("spacing", self.spacing)
        _positive("spatial_size", self.spatial_size)
        if self.spatial_size is not None:
            if any(int(s) != s for s in self.spatial_size):
                raise ValueError(f"spatial_size must be integers, got {self.spatial_size}")
            object.__setattr__(self, "spatial_size", tuple(int(s) for s in self.spatial_size))
        if self.channels is not None and self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.enhancing_label in (0, 1, 2):
            raise ValueError(f"enhancing_label cannot be 0, 1 or 2, got {self.enhancing_label}")


_PRESETS = {  # rotate_deg, translate_frac, scale, intensity_shift, intensity_scale, noise_std, prob
    "none": (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "light": (10.0, 0.05, 0.05, 0.05, 0.05, 0.0, 0.3),
    "medium": (15.0, 0.1, 0.1, 0.1, 0.1, 0.02, 0.5),
    "strong": (30.0, 0.15, 0.2, 0.2, 0.2, 0.05, 0.7),
}


@dataclass(frozen=True)
class AugmentConfig:
    """Random training augmentation; every transform fires with probability ``prob``.

    Args:
        rotate_deg: Max rotation (degrees) about every axis.
        translate_frac: Max shift as a fraction of each spatial size.
        scale: Max relative zoom (0.1 -> 0.9..1.1).
        flip_axes: Spatial axes (0-based, channel excluded) flipped independently.
        intensity_shift / intensity_scale: Max additive offset / relative gain.
        noise_std: Gaussian noise std (sampled in [0, noise_std]).
        prob: Probability of each random transform.
    """

    rotate_deg: float = 0.0
    translate_frac: float = 0.0
    scale: float = 0.0
    flip_axes: tuple[int, ...] = ()
    intensity_shift: float = 0.0
    intensity_scale: float = 0.0
    noise_std: float = 0.0
    prob: float = 0.5

    def __post_init__(self) -> None:
        _tuples(self, "flip_axes")
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {self.prob}")
        if not 0.0 <= self.rotate_deg <= 180.0:
            raise ValueError(f"rotate_deg must be in [0, 180], got {self.rotate_deg}")
        for name in ("translate_frac", "scale", "intensity_scale"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.intensity_shift < 0 or self.noise_std < 0:
            raise ValueError("intensity_shift and noise_std must be >= 0")
        if any(int(a) != a or a < 0 for a in self.flip_axes) or len(set(self.flip_axes)) != len(self.flip_axes):
            raise ValueError(f"flip_axes must be distinct non-negative ints, got {self.flip_axes}")
        object.__setattr__(self, "flip_axes", tuple(int(a) for a in self.flip_axes))

    @classmethod
    def preset(cls, strength: Literal["none", "light", "medium", "strong"], *, spatial_dims: int = 2) -> AugmentConfig:
        """A named strength (for Tune sweeps); flips mirror every axis, as nnU-Net does."""
        if strength not in _PRESETS:
            raise ValueError(f"augmentation strength must be one of {tuple(_PRESETS)}, got {strength!r}")
        rot, trans, scale, shift, gain, noise, prob = _PRESETS[strength]
        flips = () if strength == "none" else tuple(range(spatial_dims))
        return cls(rot, trans, scale, flips, shift, gain, noise, prob)

    @property
    def active(self) -> bool:
        return self.prob > 0 and any((self.rotate_deg, self.translate_frac, self.scale, self.flip_axes,
                                      self.intensity_shift, self.intensity_scale, self.noise_std))


@dataclass(frozen=True)
class SamplingConfig:
    """Training-time sampling of a 3D case.

    Args:
        mode: ``slice2d`` (axial slices of the last voxel axis, RAS superior after
            canonicalization), ``patch3d`` (random patches) or ``none``.
        patch_size: patch3d: the 3D patch size (required). slice2d: optional (H, W)
            each slice is centre-padded/cropped to.
        pos_fraction: Probability that a sample holds mask foreground.
        num_samples: Samples drawn per case; the case then yields a list.
    """

    mode: Literal["none", "slice2d", "patch3d"] = "none"
    patch_size: tuple[int, ...] | None = None
    pos_fraction: float = 0.5
    num_samples: int = 1

    def __post_init__(self) -> None:
        _tuples(self, "patch_size")
        if self.mode not in ("none", "slice2d", "patch3d"):
            raise ValueError(f"sampling mode must be none, slice2d or patch3d, got {self.mode!r}")
        if self.mode == "patch3d" and (self.patch_size is None or len(self.patch_size) != 3):
            raise ValueError(f"patch3d needs a 3D patch_size, got {self.patch_size}")
        if self.mode == "slice2d" and self.patch_size is not None and len(self.patch_size) != 2:
            raise ValueError(f"slice2d patch_size must be (H, W), got {self.patch_size}")
        _positive("patch_size", self.patch_size)
        if not 0.0 <= self.pos_fraction <= 1.0 or self.num_samples < 1:
            raise ValueError("pos_fraction must be in [0, 1] and num_samples >= 1")


class LoadCased(mt.MapTransform):
    """Read a case's image channels and mask into channel-first ``MetaTensor`` s.

    Single-channel files are stacked as channels; a multi-channel 2D file gives its
    own channels. 0/255 2D masks become {0, 1}; other masks keep integer labels.
    Image channels and mask must share voxel grid and affine, else :class:`DataError`.
    A ``None`` mask/label key is dropped so batches collate.
    """

    def __init__(self, image_key: str = IMAGE, mask_key: str | None = MASK, *, spatial_dims: int = 2,
                 canonical: bool = True, channels: int | None = None, label_key: str = LABEL) -> None:
        super().__init__([image_key] + ([mask_key] if mask_key else []))
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.image_key, self.mask_key, self.label_key = image_key, mask_key, label_key
        self.spatial_dims, self.canonical, self.channels = spatial_dims, canonical, channels

    def _read(self, path: str, series_uid: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        data = read_image(path, canonical=self.canonical and self.spatial_dims == 3, series_uid=series_uid)
        arr, fmt = data.array, data.meta.get("format", "")
        if fmt == "image2d":
            if self.spatial_dims != 2:
                raise DataError(path, "2D image where a 3D volume is expected (spatial_dims=3)")
            return arr, data.affine, fmt
        if self.spatial_dims != 3:
            raise DataError(path, f"volume of shape {arr.shape} where a 2D image is expected; use spatial_dims=3 "
                                  "(with slice2d sampling for 2D models)")
        if arr.ndim not in (3, 4):
            raise DataError(path, f"unsupported volume shape {arr.shape}")
        return (arr[None] if arr.ndim == 3 else np.moveaxis(arr, -1, 0)), data.affine, fmt

    @staticmethod
    def _check_grid(path: str, shape: tuple, affine: np.ndarray, ref: tuple[str, tuple, np.ndarray], what: str) -> None:
        ref_path, ref_shape, ref_affine = ref
        if tuple(shape[1:]) != tuple(ref_shape[1:]):
            raise DataError(path, f"{what} shape {tuple(shape[1:])} does not match shape {tuple(ref_shape[1:])} of {ref_path}")
        if not np.allclose(affine, ref_affine, atol=_AFFINE_TOLERANCE_MM):
            raise DataError(path, f"{what} voxel-to-world affine differs from that of {ref_path}; it would be misaligned")

    def _load_image(self, paths: list[str], series_uid: str | None) -> tuple[MetaTensor, tuple]:
        arrays, ref = [], None
        for path in paths:
            arr, affine, _ = self._read(path, series_uid)
            if ref is None:
                ref = (path, arr.shape, affine)
            else:
                self._check_grid(path, arr.shape, affine, ref, "image channel")
            arrays.append(arr)
        image = MetaTensor(self._fit_channels(np.concatenate(arrays), paths[0]).astype(np.float32), affine=torch.as_tensor(ref[2], dtype=torch.float64),
                           meta={"filename_or_obj": paths[0]})
        return image, ref

    def _fit_channels(self, arr: np.ndarray, path: str) -> np.ndarray:
        if self.channels is None or arr.shape[0] == self.channels:
            return arr
        if arr.shape[0] == 1:
            return np.repeat(arr, self.channels, axis=0)
        if arr.shape[0] == 3 and self.channels == 1:
            return np.tensordot(_LUMA, arr, axes=1)[None]
        raise DataError(path, f"has {arr.shape[0]} channels, cannot make {self.channels}")

    def _load_mask(self, path: str, ref: tuple) -> MetaTensor:
        arr, affine, fmt = self._read(path)
        if arr.shape[0] > 1:
            if not all(np.array_equal(arr[0], c) for c in arr[1:]):
                raise DataError(path, f"mask has {arr.shape[0]} differing channels; expected one label map")
            arr = arr[:1]
        if fmt == "image2d" and arr.size and arr.max() > 127:
            arr = (arr >= 128).astype(np.float32)  # 8-bit 0/255 masks (and lossy JPEG ones)
        if not np.allclose(arr, np.rint(arr), atol=1e-3):
            raise DataError(path, "mask holds non-integer values; expected a label map")
        self._check_grid(path, arr.shape, affine, ref, "mask")
        return MetaTensor(np.rint(arr).astype(np.float32), affine=torch.as_tensor(affine, dtype=torch.float64),
                          meta={"filename_or_obj": path})

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        raw = d.get(self.image_key)
        paths = [str(raw)] if isinstance(raw, (str, bytes)) or hasattr(raw, "__fspath__") else [str(p) for p in raw or ()]
        if not paths:
            raise DataError(str(d.get("case_id", "<case>")), "case has no image paths")
        d[self.image_key], ref = self._load_image(paths, d.pop("series_uid", None))
        if self.mask_key is not None:
            if _missing(d.get(self.mask_key)):
                raise DataError(paths[0], "case has no mask but masks were requested (with_mask=True)")
            d[self.mask_key] = self._load_mask(str(d[self.mask_key]), ref)
        else:
            d.pop(MASK, None)
        label = d.get(self.label_key)
        if _missing(label):
            d.pop(self.label_key, None)
        elif isinstance(label, (int, np.integer)) or (isinstance(label, float) and label.is_integer()):
            d[self.label_key] = int(label)
        else:
            raise DataError(paths[0], f"label {label!r} is not a class index (map names with cases_from_catalog)")
        return d


class ConvertToBratsRegionsd(mt.MapTransform):
    """BraTS label map (1 necrosis, 2 edema, ET enhancing) -> WT/TC/ET channels.

    WT = {1, 2, ET}, TC = {1, ET}, ET = {ET}. ``enhancing_label`` is 4 (2018-2021) or
    3 (2023); a case's own ``enhancing_label_key`` entry, when present, wins.
    """

    def __init__(self, keys: KeysCollection, enhancing_label: int = 4, *,
                 enhancing_label_key: str | None = "enhancing_label", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.enhancing_label, self.enhancing_label_key = enhancing_label, enhancing_label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        case_label = d.get(self.enhancing_label_key) if self.enhancing_label_key else None
        et = self.enhancing_label if _missing(case_label) else int(case_label)
        for key in self.key_iterator(d):
            if d[key].shape[0] != 1:
                raise ValueError(f"{key}: BraTS regions need a single-channel label map, got shape {tuple(d[key].shape)}")
            tc_wt_et = mt.ConvertToMultiChannelBasedOnBratsClasses(et_label=et)(d[key][0])  # MONAI order TC, WT, ET
            regions = tc_wt_et[[1, 0, 2]].float()
            d[key] = convert_to_dst_type(regions, d[key], dtype=torch.float32)[0]
        return d


class CLAHEd(mt.MapTransform):
    """Per-channel CLAHE (``skimage.exposure.equalize_adapthist``) after min-max scaling to [0, 1]."""

    def __init__(self, keys: KeysCollection, clip_limit: float = 0.01, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.clip_limit = clip_limit

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            arr = convert_to_numpy(d[key]).astype(np.float64)
            out = np.zeros_like(arr)
            for c, channel in enumerate(arr):
                lo, hi = channel.min(), channel.max()
                if hi > lo:  # a constant channel carries no contrast to equalize
                    out[c] = equalize_adapthist((channel - lo) / (hi - lo), clip_limit=self.clip_limit)
            d[key] = convert_to_dst_type(out, d[key], dtype=torch.float32)[0]
        return d


def _take_slice(img: Any, k: int) -> Any:
    if not isinstance(img, MetaTensor):
        return img[..., k]
    affine = img.affine.clone()
    affine[:3, 3] += affine[:3, 2] * k  # the slice's own origin, so Spacing/inverse stay meaningful
    meta = {key: value for key, value in img.meta.items() if key != "affine"}
    return MetaTensor(img.as_tensor()[..., k].clone(), affine=affine, meta=meta)


class RandSliceSampled(mt.Randomizable, mt.MapTransform):
    """Draw 2D slices along the last spatial axis of (C, I, J, K) arrays.

    With probability ``pos_fraction`` a slice is drawn from those with foreground in
    ``label_key`` (any channel), otherwise from the empty ones; if one kind is absent
    the other is used. Returns a list of ``num_samples`` dicts with ``slice_index``.
    """

    def __init__(self, keys: KeysCollection, label_key: str = MASK, pos_fraction: float = 0.5,
                 num_samples: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key, self.pos_fraction, self.num_samples = label_key, pos_fraction, num_samples
        self._indices: list[int] = []

    def randomize(self, positive: np.ndarray) -> None:
        pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
        self._indices = []
        for _ in range(self.num_samples):
            want_pos = self.R.rand() < self.pos_fraction
            pool = pos if (want_pos and pos.size) or not neg.size else neg
            self._indices.append(int(self.R.choice(pool)))

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        label = convert_to_numpy(d[self.label_key])
        if label.ndim != 4:
            raise ValueError(f"slice2d sampling needs (C, I, J, K) volumes, got {self.label_key} shape {label.shape}")
        self.randomize(label.reshape(-1, label.shape[-1]).any(axis=0))
        samples = []
        for k in self._indices:
            sample = dict(d)
            for key in self.key_iterator(d):
                sample[key] = _take_slice(d[key], k)
            sample["slice_index"] = k
            samples.append(sample)
        return samples


class RandAffineFracd(mt.RandAffined):
    """``RandAffined`` whose translation is a fraction of each input's spatial size."""

    def __init__(self, keys: KeysCollection, translate_frac: float = 0.0, **kwargs: Any) -> None:
        super().__init__(keys, **kwargs)
        self.translate_frac = translate_frac

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        if self.translate_frac:
            shape = data[self.first_key(dict(data))].shape[1:]
            self.rand_affine.rand_affine_grid.translate_range = tuple(
                (-self.translate_frac * s, self.translate_frac * s) for s in shape)
        return super().__call__(data, lazy=lazy)


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
    steps: list = [LoadCased(IMAGE, MASK if with_mask else None, spatial_dims=dims, canonical=pre.canonical,
                             channels=pre.channels)]
    if pre.label_map == "brats" and with_mask:
        steps.append(ConvertToBratsRegionsd(MASK, pre.enhancing_label))
    modes = ["bilinear", "nearest"][: len(keys)]
    if pre.spacing is not None:
        # scale_extent: keep the field of view (voxel edges), so 2 mm -> 1 mm doubles the shape
        steps.append(mt.Spacingd(keys, pixdim=pre.spacing, mode=modes, scale_extent=True, align_corners=True))
    if pre.crop_foreground:
        steps.append(mt.CropForegroundd(keys, IMAGE, select_fn=_above_minimum, start_coord_key=None, end_coord_key=None))
    if pre.spatial_size is not None:
        size = tuple(pre.spatial_size) + ((-1,) if slice2d and len(pre.spatial_size) == 2 else ())
        linear = "bilinear" if dims == 2 else "trilinear"
        steps.append(mt.Resized(keys, size, mode=[linear, "nearest"][: len(keys)],
                                align_corners=[False, None][: len(keys)], anti_aliasing=[True, False][: len(keys)]))
    return steps + _intensity(pre)


def _sampling(sampling: SamplingConfig, keys: list[str]) -> list:
    if sampling.mode == "slice2d":
        steps: list = [RandSliceSampled(keys, MASK, sampling.pos_fraction, sampling.num_samples)]
        if sampling.patch_size is not None:
            steps.append(mt.ResizeWithPadOrCropd(keys, sampling.patch_size))
        return steps
    # multi-channel region masks: MONAI would treat channel 0 as background, so crop on their union
    return [mt.SpatialPadd(keys, sampling.patch_size), _UnionForegroundd(MASK, _FG),
            mt.RandCropByPosNegLabeld([*keys, _FG], _FG, sampling.patch_size, pos=sampling.pos_fraction,
                                      neg=1.0 - sampling.pos_fraction, num_samples=sampling.num_samples),
            mt.DeleteItemsd(_FG)]


def _augment(aug: AugmentConfig, keys: list[str], dims: int) -> list:
    bad = [a for a in aug.flip_axes if a >= dims]
    if bad:
        raise ValueError(f"flip_axes {bad} out of range for {dims}D samples")
    steps: list = []
    if aug.rotate_deg or aug.translate_frac or aug.scale:
        rotate = math.radians(aug.rotate_deg)
        steps.append(RandAffineFracd(
            keys, aug.translate_frac, prob=aug.prob, rotate_range=(rotate,) * (1 if dims == 2 else 3) if rotate else None,
            scale_range=(aug.scale,) * dims if aug.scale else None, mode=["bilinear", "nearest"][: len(keys)],
            padding_mode="zeros"))
    steps += [mt.RandFlipd(keys, prob=aug.prob, spatial_axis=axis) for axis in aug.flip_axes]
    if aug.intensity_shift:
        steps.append(mt.RandShiftIntensityd(IMAGE, offsets=aug.intensity_shift, prob=aug.prob))
    if aug.intensity_scale:
        steps.append(mt.RandScaleIntensityd(IMAGE, factors=aug.intensity_scale, prob=aug.prob))
    if aug.noise_std:
        steps.append(mt.RandGaussianNoised(IMAGE, prob=aug.prob, std=aug.noise_std))
    return steps


def build_transforms(pre: PreprocessConfig, aug: AugmentConfig | None = None, *, spatial_dims: int = 2,
                     with_mask: bool = True, train: bool = False, sampling: SamplingConfig | None = None,
                     seed: int | None = None) -> mt.Compose:
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
    for name, value, lengths in (("spacing", pre.spacing, (spatial_dims,)),
                                 ("spatial_size", pre.spatial_size, (2, 3) if slice2d else (spatial_dims,))):
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
