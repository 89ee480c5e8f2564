"""What a generic segmentation study segments: the lesion's mask labels, not its organ's.

Organ + tumour masks (LiTS, KiTS, the Decathlon's liver, pancreas and hepatic-vessel tasks) store the
organ as 1 and the tumour as 2 (KiTS: cyst 3). Read as "every non-zero label", such a study scores
organ segmentation as tumour detection. The target, in order:

1. ``--foreground-labels`` (checked against the first mask's labels);
2. ``dataset.json``'s label names (Decathlon, nnU-Net; regions too): the labels named as lesions
   (tumour, cancer, mass, metastasis... and oedema, part of a brain tumour's whole extent), when
   some labels are not;
3. otherwise every non-zero label, with a note when the masks hold several.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tumorbench.data.layouts.common import LESION_NAME
from tumorbench.errors import TumorbenchError

OEDEMA = re.compile(r"o?edema|^ed$", re.IGNORECASE)
# Brain tumour sub-regions as dataset.json names them: the Decathlon's labels (edema, non-enhancing tumor,
# enhancing tumour), BraTS abbreviations (ED, NCR / NET, ET), nnU-Net's regions (whole tumor, tumor core...).
NON_ENHANCING = re.compile(r"non[\s_-]*enhanc|necro|^ncr|^net$", re.IGNORECASE)
ENHANCING = re.compile(r"^(?!.*non[\s_-]*enhanc).*enhanc|^et$", re.IGNORECASE)
WHOLE_TUMOUR = re.compile(r"whole[\s_-]*tumou?r|^wt$", re.IGNORECASE)
TUMOUR_CORE = re.compile(r"tumou?r[\s_-]*core|^tc$", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """The mask labels a study segments (None: every non-zero label) and what to tell the user."""

    labels: tuple[int, ...] | None
    note: str | None = None

    def preprocess(self) -> dict:
        """The whole-lesion template's mask mapping: binary, of these labels when chosen."""
        return {"label_map": "binary", **({"foreground_labels": list(self.labels)} if self.labels else {})}


def choose_target(
    frame: pd.DataFrame, labels_of_mask: Callable[[pd.DataFrame], set[int]], given: tuple[int, ...] | None = None
) -> Target:
    """The target of a whole-lesion study of ``frame`` (see the module's docstring)."""
    if given:
        found = labels_of_mask(frame) - {0}
        if found == {255}:  # 8-bit 0/255 masks are read as {0, 1} (LoadCased): one label, nothing to choose
            raise TumorbenchError("--foreground-labels: the masks are binary (0/255), not a label map")
        if found and not set(given) & found:
            raise TumorbenchError(
                f"--foreground-labels {','.join(map(str, given))}: the first mask holds labels {sorted(found)}"
            )
        return Target(tuple(sorted(set(given))), f"target: mask label(s) {sorted(set(given))} (--foreground-labels)")
    names = _label_names(frame)
    if names:
        every = sorted({v for values in names.values() for v in values})
        lesion = sorted({v for n, values in names.items() if LESION_NAME.search(n) or OEDEMA.search(n) for v in values})
        listed = "; ".join(f"{n} {'+'.join(map(str, v))}" for n, v in names.items())
        if lesion and lesion != every:
            return Target(
                tuple(lesion),
                f"target: label(s) {lesion}, named as lesions in dataset.json ({listed}); the others are background "
                "(--foreground-labels chooses others)",
            )
        if not lesion and len(every) > 1:
            return Target(
                None, f"no dataset.json label is named as a lesion ({listed}): every non-zero label is the target"
            )
        if any(len(values) > 1 for values in names.values()):  # nnU-Net regions other than a brain tumour's
            return Target(
                None,
                f"dataset.json declares regions ({listed}): the study segments the whole lesion, every non-zero "
                "label; region-by-region scores are made for brain tumours' WT / TC / ET only",
            )
        return Target(None)
    values = sorted(labels_of_mask(frame) - {0})
    if len(values) > 1:
        return Target(
            None,
            f"the masks hold labels {values} (first mask read): every non-zero label is one target; "
            "--foreground-labels picks the lesion's (e.g. 2 for LiTS' liver 1 + tumour 2)",
        )
    return Target(None)


def _label_names(frame: pd.DataFrame) -> dict[str, tuple[int, ...]]:
    if frame.attrs.get("layout") != "msd":
        return {}
    from tumorbench.data.layouts.msd import label_names

    return label_names(Path(frame.attrs["root"]))


def brats_regions(frame: pd.DataFrame) -> tuple[tuple[int, ...], ...] | None:
    """The WT, TC and ET label sets a Decathlon / nnU-Net ``dataset.json`` names, or None.

    nnU-Net's region datasets name them (``"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing
    tumor": [3]``); the Decathlon's brain tumours name the labels (1 edema, 2 non-enhancing tumor,
    3 enhancing tumour), from which WT = all three, TC = non-enhancing + enhancing, ET = enhancing.
    """
    names = _label_names(frame)

    def one(pattern: re.Pattern) -> tuple[int, ...] | None:
        found = [values for name, values in names.items() if pattern.search(name)]
        return found[0] if len(found) == 1 else None

    whole, core, enhancing = one(WHOLE_TUMOUR), one(TUMOUR_CORE), one(ENHANCING)
    if whole and core and enhancing:
        return whole, core, enhancing
    oedema, necrotic = one(OEDEMA), one(NON_ENHANCING)
    if oedema and necrotic and enhancing:
        return tuple(sorted({*oedema, *necrotic, *enhancing})), tuple(sorted({*necrotic, *enhancing})), enhancing
    return None
