"""What the released-set conversions (``tumorbench data figshare | mias | cbis-ddsm | medmnist | lidc-idri``) share:
their summary (:class:`Written`), a process pool that names bad files instead of stopping (:func:`in_processes`),
and the class-folder writer most of them write with.

The writer makes the ``image-folder`` layout as BUSI ships it: ``<class>/<name>.png``, its mask beside it
(``<name>_mask.png``, 0/255), and ``patients.csv`` mapping each image to a pseudonym (``<prefix>-001``, in the
order first met), so the images of one patient share a fold and no source ID is written.
"""

from __future__ import annotations

import csv
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Written:
    """What a conversion wrote: images, patients, images per class (a command's summary adds its own counts)."""

    images: int = 0
    patients: int = 0
    classes: Counter = field(default_factory=Counter)


def in_processes(function: Callable[[Any], Any], jobs: Iterable, workers: int) -> Iterator:
    """``function`` of each job, in order; ``workers`` > 1: in that many processes (spawned: no forked threads).
    ``function`` returns a problem rather than raising it, so that one bad file does not stop the others."""
    if workers <= 1:
        yield from map(function, jobs)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(function, jobs, chunksize=2)


def to_uint16(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """The image as 16-bit values: unchanged when they are integers in 0..65535, else scaled to that range."""
    if np.array_equal(image, np.rint(image)) and image.min() >= 0 and image.max() <= 65535:
        return image.astype(np.uint16), False
    low, span = float(image.min()), float(np.ptp(image))
    scaled = np.zeros(image.shape) if span == 0 else (image - low) * (65535 / span)
    return np.rint(scaled).astype(np.uint16), True


class ClassFolderWriter:
    """Writes images, masks and ``patients.csv`` (on :meth:`close`, last: a set is complete once it is there)."""

    def __init__(
        self, out: str | Path, prefix: str, pseudonyms: dict[str, int] | None = None, *, patients: bool = True
    ) -> None:
        """``pseudonyms``: shared by the writers of one release's sets (train and test), so that a patient in
        both has one pseudonym (and a locked-test check sees the overlap). ``patients=False``: a release that
        names none (each image is its own patient, near-duplicates share a fold): no ``patients.csv``."""
        self.out, self.prefix, self.with_patients = Path(out), prefix, patients
        self._pseudonyms: dict[str, int] = {} if pseudonyms is None else pseudonyms
        self._patients: dict[str, int] = {}  # image (relative path) -> pseudonym number

    def add(self, label: str, name: str, image: np.ndarray, mask: np.ndarray | None, patient: str) -> bool:
        """Write one image and its 0/1 mask: 2D as PNG (8-bit values kept; others as 16-bit, see
        :func:`to_uint16`), a 3D (I, J, K) volume as NIfTI at 1 mm.

        Returns:
            Whether the image's values were scaled to fit 16 bits.
        """
        from PIL import Image

        folder = self.out / label
        folder.mkdir(parents=True, exist_ok=True)
        if image.ndim == 3 and image.shape[-1] not in (3, 4):
            from tumorbench.data.writers import write_nifti

            file = write_nifti(folder / f"{name}.nii.gz", image, np.eye(4)).name
            if mask is not None:
                write_nifti(folder / f"{name}_mask.nii.gz", mask.astype(np.uint8), np.eye(4))
            rescaled = False
        else:
            rescaled = False
            if image.dtype != np.uint8:
                image, rescaled = to_uint16(image)
            file = f"{name}.png"
            Image.fromarray(image).save(folder / file, compress_level=3)  # 3.4x zlib's default 6, +3% size
            if mask is not None:
                Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(folder / f"{name}_mask.png")
        if self.with_patients:
            self._patients[f"{label}/{file}"] = self._pseudonyms.setdefault(patient, len(self._pseudonyms) + 1)
        return rescaled

    def close(self) -> int:
        """Write ``patients.csv`` (unless ``patients=False``); the number of patients in this set."""
        if not self.with_patients:
            return 0
        width = len(str(len(self._pseudonyms)))
        with open(self.out / "patients.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "patient_id"])
            writer.writerows((image, f"{self.prefix}-{n:0{width}d}") for image, n in self._patients.items())
        return len(set(self._patients.values()))
