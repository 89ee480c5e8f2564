"""Typed, frozen configs of the transform chains: preprocessing, augmentation, sampling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal


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
        label_map: ``brats`` turns BraTS label maps into WT/TC/ET channels; ``binary`` makes every
            non-zero label foreground (the whole tumor of a BraTS label map); ``none`` keeps the
            labels as stored (sigmoid training refuses masks outside {0, 1}).
        enhancing_label: BraTS enhancing-tumour label (4 up to 2021, 3 in 2023) when a
            case carries no ``enhancing_label`` of its own.
        regions: With ``label_map="brats"``, the labels of WT, TC and ET for maps not in BraTS'
            numbering, e.g. ``((1, 2, 3), (2, 3), (3,))`` for the Decathlon's brain tumours
            (1 oedema, 2 non-enhancing, 3 enhancing) and nnU-Net's BraTS; None: BraTS' own.
        foreground_labels: The stored mask labels that are the target (others become
            background), e.g. ``(2,)`` for the tumour of organ + tumour masks (LiTS, KiTS,
            MSD liver / pancreas); the mask is then binary. None: every non-zero label
            under ``label_map="binary"``.
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
    label_map: Literal["none", "brats", "binary"] = "none"
    enhancing_label: int = 4
    foreground_labels: tuple[int, ...] | None = None
    regions: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        _tuples(self, "ct_window", "spacing", "spatial_size", "foreground_labels")
        choices = {
            "normalize": ("zscore", "minmax", "ct_window", "none"),
            "denoise": ("none", "gaussian", "median"),
            "contrast": ("none", "clahe", "histeq"),
            "label_map": ("none", "brats", "binary"),
        }
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
        if self.regions is not None:  # lists when the config crossed processes as a dict
            regions = tuple(tuple(sorted({int(v) for v in labels})) for labels in self.regions)
            if self.label_map != "brats" or len(regions) != 3 or not all(r and min(r) >= 1 for r in regions):
                raise ValueError(
                    f"regions must be three sets of labels >= 1 (WT, TC, ET) with label_map 'brats', got {self.regions}"
                )
            object.__setattr__(self, "regions", regions)
        if self.foreground_labels is not None:
            labels = self.foreground_labels
            if not labels or any(int(v) != v or v < 1 for v in labels) or self.label_map == "brats":
                raise ValueError(f"foreground_labels must be labels >= 1 (not with label_map 'brats'), got {labels}")
            object.__setattr__(self, "foreground_labels", tuple(sorted({int(v) for v in labels})))


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
        return self.prob > 0 and any(
            (
                self.rotate_deg,
                self.translate_frac,
                self.scale,
                self.flip_axes,
                self.intensity_shift,
                self.intensity_scale,
                self.noise_std,
            )
        )


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
