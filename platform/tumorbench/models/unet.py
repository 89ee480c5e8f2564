"""Segmentation networks from MONAI, each buildable in 2D or 3D from one name.

Every factory takes ``spatial_dims`` (2 or 3), ``in_channels`` and ``out_channels``;
the ``*_tiny`` variants are the same MONAI classes with few channels, for tests
and smoke runs on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import AttentionUnet, SegResNet, SwinUNETR, UNet
from torch import nn

from tumorbench.models.registry import ModelConfigError, register_model

DIMS = (2, 3)
# Grad-CAM targets of the segmentation nets: the last decoder features before the output convolution,
# fine enough to localise a lesion (Vinogradova et al. 2020, Seg-Grad-CAM) and named the same at any depth.
UNET_CAM = "model.1"  # MONAI UNet / AttentionUnet: the outermost skip level (decoder + encoder features)
SEGRESNET_CAM = "conv_final.0"  # the GroupNorm over the last up-block's features
SWIN_CAM = "decoder1"  # the full-resolution decoder block
# SwinUNETR: patch size 2 then four 2x patch mergings, so each side must divide by 2**5.
SWIN_DIVISOR = 32


def _unet(spatial_dims, in_channels, out_channels, channels, strides, num_res_units, dropout) -> nn.Module:
    if len(strides) != len(channels) - 1:
        raise ModelConfigError(f"unet needs len(strides) == len(channels) - 1, got {strides} and {channels}")
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        num_res_units=num_res_units,
        dropout=dropout,
    )


@register_model(
    "unet",
    task="segmentation",
    description="MONAI residual UNet, 16-256 channels",
    spatial_dims=DIMS,
    cam_layer=UNET_CAM,
)
def unet(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    num_res_units: int = 2,
    dropout: float = 0.0,
) -> nn.Module:
    """MONAI UNet (input sides must divide by the product of ``strides``)."""
    return _unet(spatial_dims, in_channels, out_channels, channels, strides, num_res_units, dropout)


@register_model(
    "unet_tiny",
    task="segmentation",
    description="MONAI UNet, 4-16 channels, for tests",
    spatial_dims=DIMS,
    cam_layer=UNET_CAM,
)
def unet_tiny(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    channels: Sequence[int] = (4, 8, 16),
    strides: Sequence[int] = (2, 2),
    num_res_units: int = 1,
    dropout: float = 0.0,
) -> nn.Module:
    """Tiny MONAI UNet."""
    return _unet(spatial_dims, in_channels, out_channels, channels, strides, num_res_units, dropout)


def _attention_unet(spatial_dims, in_channels, out_channels, channels, strides, dropout) -> nn.Module:
    if len(strides) != len(channels) - 1:
        raise ModelConfigError(f"attention_unet needs len(strides) == len(channels) - 1, got {strides} and {channels}")
    return AttentionUnet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        dropout=dropout,
    )


@register_model(
    "attention_unet",
    task="segmentation",
    description="MONAI Attention U-Net, 16-256 channels",
    spatial_dims=DIMS,
    cam_layer=UNET_CAM,
)
def attention_unet(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    dropout: float = 0.0,
) -> nn.Module:
    """MONAI AttentionUnet (Oktay et al. 2018)."""
    return _attention_unet(spatial_dims, in_channels, out_channels, channels, strides, dropout)


@register_model(
    "attention_unet_tiny",
    task="segmentation",
    description="MONAI Attention U-Net, 4-16 channels",
    spatial_dims=DIMS,
    cam_layer=UNET_CAM,
)
def attention_unet_tiny(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    channels: Sequence[int] = (4, 8, 16),
    strides: Sequence[int] = (2, 2),
    dropout: float = 0.0,
) -> nn.Module:
    """Tiny MONAI AttentionUnet."""
    return _attention_unet(spatial_dims, in_channels, out_channels, channels, strides, dropout)


@register_model(
    "segresnet",
    task="segmentation",
    description="MONAI SegResNet, 8 initial filters",
    spatial_dims=DIMS,
    cam_layer=SEGRESNET_CAM,
)
def segresnet(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    init_filters: int = 8,
    blocks_down: Sequence[int] = (1, 2, 2, 4),
    blocks_up: Sequence[int] = (1, 1, 1),
    dropout_prob: float | None = None,
) -> nn.Module:
    """MONAI SegResNet (Myronenko 2018, the BraTS 2018 winner's encoder)."""
    return SegResNet(
        spatial_dims=spatial_dims,
        init_filters=init_filters,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob=dropout_prob,
        blocks_down=tuple(blocks_down),
        blocks_up=tuple(blocks_up),
        # GroupNorm needs groups dividing the channels; MONAI's default of 8 fails for few filters.
        norm=("GROUP", {"num_groups": math.gcd(8, init_filters)}),
    )


@register_model(
    "segresnet_tiny",
    task="segmentation",
    description="MONAI SegResNet, 4 filters, 2 levels",
    spatial_dims=DIMS,
    cam_layer=SEGRESNET_CAM,
)
def segresnet_tiny(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    init_filters: int = 4,
    blocks_down: Sequence[int] = (1, 1),
    blocks_up: Sequence[int] = (1,),
    dropout_prob: float | None = None,
) -> nn.Module:
    """Tiny MONAI SegResNet."""
    return segresnet(spatial_dims, in_channels, out_channels, init_filters, blocks_down, blocks_up, dropout_prob)


def check_swin_img_size(img_size: int | Sequence[int] | None, spatial_dims: int, norm_name: Any) -> None:
    """Raise :class:`ModelConfigError` unless every side of ``img_size`` fits SwinUNETR.

    Sides must divide by 32; with instance norm the 1/32 bottleneck also needs more than
    one voxel, so sides must be at least 64 (group or batch norm work from 32).
    """
    if img_size is None:
        return
    sides = (img_size,) * spatial_dims if isinstance(img_size, int) else tuple(int(s) for s in img_size)
    if len(sides) != spatial_dims:
        raise ModelConfigError(f"swin_unetr: img_size {img_size!r} must have {spatial_dims} sides")
    smallest = 2 * SWIN_DIVISOR if _is_instance_norm(norm_name) else SWIN_DIVISOR
    if any(s < smallest or s % SWIN_DIVISOR for s in sides):
        fixed = tuple(max(smallest, -(-s // SWIN_DIVISOR) * SWIN_DIVISOR) for s in sides)
        raise ModelConfigError(
            f"swin_unetr: every image side must be a multiple of {SWIN_DIVISOR} (patch size 2 and four 2x "
            f"downsamplings) and at least {smallest} with norm {norm_name!r}, got {sides}; "
            f"pad or crop inputs to e.g. {fixed}"
        )


def _is_instance_norm(norm_name: Any) -> bool:
    name = norm_name[0] if isinstance(norm_name, (tuple, list)) else norm_name
    return str(name).lower() == "instance"


class CheckedSwinUNETR(SwinUNETR):
    """MONAI SwinUNETR that rejects unsupported input sizes with a clear message.

    MONAI's own checks miss the instance-norm case and fail deep inside the decoder.
    """

    def __init__(self, *, norm_name: Any, **kwargs: Any) -> None:
        super().__init__(norm_name=norm_name, **kwargs)
        self.norm_name = norm_name

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        check_swin_img_size(tuple(x_in.shape[2:]), x_in.ndim - 2, self.norm_name)
        return super().forward(x_in)


def _swin(spatial_dims, in_channels, out_channels, feature_size, depths, num_heads, norm_name, img_size, drop_rate):
    check_swin_img_size(img_size, spatial_dims, norm_name)
    if feature_size % 12:
        raise ModelConfigError(f"swin_unetr: feature_size must be a multiple of 12, got {feature_size}")
    return CheckedSwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        feature_size=feature_size,
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        norm_name=norm_name,
        drop_rate=drop_rate,
        spatial_dims=spatial_dims,
    )


@register_model(
    "swin_unetr",
    task="segmentation",
    description="MONAI SwinUNETR, feature size 24",
    spatial_dims=DIMS,
    cam_layer=SWIN_CAM,
)
def swin_unetr(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    feature_size: int = 24,
    depths: Sequence[int] = (2, 2, 2, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    norm_name: str | tuple = "instance",
    img_size: int | Sequence[int] | None = None,
    drop_rate: float = 0.0,
) -> nn.Module:
    """MONAI SwinUNETR; input sides must be multiples of 32 and >= 64 with instance norm (checked at build
    when ``img_size`` is given, and on every forward)."""
    return _swin(
        spatial_dims, in_channels, out_channels, feature_size, depths, num_heads, norm_name, img_size, drop_rate
    )


@register_model(
    "swin_unetr_tiny",
    task="segmentation",
    description="MONAI SwinUNETR, feature size 12, depth 1",
    spatial_dims=DIMS,
    cam_layer=SWIN_CAM,
)
def swin_unetr_tiny(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 1,
    feature_size: int = 12,
    depths: Sequence[int] = (1, 1, 1, 1),
    num_heads: Sequence[int] = (1, 2, 4, 8),
    norm_name: str | tuple = ("group", {"num_groups": 4}),
    img_size: int | Sequence[int] | None = None,
    drop_rate: float = 0.0,
) -> nn.Module:
    """Tiny MONAI SwinUNETR; group norm lets it run on 32-pixel inputs."""
    return _swin(
        spatial_dims, in_channels, out_channels, feature_size, depths, num_heads, norm_name, img_size, drop_rate
    )
