"""Where the packages are: a package folder, a folder of packages, or a training run (its best checkpoint).

``tumorbench train --out RUN`` writes ``RUN/train/checkpoint_*``, each a package; a run's
best checkpoint is the one with the best value of its task's primary metric, in the
task's direction. Torch-free, like :mod:`tumorbench.package.manifest`.
"""

from __future__ import annotations

import math
from pathlib import Path

from tumorbench.package.manifest import PackageError, is_package, read_manifest
from tumorbench.tasks import get_task

CHECKPOINT_PREFIX = "checkpoint_"
RUN_FOLDER = "train"  # a run's Ray Train storage folder (tumorbench.training.trainer.RUN_NAME is this)


def checkpoints(folder: str | Path) -> list[Path]:
    """The ``checkpoint_*`` packages directly in ``folder``, sorted by name (training order)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and is_package(p))


def best_checkpoint(folder: str | Path, metric: str | None = None) -> Path:
    """The best checkpoint of a training run: ``folder`` is the run (``--out``) or its ``train/`` folder.

    Ranked by ``metric`` (default: the task's primary metric) in the task's direction; a
    checkpoint without a finite value ranks last; ties go to the later checkpoint.
    """
    folder = Path(folder)
    found = checkpoints(folder) or checkpoints(folder / RUN_FOLDER)
    if not found:
        raise PackageError(folder, "no checkpoint_* model packages in it (nor in its train/ folder)")

    def score(package: Path) -> tuple[float, str]:
        manifest = read_manifest(package)
        task = get_task(manifest.task)
        name = task.check_metric(metric)
        value = manifest.metrics.get(name, float("nan")) if name != "epoch" else manifest.epoch
        value = float(value)
        if not math.isfinite(value):
            return -math.inf, package.name
        return (value if task.mode(name) == "max" else -value), package.name

    return max(found, key=score)


def find_packages(path: str | Path) -> list[Path]:
    """The packages ``path`` names: itself; a training run's best checkpoint; else the packages in it."""
    path = Path(path)
    if is_package(path):
        return [path]
    if not path.is_dir():
        raise PackageError(path, "not a model package folder")
    children = sorted(p for p in path.iterdir() if is_package(p))
    if children and all(p.name.startswith(CHECKPOINT_PREFIX) for p in children):
        return [best_checkpoint(path)]
    if not children and checkpoints(path / RUN_FOLDER):
        return [best_checkpoint(path / RUN_FOLDER)]
    if not children:
        raise PackageError(
            path, "no model package (a folder with model.json) in it, nor a training run's train/checkpoint_* folders"
        )
    return children
