"""The per-worker training function (Ray Train V2): a plain dict in, reports out.

Every rank trains on its shard and validates its share of patients; the
records are gathered so every rank reports the same metrics, and rank 0
attaches the checkpoint (weights + ``model.json`` + training state).
"""

from __future__ import annotations

import random
import tempfile
import time
from functools import partial
from typing import Any

import numpy as np
import torch

from tumorbench.models.pretrained import freeze_backbone
from tumorbench.package import ModelManifest
from tumorbench.tasks import get_task
from tumorbench.tasks.classification import positive_index
from tumorbench.tasks.segmentation import mask_channel_names
from tumorbench.training import data as fold_data
from tumorbench.training.checkpoint import resume_latest, write_checkpoint
from tumorbench.training.config import TrainConfig
from tumorbench.training.crossval import FoldRecord, FoldReporter, read_fold_result
from tumorbench.training.gan import synthetic_dataset
from tumorbench.training.nested import load_chosen, save_chosen, write_outer
from tumorbench.training.state import LoopState
from tumorbench.training.tasks import Precision, build_model, channels_last, make_loss, train_epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _class_counts(cases: fold_data.FoldCases) -> np.ndarray | None:
    if not cases.class_names:
        return None
    labels = [case["label"] for case in cases.train]
    return np.bincount(labels, minlength=len(cases.class_names)).astype(float)


def _optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = get_task(config.task).param_groups(getattr(model, "module", model), config)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """Per optimizer step: linear warm-up from ``1/W`` of the peak over ``W = warmup_epochs`` epochs, then
    cosine decay to 1% of ``config.lr`` (MONAI's ``WarmupCosineSchedule``; its floor is one absolute rate,
    so a pretrained backbone at ``backbone_lr_mult`` ends at ``0.01 * lr`` too)."""
    from monai.optimizers import WarmupCosineSchedule

    warmup = config.warmup_epochs * steps_per_epoch
    return WarmupCosineSchedule(
        optimizer,
        warmup_steps=warmup,
        t_total=config.epochs * steps_per_epoch,
        end_lr=0.01 * config.lr,
        warmup_multiplier=1 / max(1, warmup),
    )


def _validate(config, model, val_set, cases, device) -> tuple[dict[str, float], list[dict]]:
    core = getattr(model, "module", model)  # no DDP collectives during validation
    return get_task(config.task).validate(config, core, val_set, cases, device)


def _manifest(config, cases, kwargs, in_ch, out_ch, metrics, epoch) -> ModelManifest:
    return ModelManifest(
        name=config.model,
        task=config.task,
        model_kwargs=kwargs,
        spatial_dims=config.spatial_dims,
        data_dims=cases.data_dims,
        in_channels=in_ch,
        out_channels=out_ch,
        preprocess=config.to_dict()["preprocess"],
        class_names=cases.class_names,
        positive_class=cases.class_names[positive_index(config, cases.class_names)] if cases.class_names else None,
        channel_names=mask_channel_names(config),
        roi_size=list(config.roi_size or config.sampling.patch_size or []) or None,
        data={"root": config.data, "layout": cases.layout, "catalog_hash": cases.catalog_hash}
        | ({"channels": cases.input_channels} if cases.input_channels else {}),
        split={"file": str(fold_data.split_path(config)), "hash": cases.split_hash, "fold": config.fold},
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        epoch=epoch,
    )


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Train on this worker; ``loop_config["train"]`` is ``TrainConfig.to_dict()``.

    One fold (``config.fold``), or with ``loop_config["folds"]`` a Tune trial's folds in turn in this one
    Train run (:mod:`tumorbench.training.crossval`), so the run's start-up is paid once per trial.
    """
    import ray.train
    import ray.train.torch

    config = TrainConfig.from_dict(loop_config["train"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    seed_everything(config.seed + rank)
    fold_data.configure_threads()
    fold_data.materialize_split(config, loop_config.get("split"))
    device = ray.train.torch.get_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        device = torch.device("cpu")  # a GPU declared on a node without CUDA (a test cluster): train on CPU
    if loop_config.get("folds"):
        return train_folds(config, loop_config["folds"], device, rank, world)
    train_one(config, device, rank, world)


def train_folds(config: TrainConfig, folds: list[dict[str, Any]], device, rank: int, world: int) -> None:
    """A trial's folds (dicts of ``fold``, ``out``, ``storage``) in turn in this run, skipping those already done
    (``training.crossval``). Each fold is seeded as its own run would be, so it trains the same here as alone."""
    done: list[FoldRecord] = []
    for spec in folds:
        fold_config = config.replace(**spec)
        record = read_fold_result(fold_config.storage or fold_config.out)
        if record is None:
            seed_everything(config.seed + rank)
            reporter = FoldReporter(fold_config, done, rank)
            outer = train_one(fold_config, device, rank, world, reporter=reporter, resume=reporter.resume)
            record = reporter.finish(outer)
        done.append(record)


def train_one(config: TrainConfig, device: torch.device, rank: int, world: int, *, reporter=None, resume=None):
    """Train ``config.fold`` on this worker: every epoch goes to ``reporter`` (default :func:`_report`, the
    run's best checkpoints); under nested selection rank 0 writes the outer fold's results to its storage.

    Returns:
        The outer fold's ``(metrics, records)``, or None without nested selection.
    """
    import ray.train.torch

    print(_placement(config, rank, world, device), flush=True)  # the worker's log says where it ran
    cases = fold_data.fold_cases(config)
    in_ch, out_ch = fold_data.io_channels(config, cases)
    model, kwargs = build_model(config, in_ch, out_ch)
    model = channels_last(model, config, device)
    manifest = partial(_manifest, config, cases, kwargs, in_ch, out_ch)
    own_loop = get_task(config.task).worker_loop()
    if own_loop is not None:
        return own_loop(config, model, cases, device, manifest)
    strategy = {"find_unused_parameters": True} if config.freeze_backbone_epochs else None
    model = ray.train.torch.prepare_model(model, move_to_device=device, parallel_strategy_kwargs=strategy)
    reporter = reporter or _report

    def report(metrics, state, records, optimizer, scheduler, precision) -> None:
        reporter(
            rank, metrics, model, optimizer, scheduler, precision, state, manifest(metrics, metrics["epoch"]), records
        )

    outer = fit_fold(config, cases, model, device, rank, world, report, resume=resume or resume_latest)
    if outer is not None and rank == 0:
        write_outer(_fold_storage(config), *outer)
    return outer


def _placement(config: TrainConfig, rank: int, world: int, device: torch.device) -> str:
    """Where this Train worker runs: its node, the GPUs Ray assigned it, and the device it trains on."""
    import ray

    context = ray.get_runtime_context()
    gpus = context.get_accelerator_ids().get("GPU", [])
    return (
        f"[tumorbench] fold {config.fold}: Train worker {rank + 1}/{world} on node {context.get_node_id()} "
        f"({ray.util.get_node_ip_address()}), Ray GPU ids {gpus}, training on {device}"
    )


def fit_fold(
    config: TrainConfig,
    cases: fold_data.FoldCases,
    model: torch.nn.Module,
    device: torch.device,
    rank: int,
    world: int,
    report,
    *,
    resume=None,
) -> tuple[dict, list[dict]] | None:
    """Train one fold: every epoch is validated on ``cases.val`` and passed to ``report``; then, under nested
    selection (``cases.test``), the weights of the epoch the inner validation chose score the outer fold once.

    Runs without Ray (``report`` any callable, one rank): the unit tests drive it in-process.

    Returns:
        ``(metrics, records)`` of the outer fold, or None without nested selection.
    """
    # Generated images join the training shard only; validation reads real cases alone.
    extra = synthetic_dataset(config, cases, rank, world, device) if config.gan_checkpoint else None
    loader = fold_data.train_loader(config, cases, rank, world, extra=extra, device=device)
    val_set = fold_data.val_dataset(config, cases, rank, world)
    optimizer = _optimizer(config, model)
    scheduler = warmup_cosine(optimizer, config, steps_per_epoch=max(1, len(loader)))
    precision = Precision.for_device(config.amp, device)
    loss_fn = make_loss(config, _class_counts(cases))
    state = resume(model, optimizer, scheduler, precision) if resume else LoopState()
    chosen = load_chosen(_fold_storage(config)) if cases.test else None  # a resumed run's inner choice so far
    for epoch in range(state.epoch + 1, config.epochs):
        if config.freeze_backbone_epochs:  # classifiers only (Task.check_config)
            freeze_backbone(getattr(model, "module", model), epoch < config.freeze_backbone_epochs)
        started = time.perf_counter()
        stats = train_epoch(model, loader, loss_fn, optimizer, scheduler, precision, config, device)
        train_seconds = time.perf_counter() - started
        metrics, records = _validate(config, model, val_set, cases, device)
        metrics.setdefault(config.selection_metric, float("nan"))  # an empty inner set still reports the key
        primary = metrics[config.selection_metric]
        improved = state.update(primary, epoch, config.selection_mode)
        if improved and cases.test:
            chosen = _keep_chosen(config, model, rank)
        metrics |= stats | {
            "epoch": epoch,
            "lr": optimizer.param_groups[-1]["lr"],
            "improved": improved,
            "train_seconds": train_seconds,
            "val_seconds": time.perf_counter() - started - train_seconds,
            "images_per_second": stats["train_images"] * world / train_seconds,
            "best": state.best,
            "best_epoch": state.best_epoch,
        }
        state.epoch = epoch
        state.history.append({k: v for k, v in metrics.items() if isinstance(v, (int, float, bool))})
        stop = bool(config.patience) and state.bad_epochs >= config.patience
        report(metrics | {"early_stop": stop}, state, records, optimizer, scheduler, precision)
        if stop:
            break
    if not cases.test:
        return None
    return _score_outer(config, model, cases, device, rank, world, chosen, state)


def _fold_storage(config: TrainConfig) -> str:
    """The fold's storage (``trainer.run_storage``): every node reaches it, unlike ``out`` on a cluster."""
    return config.storage or config.out


def _keep_chosen(config: TrainConfig, model: torch.nn.Module, rank: int) -> dict[str, torch.Tensor]:
    """The inner-chosen weights: in memory, and on storage (rank 0) so a resumed run still has them."""
    core = getattr(model, "module", model)
    weights = {k: v.detach().clone() for k, v in core.state_dict().items()}
    if rank == 0:
        save_chosen(_fold_storage(config), {k: v.cpu() for k, v in weights.items()})
    return weights


def _score_outer(config, model, cases, device, rank, world, chosen, state) -> tuple[dict, list[dict]]:
    """The outer fold scored once, by the weights of the inner-chosen epoch (the last one if none improved)."""
    core = getattr(model, "module", model)
    if chosen is not None:
        core.load_state_dict(chosen)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # BatchNorm statistics drift apart per rank after DDP's last buffer broadcast: every rank scores with
        # rank 0's weights and buffers, the exact model its checkpoint (the package) holds.
        for tensor in core.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    metrics, records = _validate(
        config, model, fold_data.val_dataset(config, cases, rank, world, outer=True), cases, device
    )
    epoch = state.best_epoch if chosen is not None else state.epoch
    return metrics | {"epoch": epoch, "inner_best": state.best}, records


def _report(rank, metrics, model, optimizer, scheduler, precision, state, manifest, records) -> None:
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        write_checkpoint(directory, model, manifest, optimizer, scheduler, precision, state, records)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(directory),
            checkpoint_dir_name=f"checkpoint_epoch_{metrics['epoch']:04d}",
        )
