"""LIDC-IDRI's reading XML (``069.xml`` beside a CT series' slices): each radiologist's nodules, outlined.

A file is one ``LidcReadMessage``: a ``ResponseHeader`` naming the series (``SeriesInstanceUid``), then one
``readingSession`` per radiologist (up to four), each holding ``unblindedReadNodule`` elements. A nodule of 3 mm or
more has ``characteristics`` (nine ratings; malignancy 1-5) and one ``roi`` per slice it crosses: the slice
(``imageSOP_UID``, ``imageZposition``), ``inclusion`` (``FALSE``: the outline of a hole) and the outline's
``edgeMap`` points (``xCoord`` the column, ``yCoord`` the row, 0-based). A nodule under 3 mm is one point without
ratings; ``nonNodule`` marks are not nodules. The chest radiograph readings of the same release
(``IdriReadMessage``) are not CT readings. Files carry a namespace (``http://www.nih.gov``) or none.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorbench.errors import DataError

# The nine ratings, in the order of the release's characteristics (malignancy last, as the lidc layout reads it).
RATINGS = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)
MAX_XML_BYTES = 16 << 20  # the release's largest is about 1 MB
MAX_POINTS = 1 << 20  # outline points in one file: bounded work for a crafted one
MAX_COORD = 1 << 15  # an outline point's column or row (a CT slice is 512 wide)


class NotCtReading(Exception):
    """The XML is not a CT reading (a chest radiograph reading, another XML): not this converter's."""


@dataclass(frozen=True)
class Outline:
    """One slice's outline of a nodule: its slice, whether it bounds the nodule or a hole, its points (x, y)."""

    sop_uid: str | None
    z: float | None
    inclusion: bool
    points: np.ndarray  # (n, 2): column, row


@dataclass(frozen=True)
class Reading:
    """One radiologist's reading of one nodule of 3 mm or more."""

    reader: int  # its readingSession, counted from 0 in the file
    ratings: dict[str, float]  # those of RATINGS the reader gave
    outlines: tuple[Outline, ...]


def _name(element: ET.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _name(child) == name]


def _text(element: ET.Element, name: str) -> str | None:
    found = _children(element, name)
    text = found[0].text if found else None
    return text.strip() if text and text.strip() else None


def _load(path: Path) -> ET.Element:
    size = path.stat().st_size
    if size > MAX_XML_BYTES:
        raise DataError(path, f"{size:,} bytes: not an LIDC reading (at most about 1 MB)")
    data = path.read_bytes()
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:  # an LIDC reading declares none: refused before expat sees it
        raise DataError(path, "declares a DOCTYPE or entities: not an LIDC reading")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise DataError(path, f"not well-formed XML ({exc})") from exc


def _outline(path: Path, roi: ET.Element) -> Outline:
    points = []
    for edge in _children(roi, "edgeMap"):
        x, y = _text(edge, "xCoord"), _text(edge, "yCoord")
        try:
            points.append((int(x), int(y)))
        except (TypeError, ValueError) as exc:
            raise DataError(path, f"an edgeMap point ({x!r}, {y!r}) is not two integers") from exc
        if not (-MAX_COORD <= points[-1][0] <= MAX_COORD and -MAX_COORD <= points[-1][1] <= MAX_COORD):
            raise DataError(path, f"an edgeMap point ({x}, {y}) lies far outside any CT slice")
    z = _text(roi, "imageZposition")
    try:
        z_mm = None if z is None else float(z)
    except ValueError as exc:
        raise DataError(path, f"imageZposition {z!r} is not a number") from exc
    if z_mm is not None and not np.isfinite(z_mm):
        raise DataError(path, f"imageZposition {z!r} is not a number")
    inclusion = (_text(roi, "inclusion") or "TRUE").upper() != "FALSE"
    return Outline(_text(roi, "imageSOP_UID"), z_mm, inclusion, np.array(points, dtype=np.int64).reshape(-1, 2))


def _ratings(path: Path, nodule: ET.Element) -> dict[str, float]:
    found = _children(nodule, "characteristics")
    ratings = {}
    for name in RATINGS:
        text = _text(found[0], name) if found else None
        if text is None:
            continue
        try:
            ratings[name] = float(text)
        except ValueError as exc:
            raise DataError(path, f"{name} rating {text!r} is not a number") from exc
    malignancy = ratings.get("malignancy")
    if malignancy is not None and not 1 <= malignancy <= 5:
        raise DataError(path, f"malignancy rating {malignancy:g}, not in 1..5")
    return ratings


def read_readings(path: str | Path) -> tuple[str, list[Reading]]:
    """The series an LIDC reading XML is of, and its nodules of 3 mm or more (one :class:`Reading` per reader's).

    Raises:
        NotCtReading: a chest radiograph reading or another XML.
        DataError: a damaged or hostile file (too large, entities, malformed values, too many points).
    """
    path = Path(path)
    root = _load(path)
    if _name(root) != "LidcReadMessage":
        raise NotCtReading(f"{_name(root)}, not LidcReadMessage")
    headers = _children(root, "ResponseHeader")
    spellings = ("SeriesInstanceUid", "SeriesInstanceUID")  # the release's, and the DICOM keyword's
    series = next((uid for name in spellings if headers and (uid := _text(headers[0], name))), None)
    if series is None:
        raise DataError(path, "no SeriesInstanceUid in its ResponseHeader")
    readings, points = [], 0
    for reader, session in enumerate(_children(root, "readingSession")):
        for nodule in _children(session, "unblindedReadNodule"):
            outlines = tuple(_outline(path, roi) for roi in _children(nodule, "roi"))
            points += sum(len(o.points) for o in outlines)
            if points > MAX_POINTS:
                raise DataError(path, f"over {MAX_POINTS:,} outline points: not an LIDC reading")
            if any(o.inclusion and len(o.points) > 1 for o in outlines):  # under 3 mm: one point, no outline
                readings.append(Reading(reader, _ratings(path, nodule), outlines))
    return series, readings
