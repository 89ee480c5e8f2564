"""The training configuration: one frozen dataclass, validated once, sent to workers as a plain dict.

Settings come in layers (study -> candidate -> search values, or CLI flags -> ``--option``), and every
layer is merged into the one below by :func:`merge_settings`, the one merge rule of tumorbench.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tumorbench.errors import TumorbenchError
from tumorbench.tasks import TaskError, get_task
from tumorbench.transforms import AugmentConfig, PreprocessConfig, SamplingConfig

AMP_MODES = ("auto", "bf16", "fp16", "off")


class TrainConfigError(TumorbenchError, ValueError):
    """A training configuration that cannot run."""


NESTED_CONFIGS = {"preprocess": PreprocessConfig, "augment": AugmentConfig, "sampling": SamplingConfig}
AUGMENT_PRESETS = ("none", "light", "medium", "strong")


def deep_merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; dicts (and config dataclasses) merge key by key, any other value (lists too) replaces."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            value = _plain(value)
            if isinstance(value, Mapping):
                below = merged.get(key)
                merged[key] = deep_merge(below if isinstance(below, Mapping) else {}, value)
            else:
                merged[key] = value
    return merged


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


def _layer(values: Mapping[str, Any], spatial_dims: int) -> dict[str, Any]:
    """One layer as nested dicts: an augmentation preset name becomes its fields, then dotted keys merge onto it."""
    whole = {key: value for key, value in values.items() if "." not in key}
    preset = whole.get("augment")
    if isinstance(preset, str):
        if preset not in AUGMENT_PRESETS:
            raise TrainConfigError(
                f"augment must be a preset name {AUGMENT_PRESETS} or a dict of AugmentConfig fields, got {preset!r}"
            )
        whole["augment"] = AugmentConfig.preset(preset, spatial_dims=spatial_dims)
    dotted = []
    for key, value in values.items():
        if "." in key:
            for part in reversed(key.split(".")):
                value = {part: value}
            dotted.append(value)
    merged = deep_merge(whole, *dotted)
    contrast = merged.get("preprocess", {}).get("contrast") if isinstance(merged.get("preprocess"), Mapping) else None
    if isinstance(contrast, bool):  # CLAHE on/off (a search over True/False reads well)
        merged["preprocess"]["contrast"] = "clahe" if contrast else "none"
    return merged


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Training settings of several layers, later layers winning: THE merge rule of every config in tumorbench.

    Each layer may use dotted keys (``{"preprocess.contrast": "clahe"}``) and nested dicts
    (``{"preprocess": {"contrast": "clahe"}}``) alike; nested settings merge key by key, so a
    candidate setting ``preprocess.contrast`` keeps the study's ``preprocess.spatial_size``.
    ``augment`` may be a preset name (for the final ``spatial_dims``), which a later key such as
    ``augment.prob`` then changes; ``preprocess.contrast`` may be ``True``/``False`` (CLAHE on/off).
    """
    dims = next((layer["spatial_dims"] for layer in reversed(layers) if "spatial_dims" in layer), 2)
    return deep_merge(*(_layer(layer, dims) for layer in layers))


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs.

    Args:
        task: A registered task (``tumorbench.tasks.list_tasks()``): ``classification``, ``segmentation``, ``gan``.
        model: Registered model name (``tumorbench.models.list_models()``).
        data: Dataset root.
        out: Run folder on this node (TensorBoard events, history, split file; checkpoints unless ``storage``).
        storage: Where Ray Train keeps the run's checkpoints (``<storage>/train``): a path every node
            can reach or an ``s3://``/``gs://`` URI (``tumorbench.storage``); default ``out``.
        layout: Catalog layout, or ``auto``.
        model_kwargs: Extra model keywords (channels, widths); input/output sizes are set from the data.
        fold: Validation fold of the split file.
        n_folds: Folds when the split file is made by this run.
        split_file: An existing split file (default: ``<out>/splits.json``, made on first use).
        dedupe: Drop byte-identical images before splitting (when the split is made here).
        max_cases: Split about this many cases (when the split is made here): whole patients drawn at random,
            classes in proportion; the rest stay out of every fold (a planned study of a set too large for its
            budget). None: every case.
        test_data: A locked test set (a dataset root of the same layout): train on every case of the split file
            (the inner split still chooses the epoch) and score these cases once, as the outer set.
        inner_val_fraction: Share of the fold's training patients held out as the inner validation set that
            picks the epoch, drives ``patience`` and ASHA and ranks configurations; the fold itself is then
            scored once, by the chosen model (``training/nested.py``). 0 validates on the fold itself
            (selection on the reported cases: optimistic, for quick looks only).
        epochs: Epochs to train.
        batch_size: Per-worker batch size.
        lr: Peak learning rate (head learning rate for transfer learning).
        weight_decay: AdamW weight decay.
        backbone_lr_mult: Backbone learning rate = ``lr * backbone_lr_mult`` (pretrained classifiers).
        freeze_backbone_epochs: Train only the head for this many epochs first.
        warmup_epochs: Linear warm-up before the cosine decay.
        grad_clip: Gradient-norm clip (0 disables).
        amp: Mixed precision on CUDA: ``auto`` (bf16 where supported, else fp16), ``bf16``, ``fp16``, ``off``.
        patience: Stop after this many epochs without improvement (0 disables).
        seed: Seed for model init, data order and augmentation (per worker: ``seed + rank``).
        workers: Ray Train workers.
        use_gpu: Use one GPU per worker; ``None`` decides from the cluster.
        pretrained: Start from ImageNet weights (classifiers).
        preprocess: Deterministic preprocessing (also stored in ``model.json`` for serving).
        augment: Training augmentation.
        sampling: How training samples are drawn from volumes.
        spatial_dims: Dimensionality the model works in (3D data may train 2D models on slices).
        cache: Dataset caching: ``none``, ``memory`` or ``disk``.
        cache_dir: Folder of the disk cache (default ``<out>/cache``); a study points every trial
            and fold at one folder, so each case is preprocessed once per preprocessing config.
            With ``cache: memory`` it backs the memory cache (filled from it, not decoded again).
        positive_class: Class name scored as positive for binary metrics (default: the last class).
        gan_checkpoint: A trained conditional GAN whose samples augment classifier training.
        synthetic_fraction: Generated images added per real training image (GAN-augmented classifier).
        keep_checkpoints: Best checkpoints kept (by the validation metric); the latest is always kept.
        max_failures: Worker-group restarts from the last checkpoint before the run fails.
        roi_size: Sliding-window size for 3D validation (default: the sampling patch size).
        foreground_prior: Segmentation output bias starts at this foreground probability (``None``: default init).
        metric: Validation metric that picks the best epoch, ranks kept checkpoints and drives ``patience``
            (default: the task's primary metric), in the task's direction (HD95: lowest).
    """

    task: str
    model: str
    data: str
    out: str
    layout: str = "auto"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    fold: int = 0
    n_folds: int = 5
    split_file: str | None = None
    dedupe: bool = True
    max_cases: int | None = None
    inner_val_fraction: float = 0.2
    test_data: str | None = None
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    backbone_lr_mult: float = 0.1
    freeze_backbone_epochs: int = 0
    warmup_epochs: int = 1
    grad_clip: float = 1.0
    amp: str = "auto"
    patience: int = 0
    seed: int = 0
    workers: int = 1
    use_gpu: bool | None = None
    pretrained: bool = False
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    spatial_dims: int = 2
    cache: str = "memory"
    cache_dir: str | None = None
    positive_class: str | None = None
    gan_checkpoint: str | None = None
    synthetic_fraction: float = 0.0
    keep_checkpoints: int = 2
    max_failures: int = 1
    roi_size: tuple[int, ...] | None = None
    foreground_prior: float | None = 0.02
    metric: str | None = None
    storage: str | None = None

    def __post_init__(self) -> None:
        try:
            get_task(self.task).check_metric(self.metric)
        except TaskError as exc:
            raise TrainConfigError(str(exc)) from None
        checks = [
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}"),
            (self.cache in ("none", "memory", "disk"), f"cache must be none, memory or disk, got {self.cache!r}"),
            (self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be at least 1"),
            (self.workers >= 1, f"workers must be at least 1, got {self.workers}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.n_folds >= 2 and 0 <= self.fold < self.n_folds, f"fold {self.fold} not in 0..{self.n_folds - 1}"),
            (self.spatial_dims in (2, 3), f"spatial_dims must be 2 or 3, got {self.spatial_dims}"),
            (0.0 <= self.synthetic_fraction <= 4.0, "synthetic_fraction must be within [0, 4]"),
            (self.synthetic_fraction == 0 or self.gan_checkpoint, "synthetic_fraction needs gan_checkpoint"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be at least 1"),
            (0.0 <= self.inner_val_fraction < 1.0, "inner_val_fraction must be within [0, 1)"),
            (self.max_cases is None or self.max_cases >= 2 * self.n_folds, "max_cases must be at least 2 x n_folds"),
            (self.foreground_prior is None or 0 < self.foreground_prior < 1, "foreground_prior must be in (0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainConfigError(message)
        if self.roi_size is not None:
            object.__setattr__(self, "roi_size", tuple(self.roi_size))
        # Workers run in another working directory: every path they read must be absolute.
        for name in ("data", "out", "split_file", "gan_checkpoint", "cache_dir", "test_data"):
            value = getattr(self, name)
            if value:
                object.__setattr__(self, name, os.path.abspath(os.path.expanduser(value)))
        if self.storage:
            from tumorbench.storage import normalize

            object.__setattr__(self, "storage", normalize(self.storage))

    @property
    def selection_metric(self) -> str:
        """The validation metric that selects epochs and checkpoints (``metric`` or the task's primary)."""
        return get_task(self.task).check_metric(self.metric)

    @property
    def selection_mode(self) -> str:
        """``max`` or ``min``: the direction of :attr:`selection_metric`."""
        return get_task(self.task).mode(self.metric)

    def check_data(self, data_dims: int) -> None:
        """Refuse a config its task cannot train on ``data_dims``-D images (the model's own limits:
        ``training.tasks.check_model_for_task``)."""
        if self.spatial_dims > data_dims:
            raise TrainConfigError(f"a {self.spatial_dims}D model cannot train on {data_dims}D images")
        try:
            get_task(self.task).check_config(self, data_dims)
        except TaskError as exc:
            raise TrainConfigError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-friendly dict (what Ray sends to each worker)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """A config from plain settings: :meth:`to_dict` output, or any layer :func:`merge_settings` takes.

        Raises:
            TrainConfigError: An unknown setting (nested ones included), or a value a config refuses.
        """
        values = merge_settings(values)
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        for key, kind in NESTED_CONFIGS.items():
            if isinstance(values.get(key), Mapping):
                names = {f.name for f in dataclasses.fields(kind)}
                unknown += sorted(f"{key}.{name}" for name in set(values[key]) - names)
                if not unknown:
                    try:
                        values[key] = kind(**values[key])
                    except ValueError as exc:
                        raise TrainConfigError(f"{key}: {exc}") from exc
        if unknown:
            raise TrainConfigError(f"unknown training settings {unknown}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
