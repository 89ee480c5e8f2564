"""The driver: validate a training config, then run it with Ray Train's ``TorchTrainer``.

Everything that can be wrong is checked here, before a worker starts: the
model name and task, the data layout, the split file, and whether the cluster
has the workers and GPUs asked for.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tumorbench import storage
from tumorbench.data.catalog import data_dims as catalog_dims
from tumorbench.data.layouts.dicom import KEEP_IDENTIFIERS_ENV
from tumorbench.errors import TumorbenchError
from tumorbench.package.locate import RUN_FOLDER
from tumorbench.training import data as fold_data
from tumorbench.training.callbacks import EpochLogger, format_epoch
from tumorbench.training.config import TrainConfig, TrainConfigError

RUN_NAME = RUN_FOLDER  # where tumorbench.package looks for a run's checkpoints
SNAPSHOT = "checkpoint_manager_snapshot.json"


class TrainingFailed(TumorbenchError, RuntimeError):
    """Ray Train gave up on the run (after the allowed restarts)."""


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join ``address``, else ``RAY_ADDRESS``, else the cluster ``ray start`` made on this machine; else start one.

    The last is what ``ray submit`` relies on: its script runs on the head without an address.
    """
    import ray

    from tumorbench.raycompat import cluster_address

    if ray.is_initialized():
        return
    local_ray_env()
    address = address or cluster_address(None)
    if address not in (None, "local"):
        os.environ.pop(LOCAL_RAY_ENV, None)  # joining a cluster, which an autoscaler may grow
    # Worker errors come back as exceptions and progress is printed from history.csv,
    # so actor logs stay in Ray's log files instead of flooding the console.
    # Workers resolve s3:// storage themselves: an endpoint set in this shell must reach them.
    runtime_env = {"env_vars": storage.worker_env() | job_env()}
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            # The dashboard serves Ray's State API, which a search's sweeper needs (tuning.leaks): without it a
            # trial stopped by ASHA or the budget mid-run may leak its workers' placement group, and the next
            # trial waits for those CPUs for ever. Loopback only (Ray's default host).
            include_dashboard=True,
            log_to_driver=False,
            object_store_memory=512 * 1024**2,
            runtime_env=runtime_env,
        )


# Ray Train V2's controller collects the workers' `ray.train.report` every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S
# (default 2 s), and a report blocks until the one before it is collected (a queue of one): every epoch shorter
# than 2 s took 2 s. The README's 3D study trained and validated an epoch in 0.35 s and reported every 2.03 s,
# ~60 s of a 100 s trial spent waiting. Collected every 0.2 s instead (a poll is a few ms of the controller).
TRAIN_POLL_ENV, TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2"
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"  # Train V2's switch (default on)
# "1" in a process that starts its own local Ray and in that Ray's workers (job_env): no autoscaler grows it.
LOCAL_RAY_ENV = "TUMORBENCH_LOCAL_RAY"


def job_env() -> dict[str, str]:
    """Environment every process of the Ray job gets (its runtime env): Train's report polling interval.

    A value set in this shell wins, so a cluster can be tuned without a code change. On a Ray this process
    started (:func:`local_ray_env`), also the mark saying so; where this shell keeps identifiers (raw DICOM read
    as it is), the workers that read the catalog again do too.
    """
    local = {LOCAL_RAY_ENV: "1"} if on_local_ray() else {}
    kept = {KEEP_IDENTIFIERS_ENV: "1"} if os.environ.get(KEEP_IDENTIFIERS_ENV) == "1" else {}
    return {TRAIN_POLL_ENV: os.environ.get(TRAIN_POLL_ENV, TRAIN_POLL_S)} | local | kept


def on_local_ray() -> bool:
    """Whether this process started its own local Ray, or is a worker of one: no autoscaler grows it."""
    return os.environ.get(LOCAL_RAY_ENV) == "1"


def local_ray_env() -> None:
    """Environment for a Ray this process starts: no usage stats, workers at normal priority, marked local.

    The raylet starts worker processes at niceness 15 (``RAY_worker_niceness``) so that its own
    daemons win the CPU; on a machine shared with other work at niceness 0 that starves training
    (a Ray Train worker ran at 0.42x a plain loop on this 2-core machine under load). ``ray job``
    entrypoints get 0 from Ray itself; this does the same for a local ``ray.init``.

    No preemption watcher: Train starts one actor per run to follow cloud nodes being drained, and a
    local Ray's one node never is (~1 s of CPU per run, once per trial in a study).

    No worker started ahead for the first driver: it idled beside the training for the whole study,
    waking ~150 times a second (``raycompat.torch_trainer`` says what that costs the training).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    os.environ[LOCAL_RAY_ENV] = "1"  # Train runs here and in the workers do without the autoscaling coordinator


def describe_cluster() -> str:
    """One line on the connected cluster: nodes, CPUs, GPUs, and where its GCS is."""
    import ray

    nodes = [node for node in ray.nodes() if node["Alive"]]
    cpus, gpus = cluster_resources()
    gcs = ray.get_runtime_context().gcs_address
    return f"Ray cluster {gcs}: {len(nodes)} node{'s' * (len(nodes) != 1)}, {cpus:g} CPUs, {gpus:g} GPUs"


def cluster_resources() -> tuple[float, float]:
    """CPUs and GPUs of the connected cluster."""
    import ray

    resources = ray.cluster_resources()
    return float(resources.get("CPU", 0)), float(resources.get("GPU", 0))


def resolve_gpu(config: TrainConfig, gpus: float) -> bool:
    if config.use_gpu and gpus < config.workers:
        raise TrainConfigError(f"{config.workers} GPU workers asked for, the cluster has {gpus:g} GPUs")
    return bool(config.use_gpu) if config.use_gpu is not None else gpus >= config.workers


def worker_resources(config: TrainConfig, cpus: float, use_gpu: bool) -> dict[str, float]:
    """CPUs per worker that fit the cluster (Tune trials keep a sliver for themselves)."""
    if use_gpu:
        return {"CPU": max(1.0, min(4.0, (cpus - 1) // config.workers)), "GPU": 1.0}
    # every CPU but a sliver: the worker trains on as many threads as it holds (data.configure_threads)
    per_worker = (cpus - 0.1) / config.workers
    if per_worker < 0.5:
        raise TrainConfigError(
            f"{config.workers} workers do not fit a cluster of {cpus:g} CPUs; "
            f"use --workers {max(1, int(cpus))} or fewer"
        )
    return {"CPU": round(per_worker, 2)}


def run_storage(config: TrainConfig) -> str:
    """Ray Train's ``storage_path`` for ``config``: its ``storage``, else its ``out`` (the run is ``<it>/train``)."""
    return storage.normalize(config.storage or config.out)


def has_snapshot(config: TrainConfig) -> bool:
    """Whether the run's storage holds a Train snapshot (a run to resume)."""
    return storage.exists(storage.join(run_storage(config), RUN_NAME, SNAPSHOT))


def preflight(config: TrainConfig, *, resume: bool, model_checked: bool = False) -> dict[str, Any]:
    """All the checks that must pass before any worker starts; makes the split file if needed.

    ``model_checked``: the caller checked the model against the task and the data (a Tune trial: its study
    did, and a trial cannot change them, ``tuning.space.SEARCHABLE``). The model registry imports timm and
    MONAI, ~4 s of CPU in each trial's process for a check already made.
    """
    frame = fold_data.load_catalog(config)
    dims = catalog_dims(frame)
    if model_checked:
        config.check_data(dims)
    else:
        from tumorbench.training.tasks import check_model_for_task

        check_model_for_task(config, dims)
    run_dir = storage.join(run_storage(config), RUN_NAME)
    snapshot = has_snapshot(config)
    if snapshot and not resume:
        raise TrainConfigError(
            f"{run_dir} already holds a training run: pass --resume to continue it, or choose another --out"
        )
    if resume and not snapshot:
        raise TrainConfigError(f"nothing to resume: {run_dir} has no checkpoints yet")
    doc = fold_data.ensure_split_file(config, frame)
    if config.fold >= len(doc["folds"]):
        raise TrainConfigError(f"fold {config.fold} does not exist in a {len(doc['folds'])}-fold split")
    if config.gan_checkpoint:
        from tumorbench.package import read_manifest
        from tumorbench.training.gan import check_gan_source

        classes = sorted(frame["label"].dropna().unique())
        check_gan_source(config, read_manifest(config.gan_checkpoint), classes, doc["hash"])
    return {"layout": frame.attrs["layout"], "cases": len(frame), "data_dims": dims}


def _train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: the loop, with torch, timm and MONAI, is imported in the worker.

    Ray pickles this function by reference, so the process that launches the run (a Tune trial, once per
    trial) imports only this module, not the loop's (~4 s of CPU).
    """
    from tumorbench.training.loop import train_loop_per_worker

    train_loop_per_worker(loop_config)


def fit(
    config: TrainConfig,
    *,
    resume: bool = False,
    address: str | None = None,
    callbacks: list | None = None,
    verbose: bool = True,
    resources: dict[str, float] | None = None,
    folds: list[dict[str, Any]] | None = None,
    model_checked: bool = False,
):
    """Train ``config`` on Ray; returns Ray's ``Result`` (checkpoints under ``<out>/train``).

    ``resources`` (per worker, e.g. ``{"CPU": 0.95}``) replaces sizing the workers from the
    whole cluster: a Tune trial passes its share, since other trials may hold the rest.
    ``folds`` (dicts of ``fold``, ``out``, ``storage``): a trial's folds, trained in turn in this one run
    (``training.crossval``); Train then keeps only the latest checkpoint, to resume from.
    ``model_checked``: see :func:`preflight`.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    from tumorbench.raycompat import torch_trainer

    info = preflight(config, resume=resume, model_checked=model_checked)
    ensure_ray(address)  # a no-op inside a Tune trial, which is already connected
    if resources is None:
        cpus, gpus = cluster_resources()
        use_gpu = resolve_gpu(config, gpus)
        resources = worker_resources(config, cpus, use_gpu)
    else:
        use_gpu = resources.get("GPU", 0) > 0
    # A GPU declared on a node without CUDA (a test cluster) trains on CPU: NCCL would refuse to start.
    backend = None if not use_gpu or gpus_have_cuda(resources) else "gloo"
    Path(config.out).mkdir(parents=True, exist_ok=True)
    (Path(config.out) / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    # The split file travels with the config: workers on other nodes may not see the driver's disk.
    loop_config = {"train": config.to_dict(), "split": fold_data.split_path(config).read_text(), "folds": folds}
    # One fold: Train keeps its best checkpoints (the package). A trial's folds: each fold keeps its best on
    # its own storage (crossval.BEST_DIR), and Train only the latest, to resume from.
    kept = (
        CheckpointConfig(num_to_keep=1)
        if folds
        else CheckpointConfig(
            num_to_keep=config.keep_checkpoints,
            checkpoint_score_attribute=config.selection_metric,
            checkpoint_score_order=config.selection_mode,
        )
    )
    logger = EpochLogger(config.out, config.task, fold_outs={int(f["fold"]): f["out"] for f in folds or []})
    trainer = torch_trainer(autoscaling=not on_local_ray())(
        _train_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend=backend),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=run_storage(config),
            checkpoint_config=kept,
            failure_config=FailureConfig(max_failures=config.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=[logger, *(callbacks or [])],
        ),
    )
    if verbose:
        print(
            f"[tumorbench] {config.task} {config.model} on {info['layout']} ({info['cases']} cases), "
            f"fold {config.fold}, {config.workers} worker(s) x {resources}, out {config.out}",
            flush=True,
        )
    with _print_new_epochs(config, enabled=bool(verbose)):
        try:
            return trainer.fit()
        except Exception as exc:  # Ray wraps worker errors; keep the cause readable
            raise TrainingFailed(f"training in {config.out} failed: {exc}") from exc


def _has_cuda() -> bool:
    return os.path.exists("/dev/nvidiactl")  # the NVIDIA driver's control device; no torch import needed


def gpus_have_cuda(resources: dict[str, float]) -> bool:
    """Whether a node that can hold a worker of ``resources`` has an NVIDIA device (asked there, in a task)."""
    return _gpus_have_cuda(float(resources["GPU"]))


@functools.lru_cache(maxsize=4)  # once per trial process, not once per fold
def _gpus_have_cuda(gpus: float) -> bool:
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    # Out of the Tune trial's placement group (which holds no GPU): anywhere a GPU is.
    probe = ray.remote(num_cpus=0, num_gpus=gpus)(_has_cuda).options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None)
    )
    return bool(ray.get(probe.remote()))


@contextmanager
def _print_new_epochs(config: TrainConfig, *, enabled: bool, interval_s: float = 1.0):
    """Print each epoch the run appends to ``history.csv`` while the block runs."""
    if not enabled:
        yield
        return
    seen = len(read_history(config.out))
    stop = threading.Event()

    def follow() -> None:
        nonlocal seen
        while True:
            finished = stop.wait(interval_s)
            rows = read_history(config.out)
            for row in rows[seen:]:
                print(format_epoch(row, config.task), flush=True)
            seen = len(rows)
            if finished:
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def read_history(out: str | Path) -> list[dict[str, Any]]:
    """The per-epoch metrics a run has logged so far (``<out>/history.csv``)."""
    path = Path(out) / "history.csv"
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
