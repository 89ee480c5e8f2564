"""Classifiers: timm 2D CNNs (with offline ImageNet weights) and MONAI's 3D DenseNet121.

timm models take timm's keywords (``in_chans``, ``num_classes``); MONAI models take
MONAI's (``in_channels``, ``out_channels``, ``spatial_dims``).
"""

from __future__ import annotations

from functools import partial

import timm
from monai.networks.nets import DenseNet, DenseNet121
from timm.models import build_model_with_cfg
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from tumorbench.models.pretrained import build_timm
from tumorbench.models.registry import register_model

_TIMM_2D = {
    "resnet18": "ResNet-18 (timm), 11.7M params",
    "resnet50": "ResNet-50 (timm), 25.6M params",
    "efficientnet_b0": "EfficientNet-B0 (timm), 5.3M params",
    "tf_efficientnet_lite0": "EfficientNet-Lite0 (timm, TF padding); ImageNet weights ship offline",
}
# Grad-CAM target: the last convolutional feature map before global pooling (ResNet's last stage,
# EfficientNet's head conv + BN-activation); the classic choice of Selvaraju et al.
_TIMM_CAM_LAYER = {"resnet18": "layer4", "resnet50": "layer4", "efficientnet_b0": "bn2", "tf_efficientnet_lite0": "bn2"}
# MONAI DenseNet: the ReLU after the last dense block's norm, before pooling (MONAI's own GradCAM example).
_DENSENET_CAM_LAYER = "class_layers.relu"


def _register_timm(name: str, description: str) -> None:
    @register_model(
        name, task="classification", description=description, spatial_dims=(2,), cam_layer=_TIMM_CAM_LAYER[name]
    )
    def factory(in_chans: int = 3, num_classes: int = 2, pretrained: bool = False, drop_rate: float = 0.0) -> nn.Module:
        return build_timm(
            name,
            partial(timm.create_model, name),
            variant=name,
            pretrained=pretrained,
            allow_hub=True,
            in_chans=in_chans,
            num_classes=num_classes,
            drop_rate=drop_rate,
        )


for _name, _description in _TIMM_2D.items():
    _register_timm(_name, _description)


# A real timm ResNet (same class, same pretrained/adaptation path) with tiny widths, for fast tests.
_TINY_RESNET = dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8)


@register_model(
    "resnet18_tiny",
    task="classification",
    description="timm ResNet with 1 block per stage and widths 8-64 (~75k params), for tests",
    spatial_dims=(2,),
    cam_layer="layer4",
)
def resnet18_tiny(
    in_chans: int = 3, num_classes: int = 2, pretrained: bool = False, drop_rate: float = 0.0
) -> nn.Module:
    """Tiny timm ResNet; ``pretrained`` only reads ``$TUMORBENCH_WEIGHTS_DIR/resnet18_tiny.pth``."""
    build = partial(build_model_with_cfg, ResNet, "resnet18", **_TINY_RESNET)
    return build_timm(
        "resnet18_tiny",
        build,
        variant="resnet18",
        pretrained=pretrained,
        allow_hub=False,  # ImageNet resnet18 weights do not fit the tiny widths
        in_chans=in_chans,
        num_classes=num_classes,
        drop_rate=drop_rate,
    )


@register_model(
    "densenet121",
    task="classification",
    description="DenseNet-121 (MONAI) for 3D volumes (or 2D), random init",
    spatial_dims=(3, 2),
    cam_layer=_DENSENET_CAM_LAYER,
)
def densenet121(
    spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2, dropout_prob: float = 0.0
) -> nn.Module:
    """MONAI DenseNet121; there are no offline 3D weights, so it always starts random."""
    return DenseNet121(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, dropout_prob=dropout_prob
    )


@register_model(
    "densenet121_tiny",
    task="classification",
    description="MONAI DenseNet with 2 dense blocks of 2 layers, growth 4, for tests",
    spatial_dims=(3, 2),
    cam_layer=_DENSENET_CAM_LAYER,
)
def densenet121_tiny(
    spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2, dropout_prob: float = 0.0
) -> nn.Module:
    """A DenseNet of the same MONAI class as densenet121, small enough for CPU tests."""
    return DenseNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        init_features=8,
        growth_rate=4,
        block_config=(2, 2),
        bn_size=2,
        dropout_prob=dropout_prob,
    )
