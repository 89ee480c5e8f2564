"""The Ray internals tumorbench uses (Ray has no public API for them); nothing else imports ``ray._private``.

- :func:`cluster_address`: the address ``ray.init()`` would join (``RAY_ADDRESS``, else the cluster
  ``ray start`` made on this machine), so that a local Ray is started with tumorbench's own settings
  (``num_cpus``, ``object_store_memory``), which ``ray.init`` refuses when it joins a cluster.
- :func:`serve_deploy_apps`: deploy Serve applications from config dicts, as ``serve run/deploy
  config.yaml`` do: a redeploy that only changes ``user_config`` reconfigures running replicas, where
  the public ``serve.run`` restarts them.
- :func:`serve_ingress_ports`: the ports of an application's ingress replicas under Serve's direct
  ingress (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``), where they answer HTTP without the proxy.
- :func:`serve_assigned`: wait for a handle call to be accepted by a replica, apart from waiting for its
  answer, so that a call no replica takes (all full, or the only one restarting) is refused quickly.
- :func:`groups_of_dead_actors`: this job's placement groups whose creating actor has died (the GCS
  keeps them until the job ends; the State API does not say who created a group).
- :func:`torch_trainer`: Train's ``TorchTrainer`` without its per-run ``PlacementGroupCleaner`` actor, its
  ``DatasetManager`` when a run passes no Ray datasets (tumorbench's workers read their own data), a one-worker
  run's torch process group, and, on a Ray tumorbench started here, the autoscaling coordinator.

``tests/unit/test_raycompat.py`` pins their signatures and behaviour: it fails when a Ray upgrade moves them.
"""

from __future__ import annotations

import functools
from typing import Any


def cluster_address(address: str | None = None, *, temp_dir: str | None = None) -> str | None:
    """``address``, else ``$RAY_ADDRESS``, else the latest ``ray start`` cluster's; None: no cluster to join."""
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address(address, temp_dir)


def serve_deploy_apps(applications: list[dict[str, Any]], *, http_options: dict[str, Any] | None = None) -> None:
    """Start Serve if needed and deploy ``applications`` (Serve config ``applications`` entries); returns at once."""
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    client = serve_start(http_options=http_options)
    client.deploy_apps(ServeDeploySchema(applications=applications))


def serve_ingress_ports(app_name: str) -> list[int]:
    """HTTP ports on which ``app_name``'s ingress replicas answer themselves (Serve's direct ingress).

    Empty when direct ingress is off (then only Serve's proxy answers). Needs Serve running.
    """
    import ray
    from ray.serve.context import _get_global_client

    groups = ray.get(_get_global_client()._controller.get_target_groups.remote(app_name), timeout=30)
    return sorted(
        target.port
        for group in groups
        if str(getattr(group.protocol, "value", group.protocol)) == "HTTP"
        for target in group.targets
        if target.name.startswith("SERVE_REPLICA")  # not a proxy
    )


async def serve_assigned(response: Any) -> None:
    """Until a ``DeploymentResponse`` is accepted by a replica (Serve holds it while every replica is full or gone).

    Raises what the assignment raises (e.g. ``BackPressureError`` when the deployment's queue is full).
    """
    await response._fetch_future_result_async()


@functools.cache
def torch_trainer(*, autoscaling: bool = True) -> type:
    """``TorchTrainer`` less what tumorbench's runs do not need of Train's per-run helpers.

    Train V2 (Ray 2.60) starts them for every run, so once per trial in a study. A helper process takes
    ~1 s of CPU to start on 2 cores, then wakes ~150 times a second for the whole run (its core worker's
    10 ms signal check): each wake-up preempts a training thread, and the worker's other thread waits
    for it at the next OpenMP barrier (eight processes waking every 10 ms slowed a plain loop to 0.93x).

    - ``DatasetManager`` (``DatasetsCallback``), datasets or not. Dropped for a run without Ray datasets:
      the workers accept a missing shard provider (``RayTrainWorker.init_train_context``).
    - ``PlacementGroupCleaner``, a detached actor asking the State API every second whether the run's
      controller still lives. Dropped always: a search's driver sweeps a dead controller's group itself
      (``tuning.leaks``; the cleaner missed Tune's stop race anyway), and a run outside a search ends
      with its driver, whose job's groups Ray frees.
    - The torch process group of a one-worker run: nothing to reduce across, and gloo's loop thread
      wakes 100 times a second in the worker. With two workers or more it is set up as Train does.
    - ``autoscaling=False``: no ``_AutoscalingCoordinatorActor``, which the run asks every 20 s to keep
      its workers' resources requested from the cluster's autoscaler. For a Ray that tumorbench started
      on this machine, which no autoscaler grows; on a cluster the requests are kept.
    """
    from dataclasses import fields

    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend
    from ray.train.v2._internal.callbacks import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
    from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy

    class Backend(_TorchBackend):
        def on_start(self, worker_group, backend_config) -> None:
            if len(worker_group) > 1:
                super().on_start(worker_group, backend_config)
            else:  # the ranks' environment variables only (LOCAL_RANK, WORLD_SIZE, ...), as Train sets them
                worker_group.execute(_set_torch_distributed_env_vars)

    class Config(TorchConfig):
        @property
        def backend_cls(self):
            return Backend

    class UnscaledPolicy(FixedScalingPolicy):
        """Train's fixed-size policy without the autoscaling coordinator."""

        def after_controller_start(self, train_run_context) -> None:
            pass

        def _maybe_send_resource_request(self) -> None:
            pass

        def _send_resource_request(self) -> None:
            pass

        def _cancel_resource_request(self) -> None:
            pass

    class Trainer(TorchTrainer):
        def __init__(self, *args, torch_config: TorchConfig | None = None, **kwargs) -> None:
            given = torch_config or TorchConfig()
            config = Config(**{field.name: getattr(given, field.name) for field in fields(TorchConfig)})
            super().__init__(*args, torch_config=config, **kwargs)

        def _create_default_callbacks(self) -> list:
            unneeded = (PlacementGroupCleanerCallback,) + (() if self.datasets else (DatasetsCallback,))
            return [c for c in super()._create_default_callbacks() if not isinstance(c, unneeded)]

        def _initialize_and_run_controller(self, **kwargs):
            if not autoscaling and isinstance(kwargs.get("scaling_policy"), FixedScalingPolicy):
                kwargs["scaling_policy"] = UnscaledPolicy(self.scaling_config)
            return super()._initialize_and_run_controller(**kwargs)

    Trainer.__name__ = Trainer.__qualname__ = "TorchTrainer"  # as Ray's logs and errors name it
    return Trainer


def groups_of_dead_actors(job_id: str) -> list[str]:
    """Ids of job ``job_id``'s placement groups, pending or created and not detached, whose creator was an
    actor that has died.

    Ray removes such a group only when its job ends: a Train controller killed before it removed its
    workers' group leaves the group holding its CPUs (``tuning.leaks``). Read from the GCS's table, where
    ``creator_actor_dead`` is kept; a group a driver made has no creating actor and is never listed.
    """
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    table = gcs_pb2.PlacementGroupTableData
    live = (table.PENDING, table.PREPARED, table.CREATED, table.RESCHEDULING)
    found = []
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        group = table.FromString(raw)
        if (
            group.creator_job_id.hex() == job_id
            and group.creator_actor_dead
            and group.creator_actor_id
            and not ray.ActorID(group.creator_actor_id).is_nil()
            and not group.is_detached
            and group.state in live
        ):
            found.append(group.placement_group_id.hex())
    return found
