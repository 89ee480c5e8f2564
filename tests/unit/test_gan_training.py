"""GAN training pieces without Ray: config checks, one G/D step, sample grids, generated classifier data."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from tumorbench.errors import DataError
from tumorbench.models import create_model
from tumorbench.package import ModelManifest
from tumorbench.training.checkpoint import save_checkpoint
from tumorbench.training.config import TrainConfig, TrainConfigError
from tumorbench.training.data import ensure_split_file, fold_cases, load_catalog, train_loader
from tumorbench.training.gan import (
    check_gan_config,
    check_gan_source,
    fixed_samples,
    gan_optimizers,
    gan_step,
    generated_to_input,
    synthetic_dataset,
    synthetic_labels,
    write_sample_grid,
)
from tumorbench.transforms import PreprocessConfig, build_transforms


def _disc_image(size: int = 64) -> np.ndarray:
    """uint8 image: black background, a disc with a ramp of grey levels (min 0, max 255)."""
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.uint8)
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    image[disc] = np.linspace(40, 255, disc.sum()).astype(np.uint8)
    return image


def _bce(logits: np.ndarray, target: float) -> float:
    p = 1 / (1 + np.exp(-logits))
    return float(np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p))))


def test_gan_config_must_produce_minmax_images_of_the_gan_size(tmp_path):
    base = TrainConfig(
        task="gan",
        model="dcgan_tiny",
        data=str(tmp_path),
        out=str(tmp_path / "o"),
        preprocess=PreprocessConfig(spatial_size=(64, 64), normalize="minmax", channels=1),
    )
    check_gan_config(base, data_dims=2)
    check_gan_config(
        base.replace(
            model_kwargs={"image_size": 32}, preprocess=PreprocessConfig(spatial_size=(32, 32), normalize="minmax")
        ),
        2,
    )
    with pytest.raises(TrainConfigError, match=r"set spatial_size to \(64, 64\)"):
        check_gan_config(base.replace(preprocess=PreprocessConfig(spatial_size=(32, 32), normalize="minmax")), 2)
    with pytest.raises(TrainConfigError, match="normalize='minmax'"):
        check_gan_config(base.replace(preprocess=PreprocessConfig(spatial_size=(64, 64))), 2)
    with pytest.raises(TrainConfigError, match="2D images"):
        check_gan_config(base, data_dims=3)


def test_generated_images_get_the_same_transforms_as_real_images(tmp_path):
    picture = _disc_image()
    Image.fromarray(picture).save(tmp_path / "real.png")
    generated = torch.as_tensor(picture / 255.0 * 2 - 1, dtype=torch.float32)[None, None]
    for pre in (
        PreprocessConfig(normalize="zscore", spatial_size=(40, 40), channels=3),
        PreprocessConfig(normalize="minmax", spatial_size=(40, 40), channels=1),
    ):
        real = build_transforms(pre, spatial_dims=2, with_mask=False)({"image": [str(tmp_path / "real.png")]})
        mapped = generated_to_input(generated, pre, (40, 40), pre.channels)
        assert mapped.shape == (1, pre.channels, 40, 40)
        np.testing.assert_allclose(mapped[0].numpy(), real["image"].numpy(), atol=1e-4)


def test_zscore_is_over_the_foreground_and_minmax_spans_unit_range():
    picture = _disc_image(32).astype(float) / 255
    generated = torch.as_tensor(picture * 2 - 1, dtype=torch.float32)[None, None]
    generated[generated == -1] = -0.9995  # tanh never reaches -1: still background
    out = generated_to_input(generated, PreprocessConfig(normalize="zscore"), (32, 32), 3)[0].numpy()
    foreground = picture > 0
    for channel in out:
        assert channel[foreground].mean() == pytest.approx(0.0, abs=1e-5)
        assert channel[foreground].std() == pytest.approx(1.0, abs=1e-4)
        assert np.all(channel[~foreground] == 0)
    out = generated_to_input(generated, PreprocessConfig(normalize="minmax"), (32, 32), 1)[0, 0].numpy()
    expected = (picture - picture.min()) / (picture.max() - picture.min())
    np.testing.assert_allclose(out, expected, atol=1e-3)  # -0.9995 maps to 0.00025, not 0
    assert out.min() == 0 and out.max() == pytest.approx(1.0)


def test_gan_step_updates_both_networks_with_the_documented_losses():
    torch.manual_seed(0)
    gan = create_model("dcgan_tiny", image_size=16, width=4, z_dim=8)
    opt_g, opt_d = gan_optimizers(gan, 1e-3)
    real = torch.rand(6, 1, 16, 16) * 2 - 1
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    before_g, before_d = copy.deepcopy(gan.generator), copy.deepcopy(gan.discriminator)
    torch.manual_seed(1)
    step = gan_step(gan.generator, gan.discriminator, opt_g, opt_d, real, labels, z_dim=8)
    # The same forward on untouched copies gives the D loss by hand: BCE, reals at 0.9, fakes at 0.
    torch.manual_seed(1)
    with torch.no_grad():
        fake = before_g(torch.randn(6, 8), labels)
        logits = before_d(torch.cat([real, fake]), torch.cat([labels, labels])).numpy()
    assert step["d_loss"] / 6 == pytest.approx(_bce(logits[:6], 0.9) + _bce(logits[6:], 0.0), rel=1e-4)
    assert step["d_real"] == pytest.approx(np.sum(1 / (1 + np.exp(-logits[:6]))), rel=1e-4)
    assert np.isfinite(step["g_loss"]) and step["g_loss"] > 0
    for old, new in ((before_g, gan.generator), (before_d, gan.discriminator)):
        for (name, a), b in zip(old.named_parameters(), new.parameters()):
            assert not torch.equal(a, b), f"{name} did not change"


def test_synthetic_labels_keep_the_training_proportions():
    # Quotas 6.67/3.33 -> 7/3; 3.5/2.1/1.4 -> 3/2/1 plus the largest remainder (class 0).
    assert np.bincount(synthetic_labels([20, 10], 10, seed=0)).tolist() == [7, 3]
    assert np.bincount(synthetic_labels([5, 3, 2], 7, seed=0), minlength=3).tolist() == [4, 2, 1]
    assert np.bincount(synthetic_labels([1, 3], 1000, seed=0)).tolist() == [250, 750]
    first = synthetic_labels([20, 10], 30, seed=3)
    assert np.array_equal(first, synthetic_labels([20, 10], 30, seed=3))
    assert not np.array_equal(first, np.sort(first))  # shuffled, not class-major


def test_sample_grid_is_reproducible_and_labelled(tmp_path):
    gan = create_model("dcgan_tiny", image_size=16, width=4, z_dim=8)
    first, again = fixed_samples(gan, seed=5), fixed_samples(gan, seed=5)
    assert first.shape == (16, 1, 16, 16) and torch.equal(first, again) and gan.training
    write_sample_grid(first, ["no", "yes"], [tmp_path / "a.png", tmp_path / "sub" / "b.png"], title="epoch 0")
    assert Image.open(tmp_path / "a.png").size == Image.open(tmp_path / "sub" / "b.png").size


def _manifest(class_names, split_hash, fold=0, task="gan") -> ModelManifest:
    return ModelManifest(
        name="dcgan_tiny",
        task=task,
        model_kwargs={"image_size": 16, "width": 4, "z_dim": 8},
        spatial_dims=2,
        data_dims=2,
        in_channels=1,
        out_channels=2,
        preprocess={"normalize": "minmax", "denoise": "none", "contrast": "none"},
        class_names=class_names,
        split={"hash": split_hash, "fold": fold},
    )


def _classifier(tmp_path, **kw) -> TrainConfig:
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for cls, count in (("no", 8), ("yes", 4)):
        (data / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(data / cls / f"{i}.png")
    config = TrainConfig(
        task="classification",
        model="resnet18_tiny",
        data=str(data),
        out=str(tmp_path / "out"),
        n_folds=3,
        batch_size=4,
        gan_checkpoint=str(tmp_path / "gan"),
        synthetic_fraction=0.5,
        preprocess=PreprocessConfig(spatial_size=(24, 24), channels=3),
        **kw,
    )
    ensure_split_file(config, load_catalog(config))
    return config


def test_generated_training_data_joins_the_real_shard(tmp_path):
    config = _classifier(tmp_path)
    cases = fold_cases(config)
    save_checkpoint(
        tmp_path / "gan",
        create_model("dcgan_tiny", image_size=16, width=4, z_dim=8),
        _manifest(["no", "yes"], cases.split_hash),
    )
    synthetic = synthetic_dataset(config, cases, rank=0, world=1, device=torch.device("cpu"))
    n_real = len(cases.train)
    assert len(synthetic) == round(0.5 * n_real)
    quota = 0.5 * n_real * np.bincount([c["label"] for c in cases.train]) / n_real
    assert np.all(np.abs(np.bincount(synthetic.labels.numpy(), minlength=2) - quota) < 1)
    item = synthetic[0]
    assert item["image"].shape == (3, 24, 24) and item["patient_id"] == "synthetic"
    assert item["case_id"] == "synthetic-000000"
    seen = 0
    for batch in train_loader(config.replace(batch_size=n_real + len(synthetic)), cases, 0, 1, extra=synthetic):
        seen += len(batch["image"])
        assert batch["image"].shape[1:] == (3, 24, 24)
    assert seen == n_real + len(synthetic)


@pytest.mark.parametrize(
    "manifest_change, message",
    [
        ({"class_names": ["benign", "malignant"]}, "GAN classes"),
        ({"split_hash": "0" * 64}, "could leak validation"),
        ({"fold": 1}, "trained on fold 1"),
        ({"task": "classification"}, "not a GAN"),
    ],
)
def test_a_gan_that_does_not_fit_the_classifier_is_refused(tmp_path, manifest_change, message):
    config = _classifier(tmp_path)
    cases = fold_cases(config)
    values = {"class_names": ["no", "yes"], "split_hash": cases.split_hash} | manifest_change
    manifest = _manifest(**values)
    with pytest.raises(DataError, match=message):
        check_gan_source(config, manifest, cases.class_names, cases.split_hash)


def test_generated_images_need_a_reproducible_normalization(tmp_path):
    config = _classifier(tmp_path)
    manifest = _manifest(["no", "yes"], "h")
    with pytest.raises(TrainConfigError, match="zscore or minmax"):
        check_gan_source(config.replace(preprocess=PreprocessConfig(normalize="none")), manifest)
    with pytest.raises(DataError, match="contrast"):
        check_gan_source(config.replace(preprocess=PreprocessConfig(contrast="clahe")), manifest)


def test_cli_gan_settings_reach_the_config_and_bad_ones_fail_before_ray(tmp_path):
    from click.testing import CliRunner

    from tumorbench.cli import _train_config, main, train
    from tumorbench.training.trainer import preflight

    config = _classifier(tmp_path)
    args = [
        "--task",
        "gan",
        "--model",
        "dcgan",
        "--data",
        config.data,
        "--out",
        str(tmp_path / "gan"),
        "--folds",
        "3",
        "--image-size",
        "64",
        "--image-size",
        "64",
        "--normalize",
        "minmax",
        "--channels",
        "1",
    ]
    gan_config = _train_config(train.make_context("train", list(args)).params)
    assert (gan_config.task, gan_config.preprocess.spatial_size, gan_config.preprocess.normalize) == (
        "gan",
        (64, 64),
        "minmax",
    )
    assert preflight(gan_config, resume=False)["layout"] == "image-folder"
    clf = _train_config(
        train.make_context(
            "train",
            [
                "--task",
                "classification",
                "--model",
                "resnet18_tiny",
                "--data",
                config.data,
                "--out",
                str(tmp_path / "c"),
                "--gan-checkpoint",
                str(tmp_path / "gan"),
                "--synthetic-fraction",
                "0.5",
            ],
        ).params
    )
    assert (clf.gan_checkpoint, clf.synthetic_fraction) == (str(tmp_path / "gan"), 0.5)
    bad = [a if a != "64" else "32" for a in args]
    result = CliRunner().invoke(main, ["train", *bad])
    assert result.exit_code == 2 and "set spatial_size to (64, 64)" in result.output
