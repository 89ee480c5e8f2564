"""3D convolutions of one volume on CPU through oneDNN, as PyTorch already runs two.

PyTorch picks a CPU convolution's kernel by a heuristic: a float32 batch of one whose first four sides multiply
to at most 20,480 (``N x C x D x H``) goes to the native ``slow_conv3d`` (im2col), everything else to oneDNN. The
threshold was set on 2D convolutions; for 3D ones it sends most single-volume convolutions with few channels to a
kernel 10-15x slower: a 4-channel 64^3 volume took 124 ms in one layer, 11 ms through oneDNN, and a SegResNet
forward of one volume took 0.63 s against 0.09 s per volume in a batch of four. A single volume is what
explanations, a sliding window's odd last batch, a volume smaller than the patch and serving run. PyTorch's
choice stays right for 1x1x1 kernels (a plain matrix product) and tiny inputs, which keep its path.

:func:`use_onednn_conv3d` makes each ``nn.Conv3d`` of a model call oneDNN for such inputs (same weights, same
results to float rounding, autograd included); other inputs, devices and dtypes take PyTorch's own path.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_VALUES = 2048  # C x D x H x W of one volume below which PyTorch's native kernel is as fast


class OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` that sends a CPU float32 batch of one to oneDNN (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 5 and x.shape[0] == 1 and x.device.type == "cpu" and x.dtype == torch.float32 and self._pays(x):
            return torch.mkldnn_convolution(
                x.contiguous(), self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super().forward(x)

    def _pays(self, x: torch.Tensor) -> bool:
        # Measured here (2 threads): a 1x1x1 kernel is a plain matrix product, as fast or faster native at every
        # size tried (oneDNN up to 6x slower); a larger kernel on fewer than MIN_VALUES values gains under 0.1 ms.
        big = x.numel() >= MIN_VALUES and max(self.kernel_size) > 1
        if not big or torch.is_autocast_enabled("cpu"):  # under CPU autocast the op's own casting applies
            return False
        return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def use_onednn_conv3d(model: nn.Module) -> nn.Module:
    """Swap the class of ``model``'s plain ``nn.Conv3d`` modules (zero padding given as sizes) for
    :class:`OneDNNConv3d`, in place; state dicts, pickling and copies are unchanged. Returns ``model``."""
    for module in model.modules():
        if type(module) is nn.Conv3d and module.padding_mode == "zeros" and not isinstance(module.padding, str):
            module.__class__ = OneDNNConv3d
    return model
