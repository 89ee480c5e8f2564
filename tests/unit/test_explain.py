"""Explanations: MONAI Grad-CAM / occlusion through the registry's target layers, and their scores.

The scores are checked against hand-computed values; the methods on a tiny classifier trained
in-process on images whose class is decided by a bright blob (no Ray).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch

from tumorbench.explain import (
    ExplainConfig,
    Explainer,
    ExplainError,
    cam_layer,
    curve_auc,
    energy_in_mask,
    perturbation_curve,
    pointing_game,
    randomisation_check,
    randomized_copy,
    rank_correlation,
    ssim,
)
from tumorbench.models import create_model, register_model, registry

SIZE, RADIUS = 48, 6
BLOBNET = "test_blobnet"


def blob_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Noise images; odd ones hold a bright disc (the class). Returns images, labels, disc masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images, masks = rng.normal(0, 1, (n, 1, SIZE, SIZE)).astype(np.float32), np.zeros((n, SIZE, SIZE), bool)
    for i in range(1, n, 2):
        cy, cx = rng.integers(RADIUS + 2, SIZE - RADIUS - 2, 2)
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 < RADIUS**2
        images[i, 0][masks[i]] += 3.0
    return torch.from_numpy(images), torch.arange(n) % 2, masks


@pytest.fixture(scope="module")
def blobnet():
    """A registered 3-layer CNN (receptive field 15 px, Grad-CAM at stride 4, max pooling), removed afterwards.

    The registered densenet121_tiny sees the whole 48-px image from every cell of its 6x6 last map, too
    coarse to ask whether the peak falls inside a 12-px disc.
    """

    @register_model(BLOBNET, task="classification", description="test CNN", spatial_dims=(2,), cam_layer="features")
    def factory(in_channels: int = 1, num_classes: int = 2) -> torch.nn.Module:
        conv = lambda i, o, s: [torch.nn.Conv2d(i, o, 3, s, 1), torch.nn.BatchNorm2d(o), torch.nn.ReLU()]  # noqa: E731
        features = torch.nn.Sequential(*conv(in_channels, 8, 2), *conv(8, 16, 2), *conv(16, 16, 1))
        return torch.nn.Sequential(
            OrderedDict(
                features=features,
                pool=torch.nn.AdaptiveMaxPool2d(1),
                flat=torch.nn.Flatten(),
                fc=torch.nn.Linear(16, num_classes),
            )
        )

    yield BLOBNET
    registry._REGISTRY.pop(BLOBNET, None)


@pytest.fixture(scope="module")
def trained(blobnet):
    """The CNN trained in-process for a few seconds to find the disc."""
    torch.manual_seed(0)
    model = create_model(blobnet)
    images, labels, _ = blob_images(64, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


# ---- scores against hand-computed values ------------------------------------------------------------


def test_pointing_game_and_energy_by_hand():
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    heat = np.zeros((4, 4))
    heat[1, 2], heat[0, 0] = 1.0, 0.5
    assert pointing_game(heat, mask) == 1.0
    heat[0, 0] = 2.0
    assert pointing_game(heat, mask) == 0.0
    assert energy_in_mask(heat, mask) == pytest.approx(1.0 / 3.0)
    assert pointing_game(np.ones((4, 4)), mask) == 0.0  # a flat map points nowhere
    assert math.isnan(pointing_game(heat, np.zeros((4, 4))))
    assert math.isnan(energy_in_mask(np.zeros((4, 4)), mask))
    with pytest.raises(ValueError, match="differs"):
        energy_in_mask(heat, np.zeros((3, 3)))


def test_deletion_insertion_by_hand():
    # Score = mean of the image; heatmap ranks pixels 3, 2, 1, 0 (values 4, 3, 2, 1).
    image = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    heat = image[0].copy()
    score = lambda batch: batch.reshape(len(batch), -1).mean(axis=1)  # noqa: E731
    deletion = perturbation_curve(score, image, heat, "deletion", steps=4)
    insertion = perturbation_curve(score, image, heat, "insertion", steps=4)
    np.testing.assert_allclose(deletion, [2.5, 1.5, 0.75, 0.25, 0.0])
    np.testing.assert_allclose(insertion, [0.0, 1.0, 1.75, 2.25, 2.5])
    assert curve_auc(deletion) == pytest.approx((2.5 / 2 + 1.5 + 0.75 + 0.25 + 0.0 / 2) / 4)
    assert curve_auc([0.0, 1.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="mode"):
        perturbation_curve(score, image, heat, "sideways")


def test_similarity_measures_by_hand():
    a = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]) / 8
    assert rank_correlation(a, a**2) == pytest.approx(1.0)  # monotone: same ranks
    assert rank_correlation(a, 1 - a) == pytest.approx(-1.0)
    assert math.isnan(rank_correlation(a, np.zeros_like(a)))
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, 1 - a) < 0
    same = randomisation_check([a, a], [a, a])
    assert same.flagged and same.rank_corr == pytest.approx(1.0) and same.n == 2
    # A flat randomised map shares no ranking with the trained one: counted as 0, not flagged.
    flat = randomisation_check([a], [np.zeros_like(a)])
    assert flat.rank_corr == 0.0 and not flat.flagged


def test_segmentation_target_sums_the_segmented_logits_by_hand():
    from tumorbench.explain.methods import foreground_logit_sum

    logits = torch.tensor([[[[-1.0, 2.0], [3.0, -4.0]]], [[[-1.0, -2.0], [-3.0, -4.0]]]])
    # Sample 0 segments two pixels (2 + 3); sample 1 none, so all its logits count.
    assert foreground_logit_sum(logits).tolist() == [5.0, -10.0]


# ---- registry target layers ------------------------------------------------------------------------


def test_model_without_target_layer_and_unknown_method_are_named():
    with pytest.raises(ExplainError, match="'dcgan_tiny'.*cam_layer"):
        cam_layer("dcgan_tiny")
    with pytest.raises(ExplainError, match="'shap'.*gradcam"):
        ExplainConfig("shap")


def test_volumes_over_the_voxel_cap_are_refused(monkeypatch):
    monkeypatch.setattr("tumorbench.explain.methods.MAX_VOLUME_VOXELS", 1000)
    explainer = Explainer(create_model("unet_tiny", spatial_dims=3), "unet_tiny", "segmentation")
    with pytest.raises(ExplainError, match=r"\(12, 10, 10\) voxels is over the 1,000"):
        explainer.heatmap(torch.zeros(1, 12, 10, 10))


def test_a_curves_volumes_are_scored_in_forwards_under_the_voxel_cap(monkeypatch):
    torch.manual_seed(0)
    explainer = Explainer(create_model("unet_tiny", spatial_dims=3), "unet_tiny", "segmentation")
    image = torch.randn(1, 16, 16, 8)
    volumes = torch.stack([image * (1 - k / 8) for k in range(9)])  # a curve's 9 copies
    scorer = explainer.scorer(image[None])
    one_by_one = np.concatenate([explainer.score(v[None], scorer) for v in volumes])
    seen = []
    monkeypatch.setattr("tumorbench.explain.methods.MAX_VOLUME_VOXELS", 3 * 16 * 16 * 8)  # three volumes a forward
    hook = explainer.model.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[0]))
    np.testing.assert_allclose(explainer.score(volumes, scorer), one_by_one, rtol=1e-5, atol=1e-6)
    hook.remove()
    assert seen == [3, 3, 3]


@pytest.mark.parametrize(
    "name,dims,method", [("unet_tiny", 3, "gradcam"), ("segresnet_tiny", 2, "gradcampp"), ("unet_tiny", 2, "occlusion")]
)
def test_segmentation_heatmaps_keep_the_input_grid(name, dims, method):
    torch.manual_seed(0)
    model = create_model(name, spatial_dims=dims)
    shape = (1, 40, 36) if dims == 2 else (1, 24, 20, 16)  # not multiples of 32: padded and cropped back
    heat = Explainer(model, name, "segmentation", ExplainConfig(method)).heatmap(torch.randn(shape))
    assert heat.shape == shape[1:]
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)


# ---- trained tiny classifier -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "occlusion"])
def test_trained_classifier_points_at_the_blob(trained, method):
    images, labels, masks = blob_images(40, seed=1)
    with torch.no_grad():
        assert (trained(images).argmax(1) == labels).float().mean() >= 0.9
    positive = [i for i in range(len(images)) if labels[i] == 1]
    explainer = Explainer(trained, BLOBNET, "classification", ExplainConfig(method), positive_index=1)
    heatmaps = [explainer.heatmap(images[i]) for i in positive]
    assert np.mean([pointing_game(h, masks[i]) for h, i in zip(heatmaps, positive)]) >= 0.9
    disc_share = RADIUS**2 * np.pi / SIZE**2  # what a uniform heatmap would put inside the disc
    assert np.mean([energy_in_mask(h, masks[i]) for h, i in zip(heatmaps, positive)]) > 2 * disc_share


def test_grad_cam_equals_the_hand_computed_map_and_leaves_the_callers_model_alone(trained):
    """Grad-CAM by hand with autograd on the whole model (weights requiring gradients, as trained): the
    explainer's backward from the score to the target layer only gives the same map."""
    images, _, _ = blob_images(4, seed=3)
    x = images[1:2]
    features = trained.features(x).detach().requires_grad_(True)
    logits = trained.fc(trained.flat(trained.pool(features)))
    score = logits[:, 1] - logits[:, 0]  # the positive class's log-odds against the other class
    (grad,) = torch.autograd.grad(score.sum(), features)
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0]
    expected = (cam / cam.max()).detach().numpy()
    heat = Explainer(trained, BLOBNET, "classification", positive_index=1).heatmap(x[0])
    np.testing.assert_allclose(heat, expected, atol=1e-5)
    assert all(p.requires_grad for p in trained.parameters())  # the explainer froze its own copy only
    assert not trained.features._forward_hooks


def test_randomisation_check_separates_trained_from_randomised(trained):
    images, labels, masks = blob_images(40, seed=1)
    positive = [i for i in range(len(images)) if labels[i] == 1]
    heatmaps = [Explainer(trained, BLOBNET, "classification", positive_index=1).heatmap(images[i]) for i in positive]
    randomised, hits = [], []
    for seed in range(3):  # three re-initialisations: one random net can happen to resemble the trained one
        copy = Explainer(randomized_copy(trained, seed), BLOBNET, "classification", positive_index=1)
        randomised += [copy.heatmap(images[i]) for i in positive]
        hits += [pointing_game(h, masks[i]) for h, i in zip(randomised[-len(positive) :], positive)]
    result = randomisation_check(heatmaps * 3, randomised)
    assert not result.flagged and result.rank_corr < 0.3 and result.ssim < 0.3
    assert np.mean(hits) < 0.7  # the randomised nets mostly no longer point at the disc
    # A model-independent "explanation" (the image's own brightness) survives any randomisation: flagged.
    brightness = [np.clip(images[i, 0].numpy(), 0, None) for i in positive]
    control = randomisation_check(brightness, brightness)
    assert control.flagged and control.rank_corr == pytest.approx(1.0)
    # The randomised copy really is a different model, and the original is untouched.
    assert not torch.equal(randomized_copy(trained, 0).fc.weight, trained.fc.weight)


def test_deletion_is_steeper_than_insertion_for_the_trained_model(trained):
    images, labels, _ = blob_images(6, seed=2)
    explainer = Explainer(trained, BLOBNET, "classification", positive_index=1)
    image = images[1]
    heat = explainer.heatmap(image)
    scorer = explainer.scorer(image[None])
    score = lambda batch: explainer.score(torch.as_tensor(batch), scorer)  # noqa: E731
    deletion = curve_auc(perturbation_curve(score, image.numpy(), heat, "deletion", steps=8))
    insertion = curve_auc(perturbation_curve(score, image.numpy(), heat, "insertion", steps=8))
    assert deletion < insertion
