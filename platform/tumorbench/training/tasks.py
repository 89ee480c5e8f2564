"""Per-task pieces of the training loop: model sizing, loss, one training epoch.

The loop itself (``loop.py``) is task-agnostic: it asks this module for the
model keywords, the loss and the step, and asks ``validation.py`` for metrics.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tumorbench.models import create_model, model_info
from tumorbench.training.config import TrainConfig, TrainConfigError
from tumorbench.training.gan import check_gan_config

# GAN losses do not track sample quality, so GAN checkpoints rank by recency (see training/gan.py).
PRIMARY_METRIC = {"classification": "auc", "segmentation": "dice", "gan": "epoch"}
METRIC_ORDER = {"classification": "max", "segmentation": "max", "gan": "max"}


def check_model_for_task(config: TrainConfig, data_dims: int) -> None:
    """Refuse a model that cannot do the task or the dimensionality, before any worker starts."""
    info = model_info(config.model)  # unknown names raise here, listing the valid ones
    if info.task != config.task:
        raise TrainConfigError(f"model {config.model!r} is a {info.task} model; it cannot train for "
                               f"{config.task} (choose from the {config.task} models: tumorbench models)")
    if config.spatial_dims not in info.spatial_dims:
        raise TrainConfigError(f"model {config.model!r} supports spatial_dims {info.spatial_dims}, "
                               f"not {config.spatial_dims}")
    if config.spatial_dims > data_dims:
        raise TrainConfigError(f"a {config.spatial_dims}D model cannot train on {data_dims}D images")
    if data_dims == 3 and config.spatial_dims == 2 and config.task == "segmentation" \
            and config.sampling.mode != "slice2d":
        raise TrainConfigError("a 2D model on volumes needs sampling mode 'slice2d'")
    if config.task == "gan":
        check_gan_config(config, data_dims)


def model_kwargs(config: TrainConfig, in_channels: int, out_channels: int) -> dict[str, Any]:
    """The model's keywords: the config's extras plus input/output sizes named the model's way."""
    accepted = model_info(config.model).default_kwargs
    sizes = {"in_chans": in_channels, "num_classes": out_channels, "in_channels": in_channels,
             "out_channels": out_channels, "spatial_dims": config.spatial_dims}
    if config.task == "gan":
        sizes = {"out_channels": in_channels, "num_classes": out_channels}
    kwargs = {k: v for k, v in sizes.items() if k in accepted}
    if "pretrained" in accepted:
        kwargs["pretrained"] = config.pretrained
    elif config.pretrained:
        raise TrainConfigError(f"model {config.model!r} has no pretrained weights option")
    return kwargs | dict(config.model_kwargs)


def build_model(config: TrainConfig, in_channels: int, out_channels: int) -> tuple[torch.nn.Module, dict]:
    """Create the model; returns it with the keywords that rebuild it (pretrained off: weights come from the package)."""
    kwargs = model_kwargs(config, in_channels, out_channels)
    model = create_model(config.model, **kwargs)
    if config.task == "segmentation" and config.foreground_prior:
        init_output_bias(model, out_channels, config.foreground_prior)
    return model, {k: v for k, v in kwargs.items() if k != "pretrained"}


def init_output_bias(model: torch.nn.Module, out_channels: int, prior: float) -> bool:
    """Start the output layer at the foreground prior (logit of ``prior``), as RetinaNet does.

    Tumor is a few percent of the pixels; from the default bias (p = 0.5 everywhere)
    Adam needs thousands of steps just to learn that most pixels are background.

    Returns:
        Whether an output convolution with a bias was found.
    """
    convs = (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
    last = [m for m in model.modules() if isinstance(m, convs) and m.out_channels == out_channels
            and m.bias is not None]
    if not last:
        return False
    with torch.no_grad():
        last[-1].bias.fill_(math.log(prior / (1 - prior)))
    return True


def make_loss(config: TrainConfig, class_counts: np.ndarray | None) -> torch.nn.Module:
    if config.task == "segmentation":
        from monai.losses import DiceCELoss

        # Batch Dice: slices without tumor do not turn the Dice term into noise.
        return DiceCELoss(sigmoid=True, batch=True)
    weights = None
    if class_counts is not None and (class_counts > 0).all():
        weights = torch.as_tensor(class_counts.sum() / (len(class_counts) * class_counts), dtype=torch.float32)
    return torch.nn.CrossEntropyLoss(weight=weights)


def lr_lambda(total_steps: int, warmup_steps: int):
    """Linear warm-up then cosine decay to 1% of the peak, per optimizer step."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


@dataclass
class Precision:
    """Autocast settings: bf16/fp16 on CUDA, full precision on CPU."""

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    @classmethod
    def for_device(cls, mode: str, device: torch.device) -> Precision:
        if device.type != "cuda" or mode == "off":
            return cls(None, None)
        use_bf16 = mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported())
        dtype = torch.bfloat16 if use_bf16 else torch.float16
        return cls(dtype, None if use_bf16 else torch.amp.GradScaler("cuda"))

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype) if self.dtype else nullcontext()


def _batch_target(config: TrainConfig, batch: dict, device: torch.device) -> torch.Tensor:
    if config.task == "segmentation":
        return batch["mask"].float().to(device)
    return torch.as_tensor(batch["label"]).long().to(device)


def train_epoch(model, loader, loss_fn, optimizer, scheduler, precision: Precision, config: TrainConfig,
                device: torch.device) -> dict[str, float]:
    """One pass over this worker's shard; returns the mean loss and throughput."""
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        images = batch["image"].float().to(device)
        target = _batch_target(config, batch, device)
        with precision.autocast(device):
            logits = model(images)
        loss = loss_fn(logits.float(), target)  # the Dice terms stay in fp32
        optimizer.zero_grad(set_to_none=True)
        if precision.scaler is not None:
            precision.scaler.scale(loss).backward()
            precision.scaler.unscale_(optimizer)
        else:
            loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        if precision.scaler is not None:
            precision.scaler.step(optimizer)
            precision.scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        total += float(loss.detach()) * len(images)
        count += len(images)
    return {"train_loss": total / max(count, 1), "train_images": count}
