"""The model-package format: versions, validation, torch-free reading, weights round trip, best checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT
from model_packages import SEG2D, make_package, manifest_only
from tumorbench.package import (
    FORMAT,
    PackageError,
    best_checkpoint,
    find_packages,
    read_manifest,
)
from tumorbench.package.weights import load_model

# model.json as tumorbench wrote it before the package module existed (format 1): must stay readable.
V1 = {
    "channel_names": None,
    "class_names": ["no", "yes"],
    "created": "2026-11-30T10:00:00+00:00",
    "data": {"catalog_hash": "ab12", "layout": "image-folder", "root": "data"},
    "epoch": 4,
    "format": "tumorbench-model/1",
    "in_channels": 3,
    "metrics": {"auc": 0.91, "improved": True, "epoch": 4},
    "model_kwargs": {"in_chans": 3, "num_classes": 2, "pretrained": False},
    "name": "resnet18_tiny",
    "out_channels": 2,
    "positive_class": "yes",
    "preprocess": {"spatial_size": [64, 64]},
    "roi_size": None,
    "spatial_dims": 2,
    "data_dims": 2,
    "split": {"fold": 0, "hash": "cd34"},
    "task": "classification",
    "versions": {"python": "3.11.9", "torch": "2.14.1"},
}


def _write(path, manifest: dict):
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.json").write_text(json.dumps(manifest))
    return path


def test_format_1_stays_readable(tmp_path):
    manifest = read_manifest(_write(tmp_path / "old", V1))
    assert (manifest.name, manifest.task, manifest.epoch, manifest.format) == (
        "resnet18_tiny",
        "classification",
        4,
        FORMAT,
    )
    assert manifest.metrics["auc"] == 0.91 and manifest.class_names == ["no", "yes"]
    assert json.loads(manifest.to_json()) == V1  # written back unchanged


@pytest.mark.parametrize(
    "fmt, words",
    [
        ("tumorbench-model/2", "format tumorbench-model/2 is newer than this tumorbench reads (tumorbench-model/1)"),
        ("tumorbench-model/17", "newer than this tumorbench reads"),
        ("tumorbench-model/0", "no longer readable"),
        ("other-model/1", "unknown model package format 'other-model/1'"),
        (1, "unknown model package format 1"),
    ],
)
def test_unknown_or_newer_format_is_refused_naming_package_and_version(tmp_path, fmt, words):
    package = _write(tmp_path / "pkg_x", V1 | {"format": fmt})
    with pytest.raises(PackageError, match="pkg_x/model.json") as caught:
        read_manifest(package)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"format": None}, "unknown model package format None"),
        ({"task": "detection"}, "unknown task 'detection'"),
        ({"spatial_dims": "2"}, "field 'spatial_dims' must be int, got str"),
        ({"in_channels": True}, "field 'in_channels' must be int"),
        ({"spatial_dims": 4}, "must be 2 or 3"),
        ({"positive_class": "maybe"}, "positive_class 'maybe' is not one of class_names"),
        ({"metrics": {"auc": "high"}}, "metrics ['auc'] must be numbers"),
        ({"colour": "red"}, "unexpected keyword argument 'colour'"),
    ],
)
def test_invalid_manifests_are_refused(tmp_path, change, words):
    with pytest.raises(PackageError) as caught:
        read_manifest(_write(tmp_path / "bad", V1 | change))
    assert words in str(caught.value) and "bad/model.json" in str(caught.value)


def test_tuples_are_kept_as_the_lists_json_reads_back(tmp_path):
    from tumorbench.package import ModelManifest, write_manifest

    fields = {k: v for k, v in V1.items() if k != "format"} | {"class_names": ("no", "yes"), "roi_size": (32, 32)}
    manifest = ModelManifest(**fields)
    assert manifest.class_names == ["no", "yes"] and manifest.roi_size == [32, 32]
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest


def test_missing_format_and_missing_manifest(tmp_path):
    with pytest.raises(PackageError, match="has no 'format'"):
        read_manifest(_write(tmp_path / "a", {k: v for k, v in V1.items() if k != "format"}))
    with pytest.raises(PackageError, match="no model.json"):
        read_manifest(tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "model.json").write_text("[1, 2]")
    with pytest.raises(PackageError, match="not a JSON object"):
        read_manifest(tmp_path / "c")


def test_weights_round_trip(tmp_path):
    package = make_package(tmp_path / "seg", SEG2D, seed=3)
    model, manifest = load_model(package)
    assert manifest == read_manifest(package) and not model.training
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    again, _ = load_model(package)
    assert torch.equal(model(x), again(x))
    from tumorbench.models import create_model

    torch.manual_seed(3)
    fresh = create_model("unet_tiny", spatial_dims=2, in_channels=3, out_channels=1).eval()
    assert not torch.equal(fresh(x), model(x))  # the saved weights were changed after seeding (last layer x 20)
    fresh.load_state_dict(torch.load(package / "model.pt", weights_only=True))
    assert torch.equal(fresh(x), model(x))


def test_reading_packages_imports_no_torch_and_inference_and_serving_import_no_training(tmp_path):
    package = _write(tmp_path / "p", V1)
    code = (
        "import sys; from tumorbench.package import find_packages, read_manifest; "
        f"read_manifest({str(package)!r}); find_packages({str(tmp_path)!r}); "
        "print('torch' in sys.modules, 'tumorbench.training' in sys.modules); "
        "import tumorbench.inference, tumorbench.serving.app; print('tumorbench.training' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO_ROOT / "platform"), "PATH": "/usr/bin:/bin"},
    ).stdout.split()
    assert out == ["False", "False", "False"]


def test_best_checkpoint_of_a_run_by_the_primary_metric_and_its_direction(tmp_path):
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    for epoch, dice, hd95 in ((0, 0.61, 9.0), (1, 0.74, 7.5), (2, 0.70, 4.0), (3, float("nan"), 1.0)):
        manifest_only(
            run / "train" / f"checkpoint_epoch_{epoch:04d}", "segmentation", {"dice": dice, "hd95": hd95}, epoch=epoch
        )
    best = run / "train" / "checkpoint_epoch_0001"
    assert best_checkpoint(run) == best_checkpoint(run / "train") == best
    assert find_packages(run) == find_packages(run / "train") == [best]
    assert best_checkpoint(run, "hd95") == run / "train" / "checkpoint_epoch_0003"  # lower is better
    with pytest.raises(PackageError, match="no checkpoint_"):
        best_checkpoint(tmp_path)
    with pytest.raises(PackageError, match="no model package"):
        find_packages(_empty(tmp_path / "empty"))


def _empty(path):
    path.mkdir()
    return path
