"""mini-MIAS (322 digitised mammograms, ``mdb001.pgm`` ... ``mdb322.pgm`` + ``Info.txt``) made a class-folder set.

``Info.txt`` gives each image's background tissue, its abnormality (``CALC``, ``CIRC``, ``SPIC``, ``MISC``,
``ARCH``, ``ASYM`` or ``NORM``), its severity (``B`` / ``M``) and, for most lesions, a circle around it (centre
x, y and radius in pixels), one line per lesion. Two traps, as the file's notes say:

- the circle's **origin is the bottom-left corner**: row = height - 1 - y, not y;
- the images are **pairs of one woman's left and right films** (``mdb001`` + ``mdb002``): one patient, one fold.

:func:`convert` writes ``normal/``, ``benign/`` and ``malignant/`` (:mod:`~tumorbench.data.class_set`), each lesion
circle drawn into the image's mask (a normal film: an empty mask). An image whose lesions have no circle (widely
spread calcifications) gets no mask: a classification case only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumorbench.data.class_set import ClassFolderWriter, Written
from tumorbench.data.layouts.common import data_files
from tumorbench.errors import DataError

ABNORMALITIES = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM")
SEVERITY = {"B": "benign", "M": "malignant"}
RANK = ("normal", "benign", "malignant")
REFERENCE = re.compile(r"^mdb(\d{3})$", re.IGNORECASE)
IMAGE_SUFFIXES = (".pgm", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")  # the release, or a re-encoded copy
MAX_INFO_BYTES = 1 << 20


@dataclass
class Film:
    """One image's lines of ``Info.txt``: its class and its lesion circles (x, y from the bottom left, radius)."""

    label: str
    circles: list[tuple[float, float, float]] = field(default_factory=list)
    without_circle: int = 0


@dataclass
class Summary(Written):
    lesions_drawn: int = 0
    without_mask: int = 0  # abnormal films whose lesions have no circle
    missing: list[str] = field(default_factory=list)  # listed in Info.txt, no image found
    unlisted: int = 0  # images not in Info.txt: left out
    skipped: list[str] = field(default_factory=list)  # "<file>: <problem>"


def find_info(root: Path) -> Path:
    """``Info.txt`` (any case) under the root."""
    found = [p for p in data_files(root) if p.name.lower() == "info.txt"]
    if not found:
        raise DataError(root, "no Info.txt under it (mini-MIAS lists each image's abnormality there)")
    return found[0]


def _line(path: Path, number: int, tokens: list[str]) -> tuple[str, str, tuple[float, float, float] | None]:
    """(reference, class, circle or None) of one data line."""
    reference, abnormality = tokens[0].lower(), tokens[2].upper() if len(tokens) > 2 else ""
    if abnormality not in ABNORMALITIES:
        raise DataError(path, f"line {number}: abnormality {abnormality or '(none)'!r}, not one of {ABNORMALITIES}")
    if abnormality == "NORM":
        return reference, "normal", None
    severity = tokens[3].upper() if len(tokens) > 3 else ""
    if severity not in SEVERITY:
        raise DataError(path, f"line {number}: severity {severity or '(none)'!r} of a {abnormality}, not B or M")
    try:
        circle = tuple(float(t) for t in tokens[4:7]) if len(tokens) >= 7 else None
    except ValueError:
        circle = None  # "*NOTE 3*": calcifications spread over the film, no centre given
    if circle is not None and (circle[2] <= 0 or min(circle[:2]) < 0):
        raise DataError(path, f"line {number}: circle x {circle[0]:g}, y {circle[1]:g}, radius {circle[2]:g}")
    return reference, SEVERITY[severity], circle


def read_info(path: Path) -> dict[str, Film]:
    """Every film of ``Info.txt`` by reference (``mdb001``); lines not starting with a reference are notes."""
    if path.stat().st_size > MAX_INFO_BYTES:
        raise DataError(path, f"{path.stat().st_size:,} bytes: not mini-MIAS's Info.txt (about 10 KB)")
    films: dict[str, Film] = {}
    for number, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        tokens = text.split()
        if not tokens or not REFERENCE.match(tokens[0]):
            continue
        reference, label, circle = _line(path, number, tokens)
        film = films.setdefault(reference, Film(label))
        film.label = max(film.label, label, key=RANK.index)  # a film is malignant when any of its lesions is
        if circle is None:
            film.without_circle += label != "normal"
        else:
            film.circles.append(circle)
    if not films:
        raise DataError(path, "no line starting with a reference (mdb001 ...): not mini-MIAS's Info.txt")
    return films


def lesion_mask(shape: tuple[int, int], circles: list[tuple[float, float, float]]) -> np.ndarray:
    """0/1 mask of the circles, their centres given from the bottom-left corner."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    for x, y, radius in circles:
        mask |= (cols - x) ** 2 + (rows - (shape[0] - 1 - y)) ** 2 <= radius**2
    return mask


def _films(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in data_files(root):
        if path.suffix.lower() in IMAGE_SUFFIXES and REFERENCE.match(path.stem):
            found.setdefault(path.stem.lower(), path)
    return found


def convert(root: str | Path, out: str | Path) -> Summary:
    """Write every film listed in ``root``'s ``Info.txt`` into ``out`` (see the module docstring)."""
    from tumorbench.data.io import read_image_2d

    root = Path(root)
    films, images = read_info(find_info(root)), _films(root)
    summary, writer = Summary(), ClassFolderWriter(out, "mias")
    summary.unlisted = len(set(images) - set(films))
    for reference, film in sorted(films.items()):
        if reference not in images:
            summary.missing.append(reference)
            continue
        try:
            pixels = read_image_2d(images[reference], dtype=None).array
        except DataError as exc:
            summary.skipped.append(f"{images[reference].name}: {exc.problem}")
            continue
        if pixels.shape[0] != 1:  # a grey film re-encoded as RGB: its channels are equal
            pixels = pixels.mean(axis=0, keepdims=True).round().astype(pixels.dtype)
        image = pixels[0]
        mask = None if film.without_circle else lesion_mask(image.shape, film.circles)
        patient = str((int(reference[3:]) + 1) // 2)  # left and right films of one woman: 1 and 2, 3 and 4...
        writer.add(film.label, reference, image, mask, patient)
        summary.images += 1
        summary.classes[film.label] += 1
        summary.lesions_drawn += 0 if mask is None else len(film.circles)
        summary.without_mask += mask is None
    if not summary.images:
        raise DataError(root, f"none of the {len(films)} films Info.txt lists is there and readable (mdb001.pgm ...)")
    summary.patients = writer.close()
    return summary
