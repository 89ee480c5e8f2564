"""Fold data for one worker: catalog -> split file -> fold cases -> transforms -> loaders.

Each worker reads the same catalog and split file and keeps its own shard of
the training cases (padded to equal length, so every rank runs the same number
of steps and DDP never waits on a rank that ran out of data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from tumorbench.data.catalog import scan
from tumorbench.data.datasets import cases_from_catalog, make_dataset
from tumorbench.data.splits import SplitConfig, fold_frames, load_splits, make_splits, write_splits
from tumorbench.errors import DataError
from tumorbench.tasks import TaskError, get_task
from tumorbench.training.config import VOLUME_LAYOUTS, TrainConfig, TrainConfigError
from tumorbench.transforms import build_transforms

SPLIT_FILE_NAME = "splits.json"


@dataclass
class FoldCases:
    """The cases of one fold and what the model must be sized for."""

    train: list[dict]
    val: list[dict]
    class_names: list[str] | None
    data_dims: int
    layout: str
    catalog_hash: str
    split_hash: str


def split_path(config: TrainConfig) -> Path:
    return Path(config.split_file) if config.split_file else Path(config.out) / SPLIT_FILE_NAME


def materialize_split(config: TrainConfig, text: str | None) -> None:
    """Write the split file's ``text`` at its path on this node when the node does not have it (other disk)."""
    path = split_path(config)
    if text is None or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(text)
    scratch.replace(path)  # atomic: workers of one node may race here


def load_catalog(config: TrainConfig) -> pd.DataFrame:
    """The catalog for a task, refused when it holds nothing the task can learn from."""
    frame = scan(config.data, config.layout)
    try:
        get_task(config.task).check_catalog(frame, config.data)
    except TaskError as exc:
        raise TrainConfigError(str(exc)) from None
    return frame


def ensure_split_file(config: TrainConfig, frame: pd.DataFrame) -> dict:
    """Read the split file, or make it (patient-level, stratified) when it does not exist yet."""
    path = split_path(config)
    if path.exists():
        return load_splits(path, frame)
    if config.split_file:
        raise DataError(path, "split file not found")
    task = get_task(config.task)
    split = SplitConfig(n_folds=config.n_folds, seed=config.seed, stratify=task.stratify,
                        dedupe=config.dedupe and task.dedupe)
    doc = make_splits(task.split_frame(frame), split)
    write_splits(doc, path)
    return doc


def fold_cases(config: TrainConfig) -> FoldCases:
    """Training and validation case dicts of the configured fold."""
    frame = load_catalog(config)
    doc = load_splits(split_path(config), frame)
    if len(doc["folds"]) <= config.fold:
        raise TrainConfigError(f"fold {config.fold} does not exist: {split_path(config)} has {len(doc['folds'])} folds")
    train, val = fold_frames(frame, doc, config.fold)
    task = get_task(config.task)
    class_names, train, val = task.class_names(frame), task.usable(train), task.usable(val)
    return FoldCases(
        train=cases_from_catalog(train, class_names), val=cases_from_catalog(val, class_names),
        class_names=class_names, data_dims=3 if frame.attrs["layout"] in VOLUME_LAYOUTS else 2,
        layout=frame.attrs["layout"], catalog_hash=doc["dataset"]["catalog_hash"], split_hash=doc["hash"])


def train_shard(config: TrainConfig, cases: FoldCases, rank: int, world_size: int) -> list[dict]:
    """This rank's share of the training cases (MONAI's ``partition_dataset``: a seeded shuffle, every
    ``world_size``-th case, padded from the start so every rank gets the same count, as DDP needs)."""
    from monai.data import partition_dataset

    return partition_dataset(cases.train, num_partitions=world_size, shuffle=True, seed=config.seed,
                             even_divisible=True, drop_last=False)[rank]


def transforms_for(config: TrainConfig, data_dims: int, *, train: bool, seed: int | None = None):
    return build_transforms(config.preprocess, config.augment if train else None, spatial_dims=data_dims,
                            with_mask=get_task(config.task).with_mask, train=train,
                            sampling=config.sampling if train else None, seed=seed)


def train_loader(config: TrainConfig, cases: FoldCases, rank: int, world_size: int,
                 extra: torch.utils.data.Dataset | None = None) -> torch.utils.data.DataLoader:
    """A shuffled loader over this rank's training shard (plus optional generated samples)."""
    from monai.data import DataLoader

    shard_cases = train_shard(config, cases, rank, world_size)
    transform = transforms_for(config, cases.data_dims, train=True, seed=config.seed + rank)
    cache_dir = Path(config.out) / "cache" if config.cache == "disk" else None
    dataset: torch.utils.data.Dataset = make_dataset(shard_cases, transform, cache=config.cache, cache_dir=cache_dir)
    if extra is not None:
        dataset = torch.utils.data.ConcatDataset([dataset, extra])
    generator = torch.Generator().manual_seed(config.seed * 1000 + rank)
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=0,
                      generator=generator, drop_last=len(dataset) > config.batch_size)


def val_dataset(config: TrainConfig, cases: FoldCases, rank: int, world_size: int):
    """This rank's validation cases, whole patients per rank (each case scored exactly once)."""
    patients = sorted({case["patient_id"] for case in cases.val})
    mine = set(patients[rank::world_size])
    own = [case for case in cases.val if case["patient_id"] in mine]
    cache = "memory" if config.cache != "none" else "none"
    return make_dataset(own, transforms_for(config, cases.data_dims, train=False), cache=cache)


def io_channels(config: TrainConfig, cases: FoldCases) -> tuple[int, int]:
    """Input channels and outputs of the model, read from one preprocessed case.

    Outputs are mask channels for segmentation (1, or 3 for BraTS regions) and
    the number of classes otherwise.
    """
    sample: Any = transforms_for(config, cases.data_dims, train=False)(dict((cases.val or cases.train)[0]))
    return int(sample["image"].shape[0]), get_task(config.task).output_channels(sample, cases.class_names)
