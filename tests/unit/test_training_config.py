"""Training pieces that need no Ray: config checks, model sizing, sharding, schedule, preflight errors."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image

from tumorbench.models.registry import UnknownModelError
from tumorbench.training.config import TrainConfig, TrainConfigError, merge_settings
from tumorbench.training.data import FoldCases, cache_folder, train_shard
from tumorbench.training.tasks import model_kwargs
from tumorbench.training.trainer import preflight, worker_resources
from tumorbench.transforms import AugmentConfig, PreprocessConfig


def _config(tmp_path, **kw) -> TrainConfig:
    values = dict(task="classification", model="resnet18_tiny", data=str(tmp_path / "data"), out=str(tmp_path / "out"))
    return TrainConfig(**(values | kw))


def _class_folders(root, n=6):
    for cls, value in (("no", 20), ("yes", 200)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("L", (16, 16), value + i).save(root / cls / f"{cls}{i}.png")


def test_config_round_trips_through_a_plain_dict(tmp_path):
    config = _config(tmp_path, roi_size=[32, 32, 16])
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config and again.roi_size == (32, 32, 16)
    with pytest.raises(TrainConfigError, match=r"unknown training settings \['epochz'\]"):
        TrainConfig.from_dict(config.to_dict() | {"epochz": 3})
    with pytest.raises(TrainConfigError, match=r"unknown training settings \['sampling\.patch'\]"):
        TrainConfig.from_dict(config.to_dict() | {"sampling.patch": 3})


def test_training_and_validation_read_one_cache_folder(tmp_path):
    shared = str(tmp_path / "study" / "cache")
    assert cache_folder(_config(tmp_path, cache="disk")) == str(tmp_path / "out" / "cache")
    assert cache_folder(_config(tmp_path, cache="memory")) is None  # decoded in memory only
    for cache in ("disk", "memory"):  # a study's shared disk cache backs both modes
        assert cache_folder(_config(tmp_path, cache=cache, cache_dir=shared)) == shared


def test_merge_settings_is_one_deep_rule():
    study = {
        "preprocess": {"spatial_size": [64, 64], "contrast": "none"},
        "roi_size": [8, 8, 8],
        "model_kwargs": {"a": 1, "b": {"x": 1}},
    }
    candidate = {"preprocess": PreprocessConfig(contrast="clahe"), "roi_size": [4, 4, 4], "model_kwargs.b.y": 2}
    merged = merge_settings(study, candidate, {"preprocess.contrast": False})
    # A config object merges as all its fields (its own defaults included); lists replace, never append.
    assert merged["preprocess"] == asdict(PreprocessConfig(contrast="none", spatial_size=None))
    assert merged["roi_size"] == [4, 4, 4] and merged["model_kwargs"] == {"a": 1, "b": {"x": 1, "y": 2}}
    assert study["model_kwargs"] == {"a": 1, "b": {"x": 1}}  # layers are never changed
    three_d = merge_settings({"spatial_dims": 3}, {"augment": "medium", "augment.noise_std": 0.0})
    assert three_d["augment"] == asdict(AugmentConfig.preset("medium", spatial_dims=3)) | {"noise_std": 0.0}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"task": "detection"}, "unknown task .detection."),
        ({"fold": 5, "n_folds": 5}, "fold 5 not in 0..4"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"synthetic_fraction": 0.5}, "synthetic_fraction needs gan_checkpoint"),
    ],
)
def test_invalid_configs_are_refused(tmp_path, change, message):
    with pytest.raises(TrainConfigError, match=message):
        _config(tmp_path, **change)


def test_model_kwargs_use_each_models_own_names(tmp_path):
    timm_kw = model_kwargs(_config(tmp_path), in_channels=1, out_channels=2)
    assert timm_kw == {"in_chans": 1, "num_classes": 2, "pretrained": False}
    monai_kw = model_kwargs(_config(tmp_path, task="segmentation", model="unet_tiny", spatial_dims=3), 4, 3)
    assert monai_kw == {"in_channels": 4, "out_channels": 3, "spatial_dims": 3}
    with pytest.raises(TrainConfigError, match="no pretrained weights option"):
        model_kwargs(_config(tmp_path, task="segmentation", model="unet_tiny", pretrained=True), 1, 1)


def test_shards_are_equal_sized_and_cover_every_case(tmp_path):
    cases = FoldCases(
        train=[{"case_id": i} for i in range(7)],
        val=[],
        class_names=None,
        data_dims=2,
        layout="image-folder",
        catalog_hash="",
        split_hash="",
    )
    config = _config(tmp_path, seed=1)
    shards = [[c["case_id"] for c in train_shard(config, cases, rank, 3)] for rank in range(3)]
    # 7 cases over 3 ranks: 3 each (DDP steps in lockstep), the 2 extra repeated from the shuffled order's start.
    assert [len(s) for s in shards] == [3, 3, 3]
    flat = [shards[rank][k] for k in range(3) for rank in range(3)]  # the strided order back
    assert sorted(flat[:7]) == list(range(7)) and flat[7:] == flat[:2]
    assert shards == [[c["case_id"] for c in train_shard(config, cases, r, 3)] for r in range(3)]  # seeded
    assert sorted(c["case_id"] for c in train_shard(config, cases, 0, 1)) == list(range(7))
    assert [c["case_id"] for c in train_shard(config.replace(seed=2), cases, 0, 1)] != [
        c["case_id"] for c in train_shard(config, cases, 0, 1)
    ]


def _lrs(optimizer, scheduler, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_cosine_schedule_values_and_resume(tmp_path):
    import torch

    from tumorbench.training.loop import warmup_cosine

    config = _config(tmp_path, lr=1e-3, epochs=11, warmup_epochs=1)

    def schedule():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
        return optimizer, warmup_cosine(optimizer, config, steps_per_epoch=10)

    optimizer, scheduler = schedule()
    lrs = _lrs(optimizer, scheduler, 111)
    # Warm-up over the first epoch's 10 steps: from a tenth of the peak, rising linearly, the peak at step 10.
    assert lrs[0] == pytest.approx(1e-4) and lrs[10] == pytest.approx(1e-3)
    assert np.allclose(np.diff(lrs[:11]), np.diff(lrs[:11])[0]) and np.diff(lrs[:11])[0] > 0
    # Then a half cosine over the 100 remaining steps, floored at 1% of the peak.
    decay = [max(1e-5, 1e-3 * 0.5 * (1 + math.cos(math.pi * (step - 10) / 100))) for step in range(10, 111)]
    assert lrs[10:] == pytest.approx(decay)
    assert lrs[60] == pytest.approx(0.5e-3) and lrs[110] == pytest.approx(1e-5) and min(lrs) >= 1e-5 * (1 - 1e-9)
    # A resumed run continues the same schedule from the saved state.
    optimizer, scheduler = schedule()
    _lrs(optimizer, scheduler, 37)
    state = scheduler.state_dict()
    optimizer, scheduler = schedule()
    scheduler.load_state_dict(state)
    for group in optimizer.param_groups:
        group["lr"] = scheduler.get_last_lr()[0]  # what optimizer.load_state_dict restores in the loop
    assert _lrs(optimizer, scheduler, 74) == pytest.approx(lrs[37:])


def test_worker_resources_fit_the_cluster_or_say_why():
    config = TrainConfig(task="segmentation", model="unet_tiny", data="d", out="o", workers=2)
    assert worker_resources(config, cpus=2, use_gpu=False) == {"CPU": 0.95}  # 2 workers
    with pytest.raises(TrainConfigError, match="8 workers do not fit a cluster of 2 CPUs"):
        worker_resources(config.replace(workers=8), cpus=2, use_gpu=False)


def test_preflight_errors_before_any_worker(tmp_path):
    _class_folders(tmp_path / "data")
    with pytest.raises(UnknownModelError, match="resnet18_tiny"):
        preflight(_config(tmp_path, model="resnet19"), resume=False)
    with pytest.raises(TrainConfigError, match="'unet_tiny' is a segmentation model"):
        preflight(_config(tmp_path, model="unet_tiny"), resume=False)
    with pytest.raises(TrainConfigError, match="has no masks, so it cannot train a segmentation model"):
        preflight(_config(tmp_path, task="segmentation", model="unet_tiny"), resume=False)
    with pytest.raises(TrainConfigError, match="nothing to resume"):
        preflight(_config(tmp_path), resume=True)
    info = preflight(_config(tmp_path, n_folds=3), resume=False)
    assert info == {"layout": "image-folder", "cases": 12, "data_dims": 2}
    assert (tmp_path / "out" / "splits.json").exists()


def test_a_trial_preflight_trusts_the_studys_model_check_but_still_checks_the_data(tmp_path):
    _class_folders(tmp_path / "data")
    # The study checked the model (tuning.search.prepare_base); a trial's parameters cannot change it.
    assert preflight(_config(tmp_path, model="resnet19"), resume=False, model_checked=True)["cases"] == 12
    with pytest.raises(TrainConfigError, match="a 3D model cannot train on 2D images"):
        preflight(_config(tmp_path, spatial_dims=3), resume=False, model_checked=True)
    with pytest.raises(TrainConfigError, match=r"'resnet18_tiny' supports spatial_dims \(2,\), not 3"):
        preflight(_config(tmp_path, spatial_dims=3), resume=False)  # the driver's: the model's limits first


def test_the_processes_that_launch_a_run_import_no_monai_timm_or_sklearn():
    """A Tune trial's process and Train's controller, one each per trial, import these modules: with MONAI,
    timm and scikit-learn that took ~5 s of CPU per process and trial on 2 cores (issue 13)."""
    code = (
        "import sys, tumorbench.tuning.trial, tumorbench.training.trainer, tumorbench.training.callbacks; "
        "from tumorbench.transforms import PreprocessConfig; "
        "print(*[m for m in ('monai', 'timm', 'sklearn') if m in sys.modules]); "
        "from tumorbench.transforms import build_transforms, IMAGE; print('monai' in sys.modules, IMAGE)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["", "True image"]
    import tumorbench.transforms

    with pytest.raises(AttributeError, match="has no attribute 'Bogus'"):
        tumorbench.transforms.Bogus  # noqa: B018


def test_preflight_refuses_more_folds_than_patients(tmp_path):
    _class_folders(tmp_path / "data", n=1)
    with pytest.raises(Exception, match="5 folds need at least 5 patients; the catalog has 2"):
        preflight(_config(tmp_path), resume=False)


@pytest.mark.parametrize("name, dims", [("unet_tiny", 2), ("segresnet_tiny", 3), ("attention_unet_tiny", 2)])
def test_segmentation_output_starts_at_the_foreground_prior(tmp_path, name, dims):
    import torch

    from tumorbench.training.tasks import build_model

    config = _config(tmp_path, task="segmentation", model=name, spatial_dims=dims, foreground_prior=0.02)
    model, _ = build_model(config, in_channels=2, out_channels=1)
    image = torch.zeros((1, 2) + (32,) * dims)
    # Mean predicted probability near the prior (not 0.5) on a blank image.
    probability = torch.sigmoid(model(image)).mean().item()
    assert abs(probability - 0.02) < 0.05
