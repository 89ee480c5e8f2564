"""Per-task pieces of the training loop: model sizing, loss, one training epoch.

The loop itself (``loop.py``) is task-agnostic: what differs per task (sizes,
loss, batch target, validation) is asked of the task's :class:`~tumorbench.tasks.Task`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tumorbench.models import create_model, model_info
from tumorbench.tasks import get_task
from tumorbench.training.config import TrainConfig, TrainConfigError


def check_model_for_task(config: TrainConfig, data_dims: int) -> None:
    """Refuse a model that cannot do the task or the dimensionality, before any worker starts."""
    info = model_info(config.model)  # unknown names raise here, listing the valid ones
    task = get_task(config.task)
    if not task.owns(info.task):
        raise TrainConfigError(
            f"model {config.model!r} is a {info.task} model; it cannot train for "
            f"{config.task} (choose from the {config.task} models: tumorbench models)"
        )
    if config.spatial_dims not in info.spatial_dims:
        raise TrainConfigError(
            f"model {config.model!r} supports spatial_dims {info.spatial_dims}, not {config.spatial_dims}"
        )
    config.check_data(data_dims)


def model_kwargs(config: TrainConfig, in_channels: int, out_channels: int) -> dict[str, Any]:
    """The model's keywords: the config's extras plus input/output sizes named the model's way."""
    accepted = model_info(config.model).default_kwargs
    sizes = get_task(config.task).model_sizes(config, in_channels, out_channels)
    kwargs = {k: v for k, v in sizes.items() if k in accepted}
    if "pretrained" in accepted:
        kwargs["pretrained"] = config.pretrained
    elif config.pretrained:
        raise TrainConfigError(f"model {config.model!r} has no pretrained weights option")
    return kwargs | dict(config.model_kwargs)


def build_model(config: TrainConfig, in_channels: int, out_channels: int) -> tuple[torch.nn.Module, dict]:
    """Create the model; returns it with the keywords that rebuild it (pretrained off: the package has the weights)."""
    kwargs = model_kwargs(config, in_channels, out_channels)
    model = create_model(config.model, **kwargs)
    get_task(config.task).init_model(model, config, out_channels)
    return model, {k: v for k, v in kwargs.items() if k != "pretrained"}


def make_loss(config: TrainConfig, class_counts: np.ndarray | None) -> torch.nn.Module:
    return get_task(config.task).loss(config, class_counts)


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


def channels_last(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.nn.Module:
    """2D models on a GPU in channels-last layout (what tensor-core convolutions want under AMP)."""
    if device.type == "cuda" and config.spatial_dims == 2:
        return model.to(memory_format=torch.channels_last)
    return model


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A float batch on ``device``: asynchronous from pinned memory, channels-last for 2D on a GPU."""
    images = images.float().to(device, non_blocking=True)
    if device.type == "cuda" and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def train_epoch(
    model, loader, loss_fn, optimizer, scheduler, precision: Precision, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    """One pass over this worker's shard; returns the mean loss and throughput."""
    model.train()
    task = get_task(config.task)
    total, count = 0.0, 0
    for batch in loader:
        images = to_device(batch["image"], device)
        target = task.batch_target(batch, device)
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
