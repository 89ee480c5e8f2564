"""MONAI dictionary transform chains built from typed, frozen configs.

A chain reads one case dict (``image``: paths, ``mask``: path or None, ``label``:
class index or None) into channel-first ``MetaTensor`` s and runs, in order:
load (+ RAS reorientation) -> BraTS regions -> resample -> foreground crop ->
resize -> intensity (CT window, denoise, contrast, z-score/min-max) -> [train]
slice/patch sampling -> [train] augmentation -> dtype. Everything before the first
random step is deterministic, so ``CacheDataset`` / ``PersistentDataset`` cache it.

Modules: :mod:`.configs` (frozen configs), :mod:`.custom` (project MapTransforms and
dictionary keys), :mod:`.compose` (:func:`build_transforms`).

Only the configs load with the package. The transforms, and MONAI with them (~3 s of CPU), load on
first use: a Tune trial and Train's controller read configs (``training.config``) in processes of
their own, one set per trial, and never build a chain.
"""

from __future__ import annotations

import importlib
from typing import Any

from tumorbench.transforms.configs import AugmentConfig, PreprocessConfig, SamplingConfig

_LAZY = {
    "BRATS_REGIONS": "tumorbench.data.masks",
    "build_transforms": "tumorbench.transforms.compose",
    **{
        name: "tumorbench.transforms.custom"
        for name in (
            "IMAGE",
            "LABEL",
            "MASK",
            "CLAHEd",
            "ConvertToBratsRegionsd",
            "LoadCased",
            "RandAffineFracd",
            "RandSliceSampled",
        )
    },
}


def __getattr__(name: str) -> Any:  # PEP 562: the transforms bring MONAI and torch, loaded when first asked for
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


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
