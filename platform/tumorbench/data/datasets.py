"""MONAI datasets over catalog cases, with in-memory or on-disk caching."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import pickle_hashing
from monai.utils import convert_to_tensor

from tumorbench.errors import DataError
from tumorbench.transforms.custom import LABEL

CACHE_MODES = ("none", "memory", "disk")
# Catalog columns a transform chain may use besides the five core ones.
_PASSTHROUGH = ("enhancing_label", "series_uid", "slice_index")


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # sequences: never "missing" as a whole
        return False


def _paths(value: Any, case_id: str) -> list[str]:
    if _is_missing(value):
        raise DataError(case_id, "case has no image path")
    if isinstance(value, (str, Path)):
        return [str(value)]
    paths = [str(p) for p in value]
    if not paths:
        raise DataError(case_id, "case has an empty image list")
    return paths


def _label_index(value: Any, class_names: Sequence[str] | None, case_id: str) -> int | None:
    if _is_missing(value):
        return None
    if class_names is not None:
        if value not in class_names:
            raise DataError(case_id, f"label {value!r} is not one of the classes {list(class_names)}")
        return list(class_names).index(value)
    if isinstance(value, (int, float)) and float(value).is_integer():
        return int(value)
    raise DataError(case_id, f"label {value!r} is a class name: pass class_names to map it to an index")


def cases_from_catalog(df: pd.DataFrame, class_names: Sequence[str] | None = None) -> list[dict]:
    """Turn catalog rows into case dicts for :func:`make_dataset`.

    Args:
        df: Catalog with columns ``case_id``, ``patient_id``, ``image`` (one path or a
            sequence of paths), ``mask`` (path, None or NaN) and ``label`` (class name,
            index, None or NaN). ``enhancing_label``, ``series_uid`` and ``slice_index``
            are passed through when present.
        class_names: Class order; a label's index in it becomes the case label.
            Without it, string labels are sorted to define the order.

    Returns:
        One dict per row: ``case_id``, ``patient_id``, ``image`` (list of str), ``mask``
        (str or None), ``label`` (int or None), plus present pass-through columns.
    """
    missing = {"case_id", "image"} - set(df.columns)
    if missing:
        raise ValueError(f"catalog lacks columns {sorted(missing)}")
    labels = df["label"] if "label" in df.columns else pd.Series([None] * len(df), index=df.index)
    if class_names is None and any(isinstance(v, str) for v in labels):
        class_names = sorted({v for v in labels if isinstance(v, str)})
    cases = []
    for row in df.to_dict("records"):
        case_id = str(row["case_id"])
        mask = row.get("mask")
        case = {
            "case_id": case_id,
            "patient_id": str(row.get("patient_id") or case_id),
            "image": _paths(row["image"], case_id),
            "mask": None if _is_missing(mask) else str(mask),
            "label": _label_index(row.get("label"), class_names, case_id),
        }
        for column in _PASSTHROUGH:
            if column in row and not _is_missing(row[column]):
                value = row[column]
                case[column] = int(value) if column != "series_uid" else str(value)
        cases.append(case)
    return cases


def make_dataset(
    cases: list[dict] | pd.DataFrame,
    transform: Callable,
    *,
    cache: Literal["none", "memory", "disk"] = "memory",
    cache_dir: str | Path | None = None,
    cache_rate: float = 1.0,
    num_workers: int | None = 0,
) -> Dataset:
    """Wrap cases in a MONAI dataset that caches the deterministic prefix of ``transform``.

    Args:
        cases: Case dicts, or a catalog DataFrame (converted by :func:`cases_from_catalog`).
        transform: Usually :func:`tumorbench.transforms.build_transforms`.
        cache: ``none`` (``Dataset``), ``memory`` (``CacheDataset``; with ``cache_dir``, filled from
            and into a disk cache: :class:`DiskBackedCacheDataset`) or ``disk`` (``PersistentDataset``).
            Disk caches are keyed on the case and on the cached transforms.
        cache_dir: Folder of the disk cache (required for ``disk``).
        cache_rate: Fraction of cases cached in memory.
        num_workers: Threads filling the memory cache (0 or 1 = one, None = all CPUs).

    Raises:
        ValueError: Unknown cache mode, bad rate, or ``disk`` without ``cache_dir``.
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    if not 0.0 <= cache_rate <= 1.0:
        raise ValueError(f"cache_rate must be in [0, 1], got {cache_rate}")
    data = cases_from_catalog(cases) if isinstance(cases, pd.DataFrame) else list(cases)
    if cache == "none":
        return Dataset(data, transform)
    if cache == "memory" and cache_dir is not None:
        return DiskBackedCacheDataset(data, transform, Path(cache_dir), cache_rate=cache_rate, num_workers=num_workers)
    if cache == "memory":
        return CacheDataset(data, transform, cache_rate=cache_rate, num_workers=num_workers, progress=False)
    if cache_dir is None:
        raise ValueError("cache='disk' needs cache_dir: the folder where preprocessed cases are stored")
    return DiskCacheDataset(data, transform, Path(cache_dir))


CACHE_FORMAT = "-meta1"  # in every disk cache file's name: changed when what the files hold changes


def _one_type(item: Any) -> Any:
    """A cached case with MetaTensors for its arrays and a plain label, whether read back or decoded now.

    A fold holds both kinds of case, and a batch mixing plain tensors and MetaTensors fails to
    collate where no random transform follows (augment "none"); the MetaTensors keep their
    pixdim and affine for whatever reads them.
    """
    item = convert_to_tensor(item, convert_numeric=False, track_meta=True)
    if isinstance(item, dict) and isinstance(item.get(LABEL), torch.Tensor):
        item[LABEL] = convert_to_tensor(item[LABEL], track_meta=False)  # plain, as the chain leaves it
    return item


class DiskCacheDataset(PersistentDataset):
    """MONAI's ``PersistentDataset`` keyed on the case and the cached transforms, keeping MetaTensors.

    The files are full pickles (MetaTensors cannot be loaded ``weights_only``); the folder is the
    study's own output, written by its own trials.
    """

    def __init__(self, data: Sequence, transform: Callable, cache_dir: Path) -> None:
        # hash the cached transforms too, so a changed preprocessing config never reads stale files
        super().__init__(
            data, transform, cache_dir=cache_dir, hash_transform=pickle_hashing, track_meta=True, weights_only=False
        )

    def set_transform_hash(self, hash_xform_func: Callable[..., bytes]) -> None:
        super().set_transform_hash(hash_xform_func)
        self.transform_hash += CACHE_FORMAT  # files of an older format (plain tensors) are not read back

    def _cachecheck(self, item_transformed: Any) -> Any:
        """MONAI's look-up, but a miss is written beside its final name and renamed into place.

        MONAI writes under ``/tmp`` and moves the file: onto a shared cluster disk that move is a
        copy, and a trial side by side could load the half-copied file and fail. A rename within
        the folder is atomic. A disk that cannot take the file (full, read-only) costs only the decode.
        """
        name = self.hash_func(item_transformed).decode("utf-8") + self.transform_hash
        target = Path(self.cache_dir) / f"{name}.pt"
        if target.is_file():  # MONAI's read: corrupt files are deleted and recomputed
            return _one_type(super()._cachecheck(item_transformed))
        item = _one_type(self._pre_transform(deepcopy(item_transformed)))  # keep the hashed original
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=target.parent)
        except OSError:
            return item
        os.close(fd)
        try:
            torch.save(item, temp, pickle_protocol=self.pickle_protocol)
            os.replace(temp, target)
        except OSError:
            Path(temp).unlink(missing_ok=True)
        return item


class DiskBackedCacheDataset(CacheDataset):
    """A memory cache filled from a disk cache that every fold and trial of a study shares.

    A fold's workers hold their cases in memory (no disk read per epoch), but a case is decoded
    and resized once per study and preprocessing config, not once per fold and trial: later fills
    read MONAI's ``PersistentDataset`` files (written atomically, so trials side by side may share
    them). A disk that cannot take a file (full, read-only) only costs the decode.
    """

    def __init__(self, data: Sequence, transform: Callable, cache_dir: Path, **kwargs: Any) -> None:
        self.disk = DiskCacheDataset(data, transform, cache_dir)
        super().__init__(data, transform, progress=False, **kwargs)

    def _load_cache_item(self, idx: int) -> Any:
        try:
            return self.disk._cachecheck(self.data[idx])
        except OSError:
            return _one_type(super()._load_cache_item(idx))
