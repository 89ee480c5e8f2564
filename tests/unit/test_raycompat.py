"""tumorbench.raycompat: the Ray internals it wraps still exist and behave as it assumes (fails when Ray moves them)."""

from __future__ import annotations

import inspect
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from tumorbench.raycompat import cluster_address


def test_private_ray_symbols_and_signatures_are_where_raycompat_expects_them():
    from ray._private.services import canonicalize_bootstrap_address
    from ray.serve._private.api import serve_start
    from ray.serve._private.client import ServeControllerClient
    from ray.serve.schema import ServeDeploySchema

    assert list(inspect.signature(canonicalize_bootstrap_address).parameters)[:2] == ["addr", "temp_dir"]
    assert "http_options" in inspect.signature(serve_start).parameters
    assert inspect.signature(serve_start).return_annotation in (ServeControllerClient, "ServeControllerClient")
    assert "config" in inspect.signature(ServeControllerClient.deploy_apps).parameters
    schema = ServeDeploySchema(
        applications=[{"name": "a", "route_prefix": "/", "import_path": "x.y:z", "args": {"models": ["p"]}}]
    )
    assert schema.applications[0].args == {"models": ["p"]}
    # serve_ingress_ports / serve_assigned
    from ray.serve._private.controller import ServeController
    from ray.serve.context import _get_global_client  # noqa: F401
    from ray.serve.handle import DeploymentResponse
    from ray.serve.schema import Target, TargetGroup

    assert "app_name" in inspect.signature(ServeController.get_target_groups).parameters
    assert {"port", "name"} <= set(Target.model_fields) and {"targets", "protocol"} <= set(TargetGroup.model_fields)
    assert inspect.iscoroutinefunction(DeploymentResponse._fetch_future_result_async)
    # groups_of_dead_actors (its behaviour: tests/integration/test_leaks.py)
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    assert callable(state._connect_and_get_accessor)
    fields = {f.name for f in gcs_pb2.PlacementGroupTableData.DESCRIPTOR.fields}
    assert {"creator_job_id", "creator_actor_id", "creator_actor_dead", "is_detached", "state"} <= fields


def test_cluster_address_order(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(None, temp_dir=str(tmp_path)) is None  # nothing to join: start a local Ray
    (tmp_path / "ray_current_cluster").write_text("10.0.0.5:6390\n")  # what `ray start` leaves behind
    assert cluster_address(None, temp_dir=str(tmp_path)) == "10.0.0.5:6390"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6391")
    assert cluster_address(None, temp_dir=str(tmp_path)) == "10.0.0.5:6391"
    assert cluster_address("10.0.0.5:6392", temp_dir=str(tmp_path)) == "10.0.0.5:6392"
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert cluster_address(None, temp_dir=str(tmp_path)) is None


def test_no_other_module_imports_ray_private_apis():
    pattern = r"ray\._private|ray\.serve\._private"
    offenders = subprocess.run(
        ["grep", "-rlE", "--include=*.py", pattern, "platform", "serve", "experiments"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert offenders == [str(Path("platform/tumorbench/raycompat.py"))]


def test_torch_trainer_drops_the_pg_cleaner_and_the_dataset_callback_only_without_datasets():
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.execution.worker_group.worker import RayTrainWorker

    from tumorbench.raycompat import torch_trainer

    # the workers take a run without a shard provider
    assert inspect.signature(RayTrainWorker.init_train_context).parameters["dataset_shard_provider"].default is None

    def names(trainer) -> list[str]:
        return [type(callback).__name__ for callback in trainer._create_default_callbacks()]

    plain = names(TorchTrainer(lambda: None, scaling_config=ScalingConfig(num_workers=1)))
    assert {"DatasetsCallback", "PlacementGroupCleanerCallback"} <= set(plain)
    assert names(torch_trainer()(lambda: None, scaling_config=ScalingConfig(num_workers=1))) == [
        name for name in plain if name not in ("DatasetsCallback", "PlacementGroupCleanerCallback")
    ]
    with_data = torch_trainer()(lambda: None, scaling_config=ScalingConfig(num_workers=1), datasets={"train": list})
    assert names(with_data) == [name for name in plain if name != "PlacementGroupCleanerCallback"]


class _Workers:
    """A worker group of ``n`` that records the functions run on it (Train's ``WorkerGroup`` interface)."""

    def __init__(self, n: int) -> None:
        self.n, self.ran = n, []

    def __len__(self) -> int:
        return self.n

    def execute(self, fn, *args, **kwargs):
        self.ran.append(fn)
        return [None] * self.n


def test_torch_trainer_keeps_the_torch_config_and_sets_up_a_process_group_only_for_two_workers_or_more(monkeypatch):
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig
    from ray.train.torch import config as torch_config_module

    from tumorbench.raycompat import torch_trainer

    trainer = torch_trainer()(
        lambda: None,
        scaling_config=ScalingConfig(num_workers=1),
        torch_config=TorchConfig(backend="gloo", init_method="tcp", timeout_s=99),
    )
    config = trainer.backend_config
    assert isinstance(config, TorchConfig)
    assert (config.backend, config.init_method, config.timeout_s) == ("gloo", "tcp", 99)
    started = []
    monkeypatch.setattr(
        torch_config_module._TorchBackend, "on_start", lambda self, group, cfg: started.append(len(group))
    )
    backend = config.backend_cls()
    one, two = _Workers(1), _Workers(2)
    backend.on_start(one, config)
    backend.on_start(two, config)
    # one worker: only the ranks' environment variables, no process group; two: Train's own set-up
    assert one.ran == [torch_config_module._set_torch_distributed_env_vars]
    assert started == [2]


def test_torch_trainer_without_autoscaling_never_asks_the_autoscaling_coordinator(monkeypatch):
    from ray.train import ScalingConfig
    from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy, ResizeDecision
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from tumorbench.raycompat import torch_trainer

    seen = {}
    monkeypatch.setattr(DataParallelTrainer, "_initialize_and_run_controller", lambda self, **kw: seen.update(kw))
    scaling = ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5})
    stock = FixedScalingPolicy(scaling)
    torch_trainer()(lambda: None, scaling_config=scaling)._initialize_and_run_controller(scaling_policy=stock)
    assert seen["scaling_policy"] is stock  # on a cluster, Train's own policy
    torch_trainer(autoscaling=False)(lambda: None, scaling_config=scaling)._initialize_and_run_controller(
        scaling_policy=stock, other=1
    )
    policy = seen["scaling_policy"]
    assert isinstance(policy, FixedScalingPolicy) and policy is not stock and seen["other"] == 1
    # Train's policy cannot decide without its coordinator client; this one never makes one
    with pytest.raises(AssertionError):
        stock.make_decision_for_non_running_worker_group()
    policy.after_controller_start(None)
    decision = policy.make_decision_for_non_running_worker_group()
    assert isinstance(decision, ResizeDecision) and decision.num_workers == 2
    assert decision.resources_per_worker == {"CPU": 0.5}
    assert policy._coordinator_client is None
    policy.before_controller_abort()
