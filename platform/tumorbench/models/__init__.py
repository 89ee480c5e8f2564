"""Model registry: build any classifier, segmenter or GAN by name.

Importing this package registers every model (timm / MONAI classifiers, MONAI
segmentation networks, the conditional DCGAN).
"""

from __future__ import annotations

from tumorbench.models import cnn, gan, unet  # noqa: F401  (registration side effects)
from tumorbench.models.pretrained import MissingWeightsError, freeze_backbone, param_groups
from tumorbench.models.registry import (
    ModelConfigError,
    ModelInfo,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "MissingWeightsError",
    "ModelConfigError",
    "ModelInfo",
    "UnknownModelError",
    "create_model",
    "freeze_backbone",
    "list_models",
    "model_info",
    "param_groups",
    "register_model",
]
