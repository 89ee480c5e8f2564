"""Distributed training on Ray Train: config -> per-worker loop -> checkpoints that are model packages."""

from __future__ import annotations

from tumorbench.training.config import TrainConfig, TrainConfigError

__all__ = ["TrainConfig", "TrainConfigError"]
