"""Fold data for one worker: catalog -> split file -> fold cases -> transforms -> loaders.

Each worker reads the same catalog and split file and keeps its own shard of
the training cases (padded to equal length, so every rank runs the same number
of steps and DDP never waits on a rank that ran out of data).

MONAI's datasets and transforms are imported where a worker builds them, not with the module: the Tune
trial that launches a run only reads the catalog and the split file here (``training.trainer.preflight``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from tumorbench.data.catalog import data_dims as catalog_dims
from tumorbench.data.catalog import scan
from tumorbench.data.splits import SplitConfig, content_hash, fold_frames, load_splits, make_splits, write_splits
from tumorbench.errors import DataError
from tumorbench.tasks import TaskError, get_task
from tumorbench.training.config import TrainConfig, TrainConfigError
from tumorbench.training.nested import inner_groups, inner_split, uses_nested

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
    test: list[dict] = field(default_factory=list)  # the outer fold under nested selection (scored once)
    input_channels: list[str] | None = None  # the image channels' names in model order (catalog "channels")


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
    """Read the split file, or make it (patient-level, stratified) when it does not exist yet; either way
    refused when nested selection cannot be made in some fold (:func:`check_inner_sets`)."""
    path = split_path(config)
    if path.exists():
        doc = load_splits(path, frame)
        check_inner_sets(config, frame, doc)
        return doc
    if config.split_file:
        raise DataError(path, "split file not found")
    task = get_task(config.task)
    split = SplitConfig(
        n_folds=config.n_folds,
        seed=config.seed,
        stratify=task.stratify,
        dedupe=config.dedupe and task.dedupe,
        max_cases=config.max_cases,
    )
    doc = make_splits(task.split_frame(frame), split, content=content_hash(frame))
    check_inner_sets(config, frame, doc)  # before the file exists: a refused split is not kept
    write_splits(doc, path)
    return doc


def fold_cases(config: TrainConfig) -> FoldCases:
    """Training and validation case dicts of the configured fold."""
    from tumorbench.data.datasets import cases_from_catalog

    frame = load_catalog(config)
    doc = load_splits(split_path(config), frame)
    if len(doc["folds"]) <= config.fold:
        raise TrainConfigError(f"fold {config.fold} does not exist: {split_path(config)} has {len(doc['folds'])} folds")
    train, val = fold_frames(frame, doc, config.fold)
    task = get_task(config.task)
    if config.test_data:  # the final model: every training case; the locked test set is scored once
        train = pd.concat([train, val], ignore_index=True)
        val = scan(config.test_data, config.layout)
    class_names, train, val = task.class_names(frame), task.usable(train), task.usable(val)
    test: list[dict] = []
    if uses_nested(config):
        # The outer fold becomes the test set, scored once; the inner patients do all the choosing.
        test = cases_from_catalog(val, class_names)
        train, val = _inner_sets(config, train, doc)
    return FoldCases(
        train=cases_from_catalog(train, class_names),
        val=cases_from_catalog(val, class_names),
        class_names=class_names,
        data_dims=catalog_dims(frame),
        layout=frame.attrs["layout"],
        catalog_hash=doc["dataset"]["catalog_hash"],
        split_hash=doc["hash"],
        test=test,
        input_channels=[str(c) for c in frame["channels"].iloc[0]] if len(frame) else None,
    )


def _inner_sets(config: TrainConfig, train: pd.DataFrame, doc: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The outer training rows split into inner training and validation, near-duplicate groups kept whole."""
    groups = inner_groups(train, doc.get("near_duplicates") or [])
    return inner_split(train, config.inner_val_fraction, config.seed * 1000 + config.fold, groups)


def _outer_training_rows(config: TrainConfig, frame: pd.DataFrame, doc: dict, fold: int) -> pd.DataFrame:
    train, val = fold_frames(frame, doc, fold)
    if config.test_data:
        train = pd.concat([train, val], ignore_index=True)
    return get_task(config.task).usable(train)


def check_inner_sets(config: TrainConfig, frame: pd.DataFrame, doc: dict) -> None:
    """Refuse, before any worker starts, a nested selection that leaves some fold without inner validation cases.

    A fold whose training part is one patient (or one near-duplicate group) has nobody left to choose the
    epoch: its configurations would be ranked by NaN. (``inner_val_fraction`` 0 turns nested selection off.)
    """
    if not uses_nested(config) or config.inner_val_fraction <= 0:
        return
    for fold in [0] if config.test_data else range(len(doc["folds"])):
        train = _outer_training_rows(config, frame, doc, fold)
        groups = inner_groups(train, doc.get("near_duplicates") or [])
        n_groups = len(set(groups))
        if n_groups >= 2:
            continue
        merged = " (near-duplicates merged)" if doc.get("near_duplicates") else ""
        where = "the final model's training data" if config.test_data else f"fold {fold} of {split_path(config)}"
        raise TrainConfigError(
            f"{where} trains on {n_groups} patient group(s){merged}: nested selection (inner_val_fraction "
            f"{config.inner_val_fraction:g}) needs at least 2, one to train and one to choose the epoch. "
            f"Use fewer folds or more patients, or inner_val_fraction 0 (selection on the reported fold: optimistic)"
        )


def train_shard(config: TrainConfig, cases: FoldCases, rank: int, world_size: int) -> list[dict]:
    """This rank's share of the training cases (MONAI's ``partition_dataset``: a seeded shuffle, every
    ``world_size``-th case, padded from the start so every rank gets the same count, as DDP needs)."""
    from monai.data import partition_dataset

    return partition_dataset(
        cases.train, num_partitions=world_size, shuffle=True, seed=config.seed, even_divisible=True, drop_last=False
    )[rank]


def worker_cpus() -> float:
    """CPUs Ray assigned to this worker (outside a Ray worker: the CPUs this process may use)."""
    import os

    try:
        import ray

        return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))
    except (ImportError, AssertionError, RuntimeError):  # not in a Ray worker (Ray asserts worker mode)
        return float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def configure_threads(cpus: float | None = None) -> int:
    """Torch intra-op threads = the CPUs this worker holds (rounded, at least 1); returns the count.

    Ray sets ``OMP_NUM_THREADS=1`` in workers with fractional CPUs, so a worker holding 1.9 CPUs
    would otherwise train on one thread while a plain loop uses every core.
    """
    threads = max(1, round(worker_cpus() if cpus is None else cpus))
    torch.set_num_threads(threads)
    return threads


def loader_workers(device: torch.device, cpus: float | None = None) -> int:
    """DataLoader processes: on a GPU, the worker's CPUs but one (the training loop keeps it); none on CPU."""
    if device.type != "cuda":
        return 0  # on CPU the training step already uses every core the worker holds
    return max(0, int(worker_cpus() if cpus is None else cpus) - 1)


def transforms_for(config: TrainConfig, data_dims: int, *, train: bool, seed: int | None = None):
    from tumorbench.transforms import build_transforms

    return build_transforms(
        config.preprocess,
        config.augment if train else None,
        spatial_dims=data_dims,
        with_mask=get_task(config.task).with_mask,
        train=train,
        sampling=config.sampling if train else None,
        seed=seed,
    )


def cache_folder(config: TrainConfig) -> str | None:
    """The disk cache a run reads and fills: the study's shared one, else ``<out>/cache`` for ``cache: disk``.

    ``cache: memory`` is backed by the study's shared disk cache when it has one (None: decoded in memory only).
    """
    if config.cache_dir:
        return str(config.cache_dir)
    return str(Path(config.out) / "cache") if config.cache == "disk" else None


def train_loader(
    config: TrainConfig,
    cases: FoldCases,
    rank: int,
    world_size: int,
    extra: torch.utils.data.Dataset | None = None,
    device: torch.device | None = None,
) -> torch.utils.data.DataLoader:
    """A shuffled loader over this rank's training shard (plus optional generated samples).

    On a GPU it uses :func:`loader_workers` processes and pinned memory (faster host-to-device copies).
    """
    from monai.data import DataLoader

    from tumorbench.data.datasets import make_dataset

    shard_cases = train_shard(config, cases, rank, world_size)
    transform = transforms_for(config, cases.data_dims, train=True, seed=config.seed + rank)
    dataset: torch.utils.data.Dataset = make_dataset(
        shard_cases, transform, cache=config.cache, cache_dir=cache_folder(config)
    )
    if extra is not None:
        dataset = torch.utils.data.ConcatDataset([dataset, extra])
    generator = torch.Generator().manual_seed(config.seed * 1000 + rank)
    gpu = device is not None and device.type == "cuda"
    workers = loader_workers(device) if gpu else 0
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=workers,
        generator=generator,
        drop_last=len(dataset) > config.batch_size,
        pin_memory=gpu,
        persistent_workers=workers > 0,
    )


def val_dataset(config: TrainConfig, cases: FoldCases, rank: int, world_size: int, *, outer: bool = False):
    """This rank's validation cases (``outer``: the outer fold's), whole patients per rank (each scored once)."""
    from tumorbench.data.datasets import make_dataset

    chosen = cases.test if outer else cases.val
    patients = sorted({case["patient_id"] for case in chosen})
    mine = set(patients[rank::world_size])
    own = [case for case in chosen if case["patient_id"] in mine]
    if outer and cases.data_dims == 2 and config.preprocess.spatial_size and get_task(config.task).with_mask:
        # The outer fold is what the leaderboard reports: scored on the mask files' own grid, like the baselines.
        from tumorbench.training.validation import NATIVE_FOREGROUND, NATIVE_MASK

        native = {NATIVE_FOREGROUND: config.preprocess.foreground_labels} if config.preprocess.foreground_labels else {}
        own = [
            dict(case, **{NATIVE_MASK: case["mask"]}, **native) if isinstance(case.get("mask"), str) else case
            for case in own
        ]
    if config.cache == "none":
        return make_dataset(own, transforms_for(config, cases.data_dims, train=False), cache="none")
    # Held in memory, filled from the study's disk cache where it has one: a case is decoded once per study
    # for validation, not once per fold and trial (a 3D volume takes seconds). The files keep MetaTensors,
    # so scoring still has each case's pixdim and native mask.
    return make_dataset(
        own, transforms_for(config, cases.data_dims, train=False), cache="memory", cache_dir=cache_folder(config)
    )


def io_channels(config: TrainConfig, cases: FoldCases) -> tuple[int, int]:
    """Input channels and outputs of the model, read from one preprocessed case.

    Outputs are mask channels for segmentation (1, or 3 for BraTS regions) and
    the number of classes otherwise.
    """
    sample: Any = transforms_for(config, cases.data_dims, train=False)(dict((cases.val or cases.train)[0]))
    return int(sample["image"].shape[0]), get_task(config.task).output_channels(sample, cases.class_names)
