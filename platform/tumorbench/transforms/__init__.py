"""MONAI dictionary transform chains built from typed, frozen configs.

A chain reads one case dict (``image``: paths, ``mask``: path or None, ``label``:
class index or None) into channel-first ``MetaTensor`` s and runs, in order:
load (+ RAS reorientation) -> BraTS regions -> resample -> foreground crop ->
resize -> intensity (CT window, denoise, contrast, z-score/min-max) -> [train]
slice/patch sampling -> [train] augmentation -> dtype. Everything before the first
random step is deterministic, so ``CacheDataset`` / ``PersistentDataset`` cache it.

Modules: :mod:`.configs` (frozen configs), :mod:`.custom` (project MapTransforms and
dictionary keys), :mod:`.compose` (:func:`build_transforms`).
"""

from __future__ import annotations

from tumorbench.data.masks import BRATS_REGIONS
from tumorbench.transforms.compose import build_transforms
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

__all__ = [
    "BRATS_REGIONS",
    "IMAGE",
    "LABEL",
    "MASK",
    "AugmentConfig",
    "CLAHEd",
    "ConvertToBratsRegionsd",
    "LoadCased",
    "PreprocessConfig",
    "RandAffineFracd",
    "RandSliceSampled",
    "SamplingConfig",
    "build_transforms",
]
