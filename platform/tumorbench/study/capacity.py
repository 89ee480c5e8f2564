"""What a study can use: the machine's or cluster's CPUs, GPUs and memory, and the cache mode that fits."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from tumorbench.study.spec import Study
from tumorbench.study.timemodel import CALIBRATION_SIZE_2D, CALIBRATION_SIZE_3D, DISK_CHAINS
from tumorbench.tasks import get_task

MEMORY_CACHE_SHARE = 0.25  # at most this share of available memory for all in-memory caches together


@dataclass(frozen=True)
class Capacity:
    """What the machine or cluster has for the study: CPUs, GPUs, memory (bytes), and where the numbers came from.

    Not :class:`tumorbench.tuning.resources.Resources`, which is what one trial asks for.
    """

    cpus: float
    gpus: float
    memory: float
    source: str

    def side_by_side(self, workers: int, max_trials: int) -> int:
        """Trials at once: one per GPU; on CPUs one per 2 cores (a trial's worker + Ray's processes and loader)."""
        if self.gpus >= 1:
            return max(1, min(max_trials, int(self.gpus // workers)))
        return max(1, min(max_trials, int(self.cpus // (2 * workers))))

    @classmethod
    def local(cls) -> Capacity:
        """This machine, read before Ray starts."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return cls(float(cpus), float(_local_gpus()), float(_available_memory()), "this machine")

    @classmethod
    def from_ray(cls) -> Capacity:
        """The connected Ray cluster (``ray.cluster_resources``)."""
        import ray

        res = ray.cluster_resources()
        return cls(float(res.get("CPU", 0)), float(res.get("GPU", 0)), float(res.get("memory", 0)), "Ray cluster")


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except (ImportError, RuntimeError):  # no torch or a broken CUDA install: plan for CPUs
        return 0


def _available_memory() -> float:
    try:
        with open("/proc/meminfo") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return float(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def usable_cases(fp: dict[str, Any], study: Study) -> int:
    cases = sum(fp["classes"].values()) if not get_task(study.task).with_mask and fp["classes"] else fp["cases"]
    if study.config.get("dedupe", True) and not get_task(study.task).with_mask:
        cases -= fp["duplicates"].get("redundant_copies") or 0
    return max(1, cases)


def cache_bytes(fp: dict[str, Any], study: Study, size: int, dims: int, cases: int | None = None) -> float:
    """Bytes one trial's in-memory cache holds: every case (``cases`` of a planned sample, else all usable ones)
    preprocessed to ``size`` (float32, mask included)."""
    channels = (study.config.get("preprocess") or {}).get("channels") or fp["channels"]
    if dims == 3:  # 3D studies cache whole preprocessed volumes, not patches
        voxels = math.prod(fp["median_shape"][:3])
    else:
        voxels = size * size
    per_case = (channels + (1 if get_task(study.task).with_mask else 0)) * voxels * 4
    return float((cases or usable_cases(fp, study)) * per_case)


def choose_cache(
    fp: dict[str, Any],
    study: Study,
    size: int,
    dims: int,
    side_by_side: int,
    capacity: Capacity,
    disk_free: float,
    cases: int | None = None,
) -> tuple[str, str]:
    """``memory`` when every concurrent trial's cache fits the memory share, else ``disk``, else ``none``."""
    need = cache_bytes(fp, study, size, dims, cases)
    allowed = MEMORY_CACHE_SHARE * capacity.memory
    if need * side_by_side <= allowed:
        return (
            "memory",
            f"memory cache: {need / 2**20:.0f} MB per trial x {side_by_side} fits "
            f"{MEMORY_CACHE_SHARE:.0%} of {capacity.memory / 2**30:.1f} GiB",
        )
    if need * DISK_CHAINS * 1.5 <= disk_free:
        return "disk", (
            f"disk cache (shared by every trial and fold): {need / 2**20:.0f} MB per trial x "
            f"{side_by_side} is over {MEMORY_CACHE_SHARE:.0%} of {capacity.memory / 2**30:.1f} GiB"
        )
    return "none", (
        f"no cache: {need / 2**20:.0f} MB fits neither {MEMORY_CACHE_SHARE:.0%} of memory nor the "
        f"{disk_free / 2**30:.1f} GiB free on disk"
    )


def free_disk_bytes(path: str = ".") -> float:
    import shutil

    return float(shutil.disk_usage(path).free)


def volume_shape(study: Study, fp: dict[str, Any]) -> tuple[float, ...]:
    """The whole 3D input a model sees (resized, else the median shape)."""
    return tuple(float(v) for v in (study.config.get("preprocess") or {}).get("spatial_size") or fp["median_shape"][:3])


def volume_edge(study: Study, fp: dict[str, Any]) -> float:
    """Edge of a cube with the voxels of :func:`volume_shape`."""
    return float(math.prod(volume_shape(study, fp))) ** (1 / 3)


def study_size(study: Study, dims: int) -> int:
    """The input (2D) or patch (3D) edge the study is written with."""
    if dims == 3:
        patch = (study.config.get("sampling") or {}).get("patch_size") or [CALIBRATION_SIZE_3D]
        return int(patch[0])
    size = (study.config.get("preprocess") or {}).get("spatial_size") or [CALIBRATION_SIZE_2D]
    return int(size[0])


def start_size(study: Study, fp: dict[str, Any]) -> int:
    """The input (2D) or patch (3D) edge a plan starts from, before scaling down."""
    dims = int(study.config.get("spatial_dims", 2))
    size = study_size(study, dims)
    if dims == 2:  # no needless upsampling: the data's median size, rounded up to the U-Nets' stride of 16
        size = min(size, max(32, 16 * math.ceil(min(fp["median_shape"][:2]) / 16)))
    return size
