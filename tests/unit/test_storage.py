"""Storage locations: local folders and S3 (a moto server on loopback) through the same calls Ray uses."""

from __future__ import annotations

import pytest

from tumorbench import storage
from tumorbench.study import manifest
from tumorbench.training.config import TrainConfig, TrainConfigError
from tumorbench.tuning.resources import Resources, explicit_plan, plan_for


def _tree(root):
    (root / "a").mkdir(parents=True)
    (root / "a" / "model.json").write_text('{"x": 1}')
    (root / "training_state.pt").write_bytes(b"\0" * 10)


def test_locations_normalize_and_join(tmp_path, monkeypatch):
    assert storage.is_remote("s3://b/p") and storage.is_remote("gs://b") and not storage.is_remote("/x")
    assert not storage.is_remote("file:///x") and storage.normalize("file:///x/") == "/x"
    assert storage.join("s3://b/p/", "searches", "/unet") == "s3://b/p/searches/unet"
    assert storage.join(tmp_path, "a") == str(tmp_path / "a")
    monkeypatch.delenv(storage.ENV, raising=False)
    assert storage.choose(None, tmp_path) == str(tmp_path)
    monkeypatch.setenv(storage.ENV, "s3://env-bucket/x/")
    assert storage.choose(None, tmp_path) == "s3://env-bucket/x"
    assert storage.choose("s3://given/y", tmp_path) == "s3://given/y"


def test_local_round_trip(tmp_path):
    _tree(tmp_path / "src")
    storage.upload(tmp_path / "src", tmp_path / "dst")
    assert storage.listing(tmp_path / "dst") == ["a/model.json", "training_state.pt"]
    back = storage.download(tmp_path / "dst", tmp_path / "back", skip=("training_state.pt",))
    assert sorted(p.name for p in back.rglob("*")) == ["a", "model.json"]
    storage.upload(tmp_path / "src", tmp_path / "src")  # onto itself: nothing to do, nothing lost
    assert storage.read_text(tmp_path / "src" / "a" / "model.json") == '{"x": 1}'


def test_s3_round_trip_through_pyarrow(local_s3, tmp_path):
    import pyarrow.fs

    _, bucket = local_s3
    _tree(tmp_path / "src")
    target = f"{bucket}/run/ckpt"
    storage.upload(tmp_path / "src", target)
    assert storage.listing(target) == ["a/model.json", "training_state.pt"]
    assert storage.exists(f"{target}/a/model.json") and not storage.exists(f"{target}/missing")
    assert storage.read_text(f"{target}/a/model.json") == '{"x": 1}'
    # What a Ray checkpoint on S3 holds (filesystem, bucket path) maps back to the URI.
    filesystem, path = pyarrow.fs.FileSystem.from_uri(target)
    assert storage.uri_of(filesystem, path) == target
    with storage.local_folder(target) as folder:
        assert (folder / "training_state.pt").stat().st_size == 10


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(storage.StorageError, match="storage nope://x"):
        storage.exists("nope://x/y")


def test_train_config_keeps_uris_and_absolutizes_paths(tmp_path):
    base = {"task": "segmentation", "model": "unet_tiny", "data": str(tmp_path), "out": str(tmp_path)}
    assert TrainConfig.from_dict(base | {"storage": "s3://b/p/"}).storage == "s3://b/p"
    assert TrainConfig.from_dict(base | {"storage": "rel"}).storage.startswith("/")


def test_resources_explicit_requests_split_over_workers(tmp_path):
    config = TrainConfig(task="segmentation", model="unet_tiny", data=str(tmp_path), out=str(tmp_path), workers=2)
    plan = explicit_plan(config, Resources(gpus_per_trial=2, cpus_per_trial=8, concurrent_trials=4))
    assert plan.worker == {"CPU": 4.0, "GPU": 1.0} and plan.concurrent == 4
    assert explicit_plan(config, Resources(gpus_per_trial=0)).worker == {"CPU": 1.0}
    # Unset: sized from the cluster as it is (2 CPUs, no GPU here).
    assert plan_for(config, Resources(), 2.0, 0.0).worker == {"CPU": 0.95}
    for bad in ({"gpus_per_trial": -1}, {"cpus_per_trial": 0}, {"concurrent_trials": 0}, {"trial_cpus": 0}):
        with pytest.raises(TrainConfigError):
            Resources(**bad)


def test_commit_recorded_at_submit_time_without_git(monkeypatch, tmp_path):
    def no_git(*args, **kwargs):
        raise OSError("no git here")

    monkeypatch.setattr(manifest.subprocess, "run", no_git)
    monkeypatch.setenv(manifest.COMMIT_ENV, "0123abc dirty")
    assert manifest.code_version() == {"git_commit": "0123abc", "git_dirty": True}
    monkeypatch.setenv(manifest.COMMIT_ENV, "")
    file = manifest.Path(manifest.__file__).resolve().parents[3] / manifest.COMMIT_FILE
    if not file.exists():
        assert manifest.code_version() == {"git_commit": None, "git_dirty": None}


def test_gpu_node_types_come_from_the_heads_autoscaling_config(tmp_path):
    from tests.conftest import REPO_ROOT

    from tumorbench.tuning.resources import autoscaler_gpus

    # cluster.yaml's GPU worker type declares one A10G; `ray up` puts that file on the head.
    assert autoscaler_gpus(REPO_ROOT / "cluster.yaml") == 1.0
    assert autoscaler_gpus(tmp_path / "missing.yaml") is None  # plain `ray start`: nothing can be added
    (tmp_path / "cpu.yaml").write_text("available_node_types:\n  w: {resources: {CPU: 4}}\n")
    assert autoscaler_gpus(tmp_path / "cpu.yaml") == 0.0


def test_workers_that_fit_no_node_are_refused_not_left_pending(monkeypatch, tmp_path):
    import ray.autoscaler.sdk

    from tumorbench.tuning import resources as module
    from tumorbench.tuning.resources import ResourcePlan, ensure_feasible

    asked = []
    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources", lambda bundles: asked.append(bundles))
    monkeypatch.setattr(module, "_nodes", lambda: [{"CPU": 8.0, "memory": 1e9}, {"CPU": 4.0, "GPU": 1.0}])
    monkeypatch.setattr(module, "autoscaler_node_types", lambda: None)
    ensure_feasible(ResourcePlan(1, {"CPU": 4.0, "GPU": 1.0}, 0.1), Resources())  # fits the second node
    with pytest.raises(TrainConfigError, match=r"needs 16 CPU, .* \(at most 8 CPU\) and no autoscaler .* fewer --cpus"):
        ensure_feasible(ResourcePlan(1, {"CPU": 16.0}, 0.1), Resources())
    # A node type of the autoscaling config fits: the request goes out, then the (here zero) wait ends.
    monkeypatch.setattr(module, "autoscaler_node_types", lambda: [{"CPU": 4.0, "GPU": 4.0}])
    with pytest.raises(TrainConfigError, match=r"needs 1 CPU \+ 2 GPU, .* the autoscaler added none within 0 s"):
        ensure_feasible(ResourcePlan(3, {"CPU": 1.0, "GPU": 2.0}, 0.1), Resources(gpu_wait_s=0))
    assert asked[-1] == [{"CPU": 1.0, "GPU": 2.0}] * 3
