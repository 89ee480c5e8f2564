"""One rule from a mask file's stored values to the study's target, for every reader of masks.

The deep models' loader (:class:`~tumorbench.transforms.custom.LoadCased`), the classical
baselines (:func:`~tumorbench.baselines.features.read_case`), the native-grid scoring of 2D
models and the explanations all map masks through these two functions, so a model and a
baseline are scored against the same pixels: with lossy JPEG masks (values 1..127 around the
edges), a ``> 0`` in one reader and a cut at 128 in another gave them different truths.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BRATS_REGIONS = ("WT", "TC", "ET")  # nested regions: whole tumour, tumour core, enhancing tumour
EIGHT_BIT_CUT = 128  # 8-bit 2D masks store 0/255 (and lossy JPEG ones values around both)


def stored_labels(array: np.ndarray, fmt: str | None) -> np.ndarray:
    """The labels of a mask's stored values: ``fmt`` is the reader's ``meta["format"]``.

    A 2D image file (PNG, JPEG, TIFF) whose values pass 127 is an 8-bit 0/255 mask: cut at 128
    into 0/1. Every other mask (label PNGs 0/1/2, NIfTI, DICOM SEG) holds its labels as they are.
    """
    if fmt == "image2d" and array.size and array.max() >= EIGHT_BIT_CUT:
        return (array >= EIGHT_BIT_CUT).astype(np.float32)
    return array


def target(labels: np.ndarray, foreground: Sequence[int] | None = None) -> np.ndarray:
    """Booleans: any label (``>= 1``), or only the study's ``foreground`` labels (the tumour of
    organ + tumour masks), as the deep models' ``LabelFilterd`` + threshold at 0.5 map them."""
    rounded = np.rint(labels)
    return np.isin(rounded, list(foreground)) if foreground else rounded >= 1


def brats_label_sets(
    enhancing_label: int = 4, regions: Sequence[Sequence[int]] | None = None
) -> dict[str, tuple[int, ...]]:
    """The labels each nested BraTS region covers: ``{"WT": ..., "TC": ..., "ET": ...}``.

    BraTS' own numbering (1 necrosis, 2 oedema, ``enhancing_label`` 4 up to 2021, 3 from 2023):
    WT = {1, 2, ET}, TC = {1, ET}, ET = {ET}. ``regions`` gives the three sets instead, for maps
    numbered otherwise: the Decathlon's brain tumours and nnU-Net's BraTS (1 oedema, 2 non-enhancing,
    3 enhancing) are WT = {1, 2, 3}, TC = {2, 3}, ET = {3}.
    """
    if regions is not None:
        if len(regions) != len(BRATS_REGIONS) or not all(regions):
            raise ValueError(f"regions: three non-empty label sets (WT, TC, ET), got {regions}")
        return {name: tuple(int(v) for v in labels) for name, labels in zip(BRATS_REGIONS, regions)}
    return {"WT": (1, 2, enhancing_label), "TC": (1, enhancing_label), "ET": (enhancing_label,)}
