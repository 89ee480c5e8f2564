"""``case-folders``: one folder per case holding its volumes (NIfTI, MetaImage or NRRD) and a segmentation named as one.

KiTS (``case_00000/imaging.nii.gz`` + ``segmentation.nii.gz``) and the many sets shaped like it
(``patient01/t1.nii.gz``, ``t2.nii.gz``, ``patient01_seg.nii.gz``). A file's *role* is its name less the folder's
name as a prefix: ``seg``, ``segmentation``, ``label``, ``mask``, ``gt`` (:data:`paired.MASK_WORDS`) is the mask,
every other role a channel, in name order. Every case must hold the same channels; a case without a mask is
unlabelled. Read as class folders, such a set became a classifier with one class per patient.
"""

from __future__ import annotations

import re
from pathlib import Path

from tumorbench.data.layouts.common import SLICER_SEGMENTATION, Problems, is_volume, row, stem, visible_dirs
from tumorbench.data.layouts.paired import MASK_WORDS


def role(case_dir: Path, path: Path) -> str:
    """``case_00000/imaging.nii.gz`` -> ``imaging``; ``p01/p01_seg.nii.gz`` -> ``seg`` (lower case)."""
    if path.name.lower().endswith(SLICER_SEGMENTATION):  # Segmentation.seg.nrrd, as 3D Slicer saves it
        return "seg"
    name = stem(path).lower()
    prefix = case_dir.name.lower()
    if name == prefix:  # p01/p01.nii.gz beside p01/p01_seg.nii.gz
        return "image"
    if name.startswith(prefix):
        name = name[len(prefix) :]
    return re.sub(r"^[^a-z0-9]+", "", name)


def _outlines(case_dir: Path, volumes: list[Path]) -> list[Path]:
    """The case folder's volumes named as a segmentation."""
    return [p for p in volumes if role(case_dir, p) in MASK_WORDS]


def _volumes(case_dir: Path) -> list[Path]:
    return [p for p in sorted(case_dir.iterdir()) if is_volume(p)]


def is_case_folder_set(subdirs: list[Path]) -> bool:
    """True when at least half of the folders holding volumes hold a segmentation named as one."""
    listed = [(d, _volumes(d)) for d in subdirs]
    with_volumes = [(d, volumes) for d, volumes in listed if volumes]
    outlined = sum(bool(_outlines(d, volumes)) for d, volumes in with_volumes)
    return bool(with_volumes) and 2 * outlined >= len(with_volumes)


def scan(root: Path, problems: Problems, **_) -> list[dict]:
    rows, channel_sets = [], {}
    for case_dir in visible_dirs(root):
        volumes = _volumes(case_dir)
        if not volumes:
            continue
        masks = _outlines(case_dir, volumes)
        mask = masks[0] if masks else None
        if len(masks) > 1:
            problems.add(case_dir, f"{len(masks)} segmentation volumes ({', '.join(p.name for p in masks)}): keep one")
            continue
        images = sorted((p for p in volumes if p != mask), key=lambda p: role(case_dir, p))
        if not images:
            problems.add(case_dir, "a segmentation without any image volume")
            continue
        channels = tuple(role(case_dir, p) or "image" for p in images)
        channel_sets.setdefault(channels, []).append(case_dir.name)
        rows.append(row(case_dir.name, case_dir.name, "case-folders", images, channels, mask=mask))
    if len(channel_sets) > 1:
        common = max(channel_sets, key=lambda c: len(channel_sets[c]))
        for channels, cases in channel_sets.items():
            if channels != common:
                problems.add(
                    root / cases[0],
                    f"channels {' + '.join(channels)} where {len(channel_sets[common])} cases have "
                    f"{' + '.join(common)} ({len(cases)} case(s) like this)",
                )
        rows = [r for r in rows if r["channels"] == common]
    return rows
