"""``msd``: a Medical Segmentation Decathlon task or an nnU-Net raw dataset, described by its ``dataset.json``.

- Decathlon (and nnU-Net v1 ``TaskXXX``): the cases ``training`` and ``test`` list. nnU-Net v1 lists
  ``imagesTr/<case>.nii.gz`` but stores one file per channel, ``<case>_0000.nii.gz``, ...: read those.
- nnU-Net v2 (``DatasetXXX_Name``: ``channel_names``, ``file_ending``, no case list): ``imagesTr/<case>_<XXXX>``
  paired with ``labelsTr/<case>``, as the ``paired`` layout pairs them; ``imagesTs/`` unlabelled.
- A dataset's own held-out cases: the ``imagesTs/`` folder itself (``compare.py --test DatasetXXX/imagesTs``),
  paired with ``labelsTs/`` beside it, read with its dataset's channels and file ending. The dataset's root
  never reads ``labelsTs/``: held-out cases must not become training cases.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tumorbench.data.layouts.common import IMAGE_SUFFIXES, VOLUME_SUFFIXES, Problems, row, stem
from tumorbench.data.layouts.paired import pair
from tumorbench.errors import DataError


def is_test_split(root: Path) -> bool:
    """Whether ``root`` is an nnU-Net / Decathlon dataset's ``imagesTs/`` (its ``dataset.json`` one up)."""
    return root.name == "imagesTs" and (root.parent / "dataset.json").is_file()


def scan(root: Path, problems: Problems, **_) -> list[dict]:
    if is_test_split(root):
        return _test_split(root, problems)
    spec, channels = _spec(root)
    if not spec.get("training"):
        return _nnunet_v2(root, spec, channels, problems)
    entries = [(e, True) for e in spec.get("training", [])]
    entries += [({"image": e} if isinstance(e, str) else e, False) for e in spec.get("test", [])]
    rows, missing_tests = [], 0
    for entry, labelled in entries:
        listed = _joined(root, entry["image"])
        images = [listed] if listed.exists() else _channel_files(listed, len(channels))
        if not images and not labelled:  # an unlabelled test case is never read: imagesTs/ may be left out
            missing_tests += 1
            continue
        if not images:
            problems.add(listed, f"listed in dataset.json but missing (nor {stem(listed)}_0000 and on)")
            continue
        mask = _joined(root, entry["label"]) if labelled and entry.get("label") else None
        if mask is not None and not mask.exists():
            problems.add(mask, f"label of {listed.name} listed in dataset.json but missing")
            mask = None
        case_id = stem(listed)
        rows.append(row(case_id, case_id, "msd", images, channels, mask=mask))
    if missing_tests:
        problems.notes.append(
            f"{missing_tests} unlabelled test case(s) of dataset.json not found (imagesTs/): not read"
        )
    return rows


def _joined(root: Path, entry: str) -> Path:
    """``root / "./imagesTr/x.nii.gz"`` normalised, links not followed: a case is named by its link, not its target."""
    return Path(os.path.normpath(root / entry))


def _spec(root: Path) -> tuple[dict, tuple[str, ...]]:
    """``dataset.json`` and its channel names in order."""
    spec_path = root / "dataset.json"
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(spec_path, f"cannot read the dataset description: {exc}") from exc
    if not isinstance(spec, dict):
        raise DataError(spec_path, "not a JSON object")
    names = spec.get("channel_names") or spec.get("modality") or {"0": "image"}
    return spec, tuple(str(names[k]) for k in sorted(names, key=int))


def _test_split(images: Path, problems: Problems) -> list[dict]:
    """``imagesTs/`` paired with ``labelsTs/`` (nnU-Net's naming: ``<case>_<XXXX>`` with ``<case>``)."""
    spec, channels = _spec(images.parent)
    labels = images.parent / "labelsTs"
    if not labels.is_dir():
        raise DataError(images, "no labelsTs/ beside it: the held-out cases have no masks to score against")
    ending = spec.get("file_ending")
    return pair(images, labels, problems, layout="msd", channel_names=channels, ending=ending and str(ending))


def label_names(root: Path) -> dict[str, tuple[int, ...]]:
    """``dataset.json``'s labels as name -> the stored labels it covers (background left out), or {}.

    Decathlon / nnU-Net v1: ``{"1": "liver", "2": "cancer"}``; nnU-Net v2: ``{"liver": 1, "tumor": 2}``, or
    regions as lists (``{"kidney": [1, 2, 3], "masses": [2, 3]}``).
    """
    try:
        labels = json.loads((root / "dataset.json").read_text()).get("labels") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(labels, dict):
        return {}
    try:
        if all(str(k).isdigit() for k in labels):  # v1: label -> name
            named = {str(name): (int(k),) for k, name in labels.items()}
        else:  # v2: name -> label or region
            named = {str(k): tuple(int(v) for v in (v if isinstance(v, list) else [v])) for k, v in labels.items()}
    except (TypeError, ValueError):
        return {}
    return {name: tuple(v for v in values if v > 0) for name, values in named.items() if any(v > 0 for v in values)}


def _channel_files(listed: Path, n: int) -> list[Path]:
    """nnU-Net v1: ``<case>_0000<ext>`` ... for a listed ``<case><ext>``; [] unless all ``n`` exist."""
    ext = listed.name[len(stem(listed)) :]
    files = [listed.with_name(f"{stem(listed)}_{i:04d}{ext}") for i in range(n)]
    return files if all(p.exists() for p in files) else []


def _nnunet_v2(root: Path, spec: dict, channels: tuple[str, ...], problems: Problems) -> list[dict]:
    ending = str(spec.get("file_ending") or ".nii.gz")
    if not ending.lower().endswith(VOLUME_SUFFIXES + tuple(IMAGE_SUFFIXES)):
        problems.add(
            root / "dataset.json",
            f"file_ending {ending}: only volumes ({', '.join(VOLUME_SUFFIXES)}) and 2D images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}) are read; convert the files and set file_ending",
        )
        return []
    if not (root / "imagesTr").is_dir() or not (root / "labelsTr").is_dir():
        problems.add(root, "dataset.json lists no training cases and there is no imagesTr/ and labelsTr/ to pair")
        return []
    test = root / "imagesTs"
    return pair(
        root / "imagesTr",
        root / "labelsTr",
        problems,
        layout="msd",
        test_dir=test if test.is_dir() else None,
        channel_names=channels,
        ending=ending,
    )
