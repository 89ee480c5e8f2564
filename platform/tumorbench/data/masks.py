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
