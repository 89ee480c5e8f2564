"""Project MapTransforms (case loading, BraTS regions, CLAHE, slice sampling) and dictionary keys."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.utils import convert_to_dst_type, convert_to_numpy
from skimage.exposure import equalize_adapthist

from tumorbench.data.image import grid_problem
from tumorbench.data.io import read_image
from tumorbench.data.masks import brats_label_sets, stored_labels
from tumorbench.errors import DataError

IMAGE, MASK, LABEL = "image", "mask", "label"
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class LoadCased(mt.MapTransform):
    """Read a case's image channels and mask into channel-first ``MetaTensor`` s.

    Single-channel files are stacked as channels; a multi-channel 2D file gives its
    own channels. 0/255 2D masks become {0, 1}; other masks keep integer labels.
    Image channels and mask must share voxel grid and affine, else :class:`DataError`.
    A ``None`` mask/label key is dropped so batches collate.
    """

    def __init__(
        self,
        image_key: str = IMAGE,
        mask_key: str | None = MASK,
        *,
        spatial_dims: int = 2,
        canonical: bool = True,
        channels: int | None = None,
        label_key: str = LABEL,
    ) -> None:
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
            raise DataError(
                path,
                f"volume of shape {arr.shape} where a 2D image is expected; use spatial_dims=3 "
                "(with slice2d sampling for 2D models)",
            )
        if arr.ndim not in (3, 4):
            raise DataError(path, f"unsupported volume shape {arr.shape}")
        return (arr[None] if arr.ndim == 3 else np.moveaxis(arr, -1, 0)), data.affine, fmt

    @staticmethod
    def _check_grid(path: str, shape: tuple, affine: np.ndarray, ref: tuple[str, tuple, np.ndarray], what: str) -> None:
        ref_path, ref_shape, ref_affine = ref
        problem = grid_problem(what, shape[1:], affine, ref_shape[1:], ref_affine, ref_path)
        if problem:
            raise DataError(path, problem)

    def _load_image(self, paths: list[str], series_uid: str | None) -> tuple[MetaTensor, tuple]:
        arrays, ref = [], None
        for path in paths:
            arr, affine, _ = self._read(path, series_uid)
            if ref is None:
                ref = (path, arr.shape, affine)
            else:
                self._check_grid(path, arr.shape, affine, ref, "image channel")
            arrays.append(arr)
        image = MetaTensor(
            self._fit_channels(np.concatenate(arrays), paths[0]).astype(np.float32),
            affine=torch.as_tensor(ref[2], dtype=torch.float64),
            meta={"filename_or_obj": paths[0]},
        )
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
        arr = stored_labels(arr, fmt)  # 8-bit 0/255 masks (and lossy JPEG ones) cut at 128
        if not np.allclose(arr, np.rint(arr), atol=1e-3):
            raise DataError(path, "mask holds non-integer values; expected a label map")
        self._check_grid(path, arr.shape, affine, ref, "mask")
        return MetaTensor(
            np.rint(arr).astype(np.float32),
            affine=torch.as_tensor(affine, dtype=torch.float64),
            meta={"filename_or_obj": path},
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        raw = d.get(self.image_key)
        paths = (
            [str(raw)] if isinstance(raw, (str, bytes)) or hasattr(raw, "__fspath__") else [str(p) for p in raw or ()]
        )
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
    """Label map -> WT/TC/ET channels (:func:`~tumorbench.data.masks.brats_label_sets`).

    BraTS numbering (1 necrosis, 2 oedema, ET enhancing): WT = {1, 2, ET}, TC = {1, ET}, ET = {ET}.
    ``enhancing_label`` is 4 (2018-2021) or 3 (2023); a case's own ``enhancing_label_key`` entry,
    when present, wins. ``regions`` gives the three label sets of maps numbered otherwise (the
    Decathlon's and nnU-Net's brain tumours: WT = {1, 2, 3}, TC = {2, 3}, ET = {3}).
    """

    def __init__(
        self,
        keys: KeysCollection,
        enhancing_label: int = 4,
        *,
        regions: tuple[tuple[int, ...], ...] | None = None,
        enhancing_label_key: str | None = "enhancing_label",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.enhancing_label, self.enhancing_label_key = enhancing_label, enhancing_label_key
        self.regions = regions

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        case_label = d.get(self.enhancing_label_key) if self.enhancing_label_key else None
        et = self.enhancing_label if _missing(case_label) else int(case_label)
        sets = brats_label_sets(et, self.regions)
        for key in self.key_iterator(d):
            if d[key].shape[0] != 1:
                raise ValueError(
                    f"{key}: BraTS regions need a single-channel label map, got shape {tuple(d[key].shape)}"
                )
            labels = torch.as_tensor(d[key]).round()  # (1, ...): MONAI's LabelToMask, one region per channel
            channels = [mt.LabelToMask(list(v), merge_channels=True)(labels) for v in sets.values()]
            d[key] = convert_to_dst_type(torch.cat(channels).float(), d[key], dtype=torch.float32)[0]
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

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = MASK,
        pos_fraction: float = 0.5,
        num_samples: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
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
                (-self.translate_frac * s, self.translate_frac * s) for s in shape
            )
        return super().__call__(data, lazy=lazy)
