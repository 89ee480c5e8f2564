"""A locked test set must share nothing with the training data: no patient, no image, no near-duplicate.

For ``compare.py --test PATH`` (:mod:`tumorbench.study.final`): :func:`check_locked_test` refuses such a set before
anything trains, naming each overlap (case ids, as ``data check`` lists duplicates).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tumorbench.data.near_duplicates import find_near_duplicates
from tumorbench.data.splits import find_duplicates
from tumorbench.errors import DataError


def _tagged(frame: pd.DataFrame, side: str) -> pd.DataFrame:
    out = frame.copy()
    out["case_id"] = side + ":" + out["case_id"].astype(str)
    return out


def locked_test_overlaps(train: pd.DataFrame, test: pd.DataFrame) -> list[str]:
    """Every way ``test`` overlaps ``train``: shared patients, identical images, near-duplicate images.

    Class folders without a ``patients.csv`` on both sides name no patients: each image is its own, its id
    its path under its folder, so a path found on both sides is a reused file name, not a shared patient,
    and the images themselves are compared instead. (A case name of other layouts, nnU-Net's say, names
    the case: the same on both sides is the same case.)"""
    shared = set(train["patient_id"].astype(str)) & set(test["patient_id"].astype(str))
    if all(f.attrs.get("layout") == "image-folder" and (f["patient_id"] == f["case_id"]).all() for f in (train, test)):
        shared = set()
    problems = [f"patient {p} is in both" for p in sorted(shared)]
    both = pd.concat([_tagged(train, "train"), _tagged(test, "test")], ignore_index=True)
    identical = find_duplicates(both)
    seen = [set(group) for group in identical]  # an identical pair is also a near-duplicate: named once
    near = [g for g in find_near_duplicates(both) if not any(set(g) <= group for group in seen)]
    for kind, groups in (("identical images", identical), ("near-duplicates", near)):
        for group in groups:
            sides = {case.split(":", 1)[0] for case in group}
            if sides == {"train", "test"}:
                problems.append(f"{kind}: {' ~ '.join(group)}")
    return problems


def check_locked_test(train: pd.DataFrame, test: pd.DataFrame, source: str, listing: Path | None = None) -> None:
    """Raise :class:`DataError` naming the overlaps of the test set ``source`` with the training data (the first
    ten; every one in ``listing``, a text file written only when there are overlaps)."""
    problems = locked_test_overlaps(train, test)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; ... {len(problems) - 10} more" if len(problems) > 10 else "")
        if listing is not None:
            listing.parent.mkdir(parents=True, exist_ok=True)
            listing.write_text("\n".join(problems) + "\n")
            shown += f" (all of them in {listing})"
        raise DataError(
            source,
            f"the test set overlaps the training data ({len(problems)}): {shown}. Its scores would be inflated: "
            "remove each overlapping image (or patient) from one side, or drop --test",
        )
