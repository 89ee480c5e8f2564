"""``brats``: one folder per case, four MRI modalities in the 2018/2021 or 2023 naming."""

from __future__ import annotations

import re
from pathlib import Path

from tumorbench.data.layouts.common import Problems, row, visible_dirs

BRATS_CHANNELS = ("t1", "t1ce", "t2", "flair")
# A sequence's names across BraTS (2018-2021, 2023) and the Decathlon / nnU-Net dataset.json (T1w, t1gd...).
SEQUENCE_NAMES = {
    "t1": "t1", "t1w": "t1", "t1n": "t1", "native": "t1",
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce", "t1-gd": "t1ce", "t1_gd": "t1ce",
    "t2": "t2", "t2w": "t2",
    "flair": "flair", "t2f": "flair", "t2-flair": "flair", "t2_flair": "flair",
}  # fmt: skip


def sequence_order(have: list[str], want: list[str]) -> list[int] | None:
    """Indices that put channels named ``have`` in the order ``want`` (both MRI sequence names, any
    naming above), or None when either names something else or they are not the same sequences."""
    source = [SEQUENCE_NAMES.get(str(n).strip().lower()) for n in have]
    target = [SEQUENCE_NAMES.get(str(n).strip().lower()) for n in want]
    if None in source or None in target or sorted(source) != sorted(target) or len(set(source)) != len(source):
        return None
    return [source.index(name) for name in target]


# (suffix per canonical channel, segmentation suffix, separator) for each naming scheme.
_BRATS_SCHEMES = {
    "2023": ({"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}, "seg", "-"),
    "2018/2021": ({c: c for c in BRATS_CHANNELS}, "seg", "_"),
}

# The file-name suffixes of each channel in every naming scheme (``t1``, ``t1n``...): the layout's and zipped uploads'.
CHANNEL_SUFFIXES = {c: tuple(dict.fromkeys(scheme[0][c] for scheme in _BRATS_SCHEMES.values())) for c in BRATS_CHANNELS}


def _nifti(case_dir: Path, stem: str) -> Path:
    """``<stem>.nii.gz``, else ``<stem>.nii`` when only that exists (BraTS 2020 ships uncompressed volumes)."""
    packed = case_dir / f"{stem}.nii.gz"
    plain = case_dir / f"{stem}.nii"
    return plain if plain.exists() and not packed.exists() else packed


def naming(case_dir: Path) -> str | None:
    for scheme, (suffixes, _, sep) in _BRATS_SCHEMES.items():
        if _nifti(case_dir, f"{case_dir.name}{sep}{suffixes['flair']}").exists():
            return scheme
    return None


def grouped(subdirs: list[Path]) -> bool:
    """Every folder is a group of BraTS case folders, none a case itself: BraTS 2018-2019's ``HGG/`` and ``LGG/``."""
    return bool(subdirs) and all(naming(s) is None and any(naming(c) for c in visible_dirs(s)) for s in subdirs)


def case_dirs(root: Path) -> list[Path]:
    """The case folders: the root's folders, or its groups' (``HGG/`` and ``LGG/``) when it holds groups."""
    subdirs = visible_dirs(root)
    return [case for group in subdirs for case in visible_dirs(group)] if grouped(subdirs) else subdirs


# 2023 on (BraTS-GLI-00017-000, BraTS-MEN-..., -PED-, -SSA-, -MET-): the last 3 digits number the patient's timepoint
_TIMEPOINT = re.compile(r"^(BraTS-[A-Za-z]+-\d+)-\d{3}$")


def patient_id(case_id: str) -> str:
    """The patient of a case: the 2023 naming's ID less its timepoint (two scans of one patient share folds)."""
    found = _TIMEPOINT.match(case_id)
    return found.group(1) if found else case_id


def _brats_year(case_id: str, scheme: str) -> str:
    if scheme == "2023":
        return "2023"
    lowered = case_id.lower()
    if lowered.startswith("brats18") or lowered.startswith("brats2018"):
        return "2018"
    if lowered.startswith("brats2021") or lowered.startswith("brats21"):
        return "2021"
    return "2018/2021"


def scan(root: Path, problems: Problems, **_) -> list[dict]:
    rows = []
    for case_dir in case_dirs(root):
        scheme = naming(case_dir)
        if scheme is None:
            if any(case_dir.glob("*.nii*")):
                problems.add(case_dir, "no FLAIR volume in BraTS naming (_flair.nii[.gz] or -t2f.nii[.gz])")
            continue
        suffixes, seg_suffix, sep = _BRATS_SCHEMES[scheme]
        paths = {c: _nifti(case_dir, f"{case_dir.name}{sep}{suffixes[c]}") for c in BRATS_CHANNELS}
        missing = [c for c, p in paths.items() if not p.exists()]
        if missing:
            names = ", ".join(paths[c].name for c in missing)
            problems.add(case_dir, f"missing modality {', '.join(missing)} (expected {names})")
            continue
        seg = _nifti(case_dir, f"{case_dir.name}{sep}{seg_suffix}")
        if not seg.exists() and (stray := len(set(case_dir.glob("*.nii*")) - set(paths.values()))):
            # BraTS 2020's case 355 ships its segmentation as W39_1998.09.19_Segm.nii: a name that may carry
            # identifiers, so it is counted, not shown
            problems.notes.append(
                f"case {case_dir.name}: no {case_dir.name}{sep}{seg_suffix}.nii[.gz]; {stray} other NIfTI file(s) in "
                "its folder named for no sequence are not read (rename its segmentation so to use it)"
            )
        rows.append(
            row(
                case_dir.name,
                patient_id(case_dir.name),
                "brats",
                paths.values(),
                BRATS_CHANNELS,
                mask=seg if seg.exists() else None,
                naming=_brats_year(case_dir.name, scheme),
                enhancing_label=3 if scheme == "2023" else 4,
            )
        )
    if (scans := len(rows)) > (patients := len({r["patient_id"] for r in rows})):
        problems.notes.append(f"{scans} cases of {patients} patients: a patient's timepoints are kept in one fold")
    return rows
