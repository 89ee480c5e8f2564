"""models/onednn.py: a single CPU volume's 3D convolutions go to oneDNN, with PyTorch's own results."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from tumorbench.models import create_model
from tumorbench.models.onednn import OneDNNConv3d, use_onednn_conv3d

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def _kernels(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages() if "conv" in event.key}


def test_one_volume_runs_on_onednn_with_the_native_kernels_results_and_gradients():
    torch.manual_seed(0)
    plain = torch.nn.Conv3d(4, 8, 3, padding=1, stride=(1, 2, 1))
    fast = use_onednn_conv3d(copy.deepcopy(plain))
    assert type(fast) is OneDNNConv3d and type(plain) is torch.nn.Conv3d
    x = torch.randn(1, 4, 24, 20, 16, requires_grad=True)  # 1 x 4 x 24 x 20 = 1,920: PyTorch's native 3D kernel
    assert "aten::slow_conv3d_forward" in _kernels(lambda: plain(x))
    kernels = _kernels(lambda: fast(x))
    assert "aten::mkldnn_convolution" in kernels and "aten::slow_conv3d_forward" not in kernels
    expected, got = plain(x), fast(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's casting is kept: PyTorch's path
        assert fast(x).dtype == plain(x).dtype == torch.bfloat16
    batch = torch.randn(2, 4, 8, 8, 8)  # two volumes: PyTorch's own path (oneDNN already)
    torch.testing.assert_close(fast(batch), plain(batch))
    torch.testing.assert_close(fast(x[0].detach()), plain(x[0].detach()))  # an unbatched (C, D, H, W) input


def test_every_registered_3d_net_gets_it_and_keeps_its_state_dict_and_pickles():
    model = create_model("segresnet_tiny", spatial_dims=3, in_channels=4)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(type(m) is OneDNNConv3d for m in convs)
    reference = create_model("segresnet_tiny", spatial_dims=3, in_channels=4)
    reference.load_state_dict(model.state_dict())  # the same keys and shapes
    for module in reference.modules():
        if type(module) is OneDNNConv3d:
            module.__class__ = torch.nn.Conv3d
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(1, 4, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), reference.eval()(x), rtol=1e-4, atol=1e-5)
    pointwise = use_onednn_conv3d(torch.nn.Conv3d(4, 8, 1))  # a 1x1x1 kernel: faster on PyTorch's own kernel
    assert "aten::mkldnn_convolution" not in _kernels(lambda: pointwise(torch.randn(1, 4, 24, 20, 16)))
    padded = torch.nn.Conv3d(1, 1, 3, padding="same")  # a padding given as a word stays PyTorch's
    assert type(use_onednn_conv3d(padded)) is torch.nn.Conv3d
