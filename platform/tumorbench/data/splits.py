"""Patient-level stratified k-fold splits, written once and read by every model.

A split file is JSON: the folds (validation case ids and patients per fold),
how they were made (folds, seed, stratification key), the dataset it belongs
to (layout, case count, catalog and content hashes), the duplicates that were
dropped, the near-duplicate groups kept in one fold, and a ``hash`` over all
of that, checked whenever the file is read. Every deep model and every
classical baseline trains and scores on exactly these folds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tumorbench.errors import DataError, TumorbenchError

SPLIT_FORMAT_VERSION = 1


class SplitError(TumorbenchError, ValueError):
    """A split that cannot be made or a split file that does not fit its data."""


@dataclass(frozen=True)
class SplitConfig:
    """How to split a catalog.

    Args:
        n_folds: Number of folds (at least 2).
        seed: Shuffling seed; the same seed and catalog give the same folds.
        stratify: Column to stratify on (``label``, ``has_tumor``), ``auto``
            (``label`` when the catalog has class labels, else ``has_tumor``
            when present) or ``none``.
        dedupe: Drop byte-identical images (keeping the first of each group)
            before splitting, so a copy cannot sit in train and validation.
        near_duplicates: ``on``: near-duplicate images (perceptual hash, see
            :mod:`tumorbench.data.near_duplicates`) share one group, so they never cross folds;
            ``auto`` (default): on where the layout has no patient IDs (every case its own
            patient, as in class folders); ``off``.
        max_cases: Split about this many cases: whole patients drawn at random, classes in
            proportion (:func:`sample_groups`); the others are listed under ``excluded`` (a study
            planned for a set too large for its budget). None: every case.
    """

    n_folds: int = 5
    seed: int = 0
    stratify: str = "auto"
    dedupe: bool = False
    near_duplicates: str = "auto"
    max_cases: int | None = None

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise SplitError(f"n_folds must be at least 2, got {self.n_folds}")
        if self.near_duplicates not in ("auto", "on", "off"):
            raise SplitError(f"near_duplicates must be auto, on or off, got {self.near_duplicates!r}")


def _json_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_name(path: Any) -> str | None:
    return Path(path).name if isinstance(path, (str, Path)) else None


def catalog_hash(frame: pd.DataFrame) -> str:
    """Hash of what identifies a catalog's cases: ids, patients, file names and labels."""
    records = [
        [
            row["case_id"],
            row["patient_id"],
            [_file_name(p) for p in row["image"]],
            _file_name(row["mask"]),
            row["label"] if isinstance(row["label"], str) else None,
        ]
        for row in frame.sort_values("case_id").to_dict("records")
    ]
    return _json_hash(records)


def content_hash(frame: pd.DataFrame) -> str:
    """Hash of the data itself: every case's image and mask bytes with its id, patient and label.

    ``catalog_hash`` (names, checked on every read) misses a file replaced under the same name;
    this one reads every byte, so it is taken once per split file and per study run.
    """
    from tumorbench.data.io import image_content_hash

    def digest(path: Any) -> str | None:
        return image_content_hash(path) if isinstance(path, (str, Path)) else None

    records = [
        [
            row["case_id"],
            row["patient_id"],
            [digest(p) for p in row["image"]],
            digest(row["mask"]),
            row["label"] if isinstance(row["label"], str) else None,
        ]
        for row in frame.sort_values("case_id").to_dict("records")
    ]
    return _json_hash(records)


def check_content(doc: dict, frame: pd.DataFrame, path: str | Path) -> str:
    """The data's content hash, refused when the split file recorded another (files changed since)."""
    current = content_hash(frame)
    recorded = doc["dataset"].get("content_hash")
    if recorded is not None and recorded != current:
        raise DataError(
            path,
            "the data's content changed since this split file was made (same file names, "
            "other bytes): make a new split file",
        )
    return current


def find_duplicates(frame: pd.DataFrame) -> list[list[str]]:
    """Groups of case ids whose image files are byte-identical (groups of two or more)."""
    from tumorbench.data.io import image_content_hash

    by_hash: dict[str, list[str]] = {}
    for case_id, paths in zip(frame["case_id"], frame["image"]):
        digest = _json_hash([image_content_hash(p) for p in paths])
        by_hash.setdefault(digest, []).append(case_id)
    return sorted(sorted(ids) for ids in by_hash.values() if len(ids) > 1)


def _stratify_key(frame: pd.DataFrame, stratify: str) -> str | None:
    if stratify == "none":
        return None
    if stratify == "auto":
        if frame["label"].notna().any():
            return "label"
        return "has_tumor" if "has_tumor" in frame.columns else None
    if stratify not in frame.columns:
        raise SplitError(f"cannot stratify on {stratify!r}: the catalog has no such column")
    return stratify


def _uses_near_duplicates(frame: pd.DataFrame, config: SplitConfig) -> bool:
    from tumorbench.data.near_duplicates import supported

    if config.near_duplicates == "off" or not supported(frame):
        return False
    no_patient_ids = bool((frame["patient_id"].astype(str) == frame["case_id"].astype(str)).all())
    return config.near_duplicates == "on" or no_patient_ids


def _assign_folds(
    frame: pd.DataFrame, config: SplitConfig, key: str | None, groups: np.ndarray | None = None
) -> np.ndarray:
    """Fold of each row; ``groups`` (default: the patients) are never split across folds."""
    # Imported here: the processes that only read a split file (a Tune trial's) skip scikit-learn (~1 s of CPU).
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    merged = groups is not None
    groups = frame["patient_id"].to_numpy() if groups is None else groups
    n_patients = len(np.unique(groups))
    if config.n_folds > n_patients:
        raise SplitError(
            f"{config.n_folds} folds need at least {config.n_folds} patients; "
            f"the catalog has {n_patients}" + (" (near-duplicates merged)" if merged else "")
        )
    folds = np.full(len(frame), -1)
    if key is None:
        # Plain GroupKFold ignores row order for equal-sized groups, so only its own shuffle makes the seed matter.
        splitter = GroupKFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed)
        for fold, (_, val) in enumerate(splitter.split(np.zeros(len(frame)), groups=groups)):
            folds[val] = fold
        return folds
    y = frame[key].astype(str).to_numpy()
    if key == "label":  # a fold without a class has no AUC / sensitivity: refused, not a NaN in the leaderboard
        per_class = pd.Series(groups).groupby(y).nunique()
        if per_class.min() < config.n_folds:
            raise SplitError(
                f"{config.n_folds} folds need at least {config.n_folds} patients of every class; class "
                f"{per_class.idxmin()!r} has {per_class.min()}: use fewer folds or add cases of that class"
            )
    splitter = StratifiedGroupKFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed)
    for fold, (_, val) in enumerate(splitter.split(np.zeros(len(frame)), y, groups)):
        folds[val] = fold
    return folds


def sample_groups(y: np.ndarray, groups: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """Indices (sorted) of about ``cap`` cases: whole groups (patients), drawn at random until each class ``y``
    (integer codes) holds its share of ``cap``, so every class keeps at least one group. All indices when ``cap`` is
    None or not below the cases. A study too large for its budget (``SplitConfig.max_cases``) and a classifier too
    slow for all its training cases (an RBF SVM fits in time quadratic in them) take such a sample."""
    if cap is None or len(y) <= cap:
        return np.arange(len(y))
    names, inverse = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(names), int(y.max()) + 1))
    np.add.at(counts, (inverse, y), 1)
    target = np.maximum(1.0, np.round(counts.sum(axis=0) / len(y) * cap))
    taken, keep = np.zeros(counts.shape[1]), np.zeros(len(names), dtype=bool)
    for g in np.random.default_rng(seed).permutation(len(names)):
        if np.any((counts[g] > 0) & (taken < target)):  # the group adds a case of a class short of its share
            keep[g], taken = True, taken + counts[g]
            if np.all(taken >= target):
                break
    return np.flatnonzero(keep[inverse])


def make_splits(frame: pd.DataFrame, config: SplitConfig = SplitConfig(), *, content: str | None = None) -> dict:
    """Split a catalog into patient-level, stratified folds.

    ``content`` (:func:`content_hash`, when the caller took it) is recorded with the dataset.

    Rows whose stratification value is missing (e.g. LIDC nodules excluded by
    the malignancy policy) are left out and listed under ``excluded``.

    Returns:
        The split document (see the module docstring), hash included.

    Raises:
        SplitError: More folds than patients, or an unknown stratification column.
    """
    excluded: dict[str, str] = {}
    duplicates: list[list[str]] = []
    if config.dedupe:
        duplicates = find_duplicates(frame)
        excluded.update({cid: f"duplicate of {group[0]}" for group in duplicates for cid in group[1:]})
    key = _stratify_key(frame, config.stratify)
    if key is not None:
        excluded.update({cid: f"no {key}" for cid in frame.loc[frame[key].isna(), "case_id"]})
    kept = frame[~frame["case_id"].isin(excluded)].reset_index(drop=True)
    if config.max_cases is not None and len(kept) > config.max_cases:
        codes = pd.factorize(kept[key])[0] if key is not None else np.zeros(len(kept), dtype=int)
        picked = sample_groups(codes, kept["patient_id"].astype(str).to_numpy(), config.max_cases, config.seed)
        left_out = kept["case_id"].drop(kept.index[picked])
        excluded.update({cid: f"not in the study's sample of {config.max_cases} cases" for cid in left_out})
        kept = kept.iloc[picked].reset_index(drop=True)
    near: list[list[str]] = []
    if _uses_near_duplicates(kept, config):
        from tumorbench.data.near_duplicates import find_near_duplicates, split_groups

        near = find_near_duplicates(kept)
    folds = _assign_folds(kept, config, key, split_groups(kept, near) if near else None)
    fold_docs = []
    for fold in range(config.n_folds):
        val = kept[folds == fold]
        fold_docs.append(
            {"fold": fold, "val": sorted(val["case_id"]), "val_patients": sorted(val["patient_id"].unique())}
        )
    doc = {
        "version": SPLIT_FORMAT_VERSION,
        "config": asdict(config) | {"stratify_column": key},
        "dataset": {
            "root": frame.attrs.get("root"),
            "layout": frame.attrs.get("layout"),
            "n_cases": int(len(frame)),
            "catalog_hash": catalog_hash(frame),
            "content_hash": content,
        },
        "excluded": dict(sorted(excluded.items())),
        "duplicates": duplicates,
        "near_duplicates": near,
        "folds": fold_docs,
    }
    doc["hash"] = _json_hash(doc)
    return doc


def write_splits(doc: dict, path: str | Path) -> Path:
    """Write a split document as JSON (atomically, so a crash leaves no half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def load_splits(path: str | Path, frame: pd.DataFrame | None = None) -> dict:
    """Read a split file, verify its hash and, given the catalog, that it belongs to it.

    Raises:
        DataError: Unreadable file, a hash that does not match its content
            (edited by hand), or a catalog other than the one it was made from.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read split file: {exc}") from exc
    stored = doc.pop("hash", None)
    if stored != _json_hash(doc):
        raise DataError(path, "split file content does not match its hash (edited or damaged)")
    doc["hash"] = stored
    if frame is not None and doc["dataset"]["catalog_hash"] != catalog_hash(frame):
        raise DataError(path, "split file was made for another catalog (cases, files or labels differ)")
    return doc


def fold_frames(frame: pd.DataFrame, doc: dict, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation rows of one fold (excluded cases in neither)."""
    if not 0 <= fold < len(doc["folds"]):
        raise SplitError(f"fold {fold} out of range: the split has {len(doc['folds'])} folds")
    val_ids = set(doc["folds"][fold]["val"])
    usable = frame[~frame["case_id"].isin(doc["excluded"])]
    is_val = usable["case_id"].isin(val_ids)
    return usable[~is_val].reset_index(drop=True), usable[is_val].reset_index(drop=True)
