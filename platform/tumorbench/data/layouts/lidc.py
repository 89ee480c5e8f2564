"""``lidc``: LIDC-IDRI nodule crops with multi-reader masks and mean malignancy ratings."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from tumorbench.data.layouts.common import Problems, is_image, row
from tumorbench.errors import DataError

LIDC_MASK_KINDS = ("union", "intersection")
LIDC_NAME = re.compile(r"^LIDC-IDRI-(\d+)_(\d+)_(\d+)$")


@dataclass(frozen=True)
class LidcPolicy:
    """How mean radiologist malignancy ratings (1-5) become classes.

    The default is the usual one in the literature: mean <= 2 benign,
    mean >= 4 malignant, anything between is excluded (label ``None``).

    Args:
        benign_max: Highest mean rating still called benign.
        malignant_min: Lowest mean rating called malignant.
        mask: Which multi-reader mask to use: ``union`` or ``intersection``.
    """

    benign_max: float = 2.0
    malignant_min: float = 4.0
    mask: str = "union"

    def __post_init__(self) -> None:
        if not 1.0 <= self.benign_max < self.malignant_min <= 5.0:
            raise ValueError(f"LIDC policy needs 1 <= benign_max < malignant_min <= 5, got {self}")
        if self.mask not in LIDC_MASK_KINDS:
            raise ValueError(f"LIDC mask must be one of {LIDC_MASK_KINDS}, got {self.mask!r}")

    def classify(self, rating: float) -> str | None:
        """Return ``benign``, ``malignant`` or ``None`` (excluded) for a mean rating."""
        if rating <= self.benign_max:
            return "benign"
        if rating >= self.malignant_min:
            return "malignant"
        return None

    def describe(self) -> str:
        return (
            f"mean malignancy <= {self.benign_max:g} benign, >= {self.malignant_min:g} malignant, "
            f"between excluded; {self.mask} mask"
        )


def _read_lidc_ratings(path: Path) -> dict[tuple[int, int, int], float]:
    ratings = {}
    with path.open(newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            try:
                patient, scan, nodule = int(row[1]), int(row[2]), int(row[3])
                ratings[(patient, scan, nodule)] = float(row[-1])
            except (IndexError, ValueError) as exc:
                raise DataError(path, f"line {line_no}: not a malignancy row ({exc})") from exc
    return ratings


def scan(root: Path, problems: Problems, lidc_policy: LidcPolicy | None = None, **_) -> list[dict]:
    policy = lidc_policy or LidcPolicy()
    ratings_path = root / "files" / "malignancy.csv"
    ratings = _read_lidc_ratings(ratings_path) if ratings_path.exists() else {}
    if not ratings:
        problems.add(ratings_path, "no malignancy ratings: nodules will be unlabelled")
    rows = []
    for path in sorted(p for p in root.iterdir() if is_image(p)):
        match = LIDC_NAME.match(path.stem)
        if match is None:
            continue  # a mask or another file
        patient, nodule, scan = (int(g) for g in match.groups())
        mask = path.with_name(f"{path.stem}_{policy.mask}{path.suffix}")
        if not mask.exists():
            problems.add(path, f"nodule crop without its {policy.mask} mask ({mask.name})")
            mask = None
        rating = ratings.get((patient, scan, nodule))
        if ratings and rating is None:
            problems.add(path, f"no malignancy rating for patient {patient}, scan {scan}, nodule {nodule}")
        rows.append(
            row(
                path.stem,
                f"LIDC-IDRI-{patient:04d}",
                "lidc",
                [path],
                ("ct",),
                mask=mask,
                label=None if rating is None else policy.classify(rating),
                malignancy=rating,
                nodule=nodule,
                scan=scan,
            )
        )
    return rows
