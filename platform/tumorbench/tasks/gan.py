"""Conditional GAN training (augmentation for classifiers): no validation score, checkpoints by recency."""

from __future__ import annotations

from typing import Any

from tumorbench.tasks.base import Task, register_task


@register_task
class Gan(Task):
    name = "gan"
    # GAN losses do not track sample quality, so its checkpoints rank by recency (see training/gan.py).
    metrics = ("epoch",)
    primary = "epoch"
    shown = ("d_loss", "g_loss", "d_real", "d_fake")
    target = "label"
    stratify = "label"
    rankable = False
    logs_samples = True  # each checkpoint holds a sample grid, shown in TensorBoard

    def check_config(self, config: Any, data_dims: int) -> None:
        from tumorbench.training.gan import check_gan_config

        super().check_config(config, data_dims)
        check_gan_config(config, data_dims)

    def model_sizes(self, config: Any, in_channels: int, out_channels: int) -> dict[str, int]:
        # The generator writes images: its outputs are the image channels, its conditions the classes.
        return {"out_channels": in_channels, "num_classes": out_channels}

    def worker_loop(self):
        from tumorbench.training.gan import train_gan

        return train_gan

    def output_channels(self, sample: dict, class_names: list[str] | None) -> int:
        return len(class_names or [])
