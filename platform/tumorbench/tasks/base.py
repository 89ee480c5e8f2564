"""The :class:`Task` interface and its registry (``register_task`` / ``get_task``), as models/registry.py has models.

A task owns everything that used to be ``if task == ...`` branches: its metric panel,
primary metric and direction, catalog requirements, the stratification key, the loss,
the batch target and validation, and the out-of-fold prediction schema shared by deep
models and baselines. Methods that need torch, MONAI or scikit-learn import them lazily.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from tumorbench.errors import TumorbenchError

MODES = ("max", "min")


class TaskError(TumorbenchError, ValueError):
    """An unknown task, or a metric the task does not have."""


class Task:
    """Base class of a task; subclasses set the class attributes and override the hooks they need.

    Attributes:
        name: Registry name (lowercase).
        metrics: The metric panel validation and the leaderboard report.
        primary: The default primary metric (model selection, ranking).
        lower_is_better: Metrics (by base name) where smaller is better (distances).
        shown: Metrics printed on each epoch's console line.
        key_metrics: Secondary metrics the console leaderboard shows beside the primary.
        target: Catalog column the task learns: ``label`` or ``mask``.
        stratify: Split stratification key (``label``, or ``has_tumor`` for masks).
        dedupe: Drop byte-identical images before splitting (images with class labels).
        rankable: Has a validation score to rank configurations and checkpoints by.
        endpoint: The Serve route answering this task (``None``: not servable).
        regions: Mask regions whose metrics are reported per region (``dice_WT``).
    """

    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()
    primary: ClassVar[str] = ""
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    shown: ClassVar[tuple[str, ...]] = ()
    key_metrics: ClassVar[tuple[str, ...]] = ()
    target: ClassVar[str] = "label"
    stratify: ClassVar[str] = "label"
    dedupe: ClassVar[bool] = True
    rankable: ClassVar[bool] = True
    endpoint: ClassVar[str | None] = None
    regions: ClassVar[tuple[str, ...]] = ()

    # -- metrics and direction ------------------------------------------------------------------
    def has_metric(self, metric: str) -> bool:
        """A metric of the panel, or a per-region variant of one (``dice_WT``)."""
        base, _, region = metric.partition("_")
        return metric in self.metrics or (base in self.metrics and region in self.regions)

    def leaderboard_metrics(self, columns: Any) -> list[str]:
        """Secondary metrics the console leaderboard shows: region metrics first where the table has them."""
        regional = [f"{m}_{r}" for m in self.metrics[:1] for r in self.regions if f"{m}_{r}_mean" in columns]
        return regional + [m for m in self.key_metrics if f"{m}_mean" in columns]

    def check_metric(self, metric: str | None) -> str:
        """``metric`` (default: the primary), refused when the task does not have it."""
        metric = metric or self.primary
        if not self.has_metric(metric):
            raise TaskError(f"task {self.name!r} has no metric {metric!r} (choose from {list(self.metrics)})")
        return metric

    def mode(self, metric: str | None = None) -> str:
        """``max`` or ``min``: the direction in which ``metric`` (default: the primary) improves."""
        return "min" if self.check_metric(metric).split("_")[0] in self.lower_is_better else "max"

    def better(self, a: float, b: float | None, metric: str | None = None) -> bool:
        """Whether ``a`` improves on ``b`` (NaN never improves; anything beats None or NaN)."""
        if a is None or math.isnan(a):
            return False
        if b is None or math.isnan(b):
            return True
        return a > b if self.mode(metric) == "max" else a < b

    def sort_key(self, value: float, metric: str | None = None) -> tuple[int, float]:
        """A key that sorts best first in ascending order; NaN after everything (after inf too)."""
        if value is None or math.isnan(value):
            return (1, 0.0)
        return (0, -value if self.mode(metric) == "max" else value)

    # -- data -----------------------------------------------------------------------------------
    def usable(self, frame: Any) -> Any:
        """The catalog rows this task can learn from (rows with the target)."""
        return frame[frame[self.target].notna()]

    def check_catalog(self, frame: Any, root: str) -> None:
        """Refuse a catalog with nothing to learn, naming the dataset and its layout."""
        if not frame[self.target].notna().any():
            what = (
                ("class labels", " (use a class-folder, LIDC or labelled DICOM dataset)")
                if self.target == "label"
                else ("masks", "")
            )
            raise TaskError(
                f"{root}: layout {frame.attrs.get('layout')!r} has no {what[0]}, so it cannot train "
                f"a {self.name} model{what[1]}"
            )

    def class_names(self, frame: Any) -> list[str] | None:
        """Sorted class names for tasks that learn labels, else None."""
        labels = frame[self.target].dropna() if self.target == "label" else []
        return sorted(labels.unique()) if len(labels) else None

    @property
    def with_mask(self) -> bool:
        """Whether cases carry a mask through the transforms (the target is a mask)."""
        return self.target == "mask"

    def owns(self, model_task: str) -> bool:
        """Whether a model registered for ``model_task`` can train for this task."""
        return model_task == self.name

    # -- training hooks (torch is imported by the callers' modules, not here) -------------------
    def check_config(self, config: Any, data_dims: int) -> None:
        """Task-specific refusals of a training config, before any worker starts."""
        if config.freeze_backbone_epochs:
            raise TaskError(f"freeze_backbone_epochs applies to pretrained classifiers, not {self.name} training")

    def model_sizes(self, config: Any, in_channels: int, out_channels: int) -> dict[str, int]:
        """Input/output sizes under every name the registered models use for them."""
        return {
            "in_chans": in_channels,
            "num_classes": out_channels,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "spatial_dims": config.spatial_dims,
        }

    def init_model(self, model: Any, config: Any, out_channels: int) -> None:
        """Adjust a freshly built model (e.g. the output bias); nothing by default."""

    def param_groups(self, model: Any, config: Any) -> list[dict[str, Any]]:
        """Optimizer parameter groups: every trainable parameter at the config's learning rate."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr}]

    def worker_loop(self):
        """A training loop of the task's own (``fn(config, model, cases, device, manifest)``), or None."""
        return None

    def split_frame(self, frame: Any) -> Any:
        """The catalog with the column named by :attr:`stratify`."""
        return frame

    # -- out-of-fold results (predictions.csv / folds.csv) --------------------------------------
    def check_predictions(self, df: Any, source: str) -> Any:
        raise TaskError(f"task {self.name!r} has no out-of-fold predictions table")

    def is_binary(self, pred: Any) -> bool:
        """A two-class table scored by one ``y_score`` column."""
        return False

    def __repr__(self) -> str:
        return f"<task {self.name}>"


_REGISTRY: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    if not cls.name or cls.name != cls.name.lower():
        raise TaskError(f"task class {cls.__name__} needs a lowercase name")
    if cls.name in _REGISTRY:
        raise TaskError(f"task {cls.name!r} is registered twice")
    if cls.primary and cls.primary not in cls.metrics:
        raise TaskError(f"task {cls.name!r}: primary metric {cls.primary!r} is not in its metrics")
    _REGISTRY[cls.name] = cls()
    return cls


def get_task(task: str | Task) -> Task:
    """The registered task called ``task`` (a Task passes through); unknown names list the valid ones."""
    if isinstance(task, Task):
        return task
    try:
        return _REGISTRY[task]
    except (KeyError, TypeError):
        raise TaskError(f"unknown task {task!r} (choose from {list_tasks()})") from None


def list_tasks(*, servable: bool = False, rankable: bool = False) -> list[str]:
    """Registered task names, optionally only those Serve answers or that can rank configurations."""
    return sorted(n for n, t in _REGISTRY.items() if (t.endpoint or not servable) and (t.rankable or not rankable))
