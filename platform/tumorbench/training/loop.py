"""The per-worker training function (Ray Train V2): a plain dict in, reports out.

Every rank trains on its shard and validates its share of patients; the
records are gathered so every rank reports the same metrics, and rank 0
attaches the checkpoint (weights + ``model.json`` + training state).
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from functools import partial
from typing import Any

import numpy as np
import torch

from tumorbench.models.pretrained import freeze_backbone
from tumorbench.package import ModelManifest
from tumorbench.package.weights import load_weights
from tumorbench.tasks import get_task
from tumorbench.tasks.classification import positive_index
from tumorbench.tasks.segmentation import mask_channel_names
from tumorbench.training import data as fold_data
from tumorbench.training.checkpoint import load_training_state, save_checkpoint
from tumorbench.training.config import TrainConfig
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
        data={"root": config.data, "layout": cases.layout, "catalog_hash": cases.catalog_hash},
        split={"file": str(fold_data.split_path(config)), "hash": cases.split_hash, "fold": config.fold},
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        epoch=epoch,
    )


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Train one fold on this worker; ``loop_config["train"]`` is ``TrainConfig.to_dict()``."""
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
    print(_placement(config, rank, world, device), flush=True)  # the worker's log says where it ran
    cases = fold_data.fold_cases(config)
    in_ch, out_ch = fold_data.io_channels(config, cases)
    model, kwargs = build_model(config, in_ch, out_ch)
    model = channels_last(model, config, device)
    own_loop = get_task(config.task).worker_loop()
    if own_loop is not None:
        return own_loop(config, model, cases, device, partial(_manifest, config, cases, kwargs, in_ch, out_ch))
    strategy = {"find_unused_parameters": True} if config.freeze_backbone_epochs else None
    model = ray.train.torch.prepare_model(model, move_to_device=device, parallel_strategy_kwargs=strategy)

    def report(metrics, state, records, optimizer, scheduler, precision) -> None:
        _report(
            rank,
            metrics,
            model,
            optimizer,
            scheduler,
            precision,
            state,
            _manifest(config, cases, kwargs, in_ch, out_ch, metrics, metrics["epoch"]),
            records,
        )

    outer = fit_fold(config, cases, model, device, rank, world, report, resume=_resume)
    if outer is not None and rank == 0:
        write_outer(_fold_storage(config), *outer)


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


def _resume(model, optimizer, scheduler, precision: Precision) -> LoopState:
    """Restore everything from Ray's latest checkpoint of this run, if there is one."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return LoopState()
    with checkpoint.as_directory() as directory:
        load_weights(directory, model)
        saved = load_training_state(directory)
    # A restarted worker (a lost node, a crash) says where it continues from; the log is the operator's record.
    print(f"[tumorbench] resumed from checkpoint {checkpoint.path} (epoch {saved['loop']['epoch']})", flush=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if precision.scaler is not None and saved.get("scaler"):
        precision.scaler.load_state_dict(saved["scaler"])
    return LoopState(**saved["loop"])


def _report(rank, metrics, model, optimizer, scheduler, precision, state, manifest, records) -> None:
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        save_checkpoint(
            directory,
            model,
            manifest,
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": precision.scaler.state_dict() if precision.scaler else None,
                "loop": vars(state),
            },
        )
        with open(f"{directory}/val_predictions.json", "w") as handle:
            json.dump(records, handle, default=float)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(directory),
            checkpoint_dir_name=f"checkpoint_epoch_{metrics['epoch']:04d}",
        )
