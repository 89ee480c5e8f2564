"""What each trial asks the cluster for, and making sure the cluster can ever give it.

:class:`Resources` is the one typed place for the options (``--gpus-per-trial``,
``--cpus-per-trial``, ``--concurrent-trials``; a planner may fill it instead).
Left unset, trials are sized from the cluster as it is (a laptop, a fixed
cluster). Set, trials ask for exactly that: on an autoscaling cluster the
request is what starts GPU workers (Ray's autoscaler launches nodes for
pending resource demands; :func:`ensure_feasible` also tells it up front with
``request_resources``). A cluster that has no GPUs and no autoscaler node type
with GPUs is refused with a clear message instead of leaving trials pending forever.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tumorbench.training.config import TrainConfig, TrainConfigError

MIN_WORKER_CPU = 0.5
GPU_WAIT_ENV = "TUMORBENCH_GPU_WAIT_S"
AUTOSCALING_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` puts the head's autoscaler config
AUTOSCALING_CONFIG_ENV = "TUMORBENCH_AUTOSCALING_CONFIG"
AUTOSCALER_GPU_WAIT_S = 900.0  # a GPU node's boot, image pull and setup take 5-10 minutes


@dataclass(frozen=True)
class Resources:
    """Per-trial resource requests; ``None`` sizes them from the cluster.

    Args:
        gpus_per_trial: GPUs one trial's Train workers hold together (spread evenly over them); 0: CPU only.
        cpus_per_trial: CPUs one trial's Train workers hold together.
        concurrent_trials: Trials running at once (default 1; when sized from the cluster, the most that fit).
        trial_cpus: CPU the trial function itself holds (its workers get the rest).
        gpu_wait_s: How long to wait for GPU nodes to join (default: ``$TUMORBENCH_GPU_WAIT_S``, else
            15 minutes when the head's autoscaling config has a GPU node type, and 0 otherwise).
    """

    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    concurrent_trials: int | None = None
    trial_cpus: float = 0.1
    gpu_wait_s: float | None = None

    def __post_init__(self) -> None:
        if self.trial_cpus <= 0:
            raise TrainConfigError("trial_cpus must be > 0 (Tune refuses 0)")
        for name in ("gpus_per_trial", "cpus_per_trial"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise TrainConfigError(f"{name} must be >= 0, got {value}")
        if self.cpus_per_trial == 0:
            raise TrainConfigError("cpus_per_trial must be > 0")
        if self.concurrent_trials is not None and self.concurrent_trials < 1:
            raise TrainConfigError(f"concurrent_trials must be >= 1, got {self.concurrent_trials}")

    @property
    def explicit(self) -> bool:
        """Whether trials ask for set amounts (rather than a share of the cluster as it is)."""
        return self.gpus_per_trial is not None or self.cpus_per_trial is not None


@dataclass(frozen=True)
class ResourcePlan:
    """How trials share the cluster: trials at once, and each Train worker's resources."""

    concurrent: int
    worker: dict[str, float]
    trial_cpus: float

    def describe(self, workers: int) -> str:
        return (
            f"up to {self.concurrent} trial(s) at once, each {self.trial_cpus:g} CPU + "
            f"{workers} worker(s) x {self.worker}"
        )


def plan_resources(
    config: TrainConfig,
    cpus: float,
    gpus: float,
    *,
    trial_cpus: float = 0.1,
    max_concurrent: int = 1,
    node_cpus: float | None = None,
) -> ResourcePlan:
    """The most trials (up to ``max_concurrent``) whose workers fit ``cpus``/``gpus`` together.

    A CPU worker holds at most 1 CPU unless ``node_cpus`` (the largest node's) says how much one node has:
    then up to that node's CPUs less the trial's own sliver, so a 1-worker study on a 2-core machine trains
    on both cores (``training.data.configure_threads``) and a worker still fits on one node of a cluster
    of small nodes (sized from the total alone, a 1.9-CPU worker fits no node of two 1-CPU ones).

    Raises:
        TrainConfigError: Not even one trial fits (so nothing waits forever for resources).
    """
    from tumorbench.training.trainer import resolve_gpu

    if trial_cpus <= 0 or max_concurrent < 1:
        raise TrainConfigError("trial_cpus must be > 0 (Tune refuses 0) and max_concurrent >= 1")
    use_gpu = resolve_gpu(config, gpus)
    for concurrent in range(max_concurrent, 0, -1):
        if use_gpu and gpus < concurrent * config.workers:
            continue
        free = cpus - concurrent * trial_cpus
        cap = 4.0 if use_gpu else 1.0 if node_cpus is None else max(1.0, node_cpus - trial_cpus)
        if node_cpus is not None:
            cap = min(cap, node_cpus)
        per_worker = math.floor(min(cap, free / (concurrent * config.workers)) * 100) / 100
        if per_worker >= MIN_WORKER_CPU:
            worker = {"CPU": per_worker} | ({"GPU": 1.0} if use_gpu else {})
            return ResourcePlan(concurrent=concurrent, worker=worker, trial_cpus=trial_cpus)
    need = f"{trial_cpus:g} CPU + {config.workers} worker(s) x >= {MIN_WORKER_CPU} CPU" + (
        " and 1 GPU" if use_gpu else ""
    )
    raise TrainConfigError(
        f"one trial needs {need}; the cluster has {cpus:g} CPUs and {gpus:g} GPUs (use fewer workers)"
    )


def explicit_plan(config: TrainConfig, resources: Resources) -> ResourcePlan:
    """The plan for set per-trial amounts, split evenly over the trial's workers (CPU default: 1 per worker)."""
    workers = config.workers
    cpus = resources.cpus_per_trial if resources.cpus_per_trial is not None else float(workers)
    worker = {"CPU": round(cpus / workers, 3)}
    if resources.gpus_per_trial:
        worker["GPU"] = round(resources.gpus_per_trial / workers, 3)
    return ResourcePlan(concurrent=resources.concurrent_trials or 1, worker=worker, trial_cpus=resources.trial_cpus)


def plan_for(
    config: TrainConfig, resources: Resources, cpus: float, gpus: float, node_cpus: float | None = None
) -> ResourcePlan:
    """:func:`explicit_plan` for set amounts, else :func:`plan_resources` on the cluster as it is."""
    if resources.explicit:
        return explicit_plan(config, resources)
    return plan_resources(
        config,
        cpus,
        gpus,
        trial_cpus=resources.trial_cpus,
        max_concurrent=resources.concurrent_trials or 1,
        node_cpus=node_cpus,
    )


def largest_node_cpus() -> float | None:
    """The most CPUs one alive node of the connected cluster has (None when Ray lists no node)."""
    return max((float(node.get("CPU", 0)) for node in _nodes()), default=None)


def autoscaler_node_types(config_path: str | os.PathLike | None = None) -> list[dict[str, float]] | None:
    """The resources of each node type the autoscaler may add, or None without an autoscaling config.

    ``ray up`` starts the head with ``--autoscaling-config=~/ray_bootstrap_config.yaml``; drivers
    (``ray submit``, Ray jobs) run on the head and read it there. A plain ``ray start`` or local
    Ray has none (its monitor only watches), so no node can ever be added.
    """
    import yaml

    path = Path(config_path or os.environ.get(AUTOSCALING_CONFIG_ENV) or AUTOSCALING_CONFIG).expanduser()
    if not path.is_file():
        return None
    types = (yaml.safe_load(path.read_text()) or {}).get("available_node_types") or {}
    return [{k: float(v) for k, v in (t.get("resources") or {}).items()} for t in types.values()]


def autoscaler_gpus(config_path: str | os.PathLike | None = None) -> float | None:
    """The most GPUs any node type of the autoscaling config brings, or None without a config."""
    types = autoscaler_node_types(config_path)
    return None if types is None else max((t.get("GPU", 0.0) for t in types), default=0.0)


def _fits(bundle: dict[str, float], capacity: dict[str, float]) -> bool:
    return all(float(capacity.get(key, 0)) >= value for key, value in bundle.items())


def _nodes() -> list[dict[str, float]]:
    import ray

    return [node["Resources"] for node in ray.nodes() if node["Alive"]]


def _describe(bundle: dict[str, float]) -> str:
    return " + ".join(f"{value:g} {key}" for key, value in bundle.items())


def ensure_feasible(plan: ResourcePlan, resources: Resources, *, poll_s: float = 5.0) -> None:
    """Make sure some node can hold a Train worker of ``plan``: it does, the autoscaler adds one, or refuse.

    Explicit requests are not sized from the cluster, so a worker that fits no node (no GPU node,
    more CPUs than any machine has) would leave its trial pending forever.

    Raises:
        TrainConfigError: No node fits and none can be added (at once), or none joined in time.
    """
    from ray.autoscaler.sdk import request_resources

    bundle = dict(plan.worker)
    if any(_fits(bundle, node) for node in _nodes()):
        return
    types = autoscaler_node_types()
    autoscaling = types is not None and any(_fits(bundle, t) for t in types)
    wait = resources.gpu_wait_s
    if wait is None:
        wait = float(os.environ.get(GPU_WAIT_ENV, AUTOSCALER_GPU_WAIT_S if autoscaling else 0))
    # Persistent hint: the autoscaler keeps enough nodes for these bundles until the next call.
    request_resources(bundles=[bundle] * max(1, plan.concurrent))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if any(_fits(bundle, node) for node in _nodes()):
            return
        time.sleep(poll_s)
    largest = {key: max((float(node.get(key, 0)) for node in _nodes()), default=0.0) for key in bundle}
    how = (
        f"the autoscaler added none within {wait:g} s (check max_workers and the cloud's quota: "
        f"`ray status`, `ray monitor cluster.yaml`)"
        if autoscaling
        else "no autoscaler runs here to add nodes"
        if types is None
        else "no node type of the autoscaling config has that much"
    )
    fix = (
        "use --gpus-per-trial 0 to train on CPUs, or start the cluster with GPU workers"
        if "GPU" in bundle
        else "ask for fewer --cpus-per-trial"
    )
    raise TrainConfigError(
        f"each trial worker needs {_describe(bundle)}, but no node of this cluster has that "
        f"much (at most {_describe(largest)}) and {how}; {fix}"
    )


def ensure_trials_can_stop(timeout_s: float = 20.0) -> None:
    """Refuse a search that may stop trials mid-run (ASHA, a budget) on a Ray without its State API.

    A trial is one Ray Train run; when Tune stops it early, the search's sweeper (``tuning.leaks``) frees the
    run's workers' placement group, finding the empty ones with the State API (served by Ray's dashboard).
    Without the dashboard the workers' CPUs may stay reserved and the next trial waits for them for ever.
    Retried for ``timeout_s``: a dashboard just started takes a few seconds to answer.
    """
    import ray
    from ray.util.state import list_nodes
    from ray.util.state.exception import RayStateApiException

    # The connected cluster's own address: left to itself the State API client looks for "the" cluster on
    # this machine and fails when there are several (Ray's client still prefers $RAY_ADDRESS when it is set).
    address = ray.get_runtime_context().gcs_address
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            list_nodes(address=address, limit=1, timeout=5, raise_on_missing_output=False)
            return
        except RayStateApiException as exc:
            if time.monotonic() >= deadline:
                raise TrainConfigError(
                    "this Ray cluster answers no State API (Ray's dashboard is off), so Ray Train cannot free "
                    "the workers of a trial that ASHA or the budget stops early, and the next trial would wait "
                    "for them for ever: start Ray with its dashboard (`ray start --head` does by default; not "
                    f"--include-dashboard=false), or search with scheduler 'none' and no budget ({type(exc).__name__})"
                ) from None
            time.sleep(1.0)
