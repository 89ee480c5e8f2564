"""A timm-style registry: every model is built by name from keyword arguments.

Factories register themselves with :func:`register_model`; callers only use
:func:`create_model`, :func:`list_models` and :func:`model_info`, so experiment
configs can name a model as a plain string.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import nn

from tumorbench.errors import TumorbenchError
from tumorbench.models.onednn import use_onednn_conv3d
from tumorbench.tasks import TaskError, get_task

Factory = Callable[..., nn.Module]


class UnknownModelError(TumorbenchError, KeyError):
    """A model name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:
        # KeyError would otherwise print the message quoted, as a repr.
        return str(self.args[0]) if self.args else ""


class ModelConfigError(TumorbenchError, ValueError):
    """Keyword arguments a model factory cannot accept or that make no valid model."""


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one model.

    Attributes:
        name: Registered (lowercase) name.
        task: What the model is for.
        description: One line for listings.
        spatial_dims: Spatial dimensionalities the model can be built for.
        default_kwargs: Every keyword the factory accepts, with its default.
        cam_layer: Dotted module name (``named_modules``) whose activations Grad-CAM weighs, chosen
            where the model is registered; None when the model has no sensible one (GANs).
    """

    name: str
    task: str
    description: str
    spatial_dims: tuple[int, ...]
    default_kwargs: Mapping[str, Any]
    cam_layer: str | None = None

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.lower():
            raise ModelConfigError(f"model name {self.name!r} must be non-empty and lowercase")
        try:
            get_task(self.task)
        except TaskError as exc:
            raise ModelConfigError(f"model {self.name!r}: {exc}") from None
        if not self.spatial_dims or any(d not in (1, 2, 3) for d in self.spatial_dims):
            raise ModelConfigError(f"model {self.name!r}: spatial_dims {self.spatial_dims!r} must be from (1, 2, 3)")


_REGISTRY: dict[str, tuple[ModelInfo, Factory]] = {}


def _factory_defaults(name: str, factory: Factory) -> Mapping[str, Any]:
    defaults: dict[str, Any] = {}
    for param in inspect.signature(factory).parameters.values():
        if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            # A catch-all would hide misspelt kwargs, which create_model promises to reject.
            raise ModelConfigError(f"factory of model {name!r} must list its keyword arguments explicitly")
        if param.default is param.empty:
            raise ModelConfigError(f"factory of model {name!r}: argument {param.name!r} needs a default")
        defaults[param.name] = param.default
    return MappingProxyType(defaults)


def register_model(
    name: str,
    *,
    task: str,
    description: str,
    spatial_dims: tuple[int, ...] = (2,),
    cam_layer: str | None = None,
) -> Callable[[Factory], Factory]:
    """Register a factory ``fn(**kwargs) -> nn.Module`` under ``name``.

    Args:
        name: Lowercase model name, unique in the registry.
        task: ``classification``, ``segmentation`` or ``gan``.
        description: One line shown in listings.
        spatial_dims: Spatial dimensionalities the factory supports.
        cam_layer: Grad-CAM target layer (a ``named_modules`` name valid at every supported size).

    Returns:
        A decorator that registers the factory and returns it unchanged.
    """

    def decorator(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ModelConfigError(f"model {name!r} is registered twice")
        info = ModelInfo(name, task, description, tuple(spatial_dims), _factory_defaults(name, factory), cam_layer)
        _REGISTRY[name] = (info, factory)
        return factory

    return decorator


def _lookup(name: str) -> tuple[ModelInfo, Factory]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; valid names: {', '.join(sorted(_REGISTRY))}") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``.

    Args:
        name: A name from :func:`list_models`.
        **kwargs: Keyword arguments of that model's factory (see ``model_info(name).default_kwargs``).

    Returns:
        The freshly built module.

    Raises:
        UnknownModelError: ``name`` is not registered.
        ModelConfigError: A keyword the factory does not accept, or an unsupported ``spatial_dims``.
    """
    info, factory = _lookup(name)
    unknown = sorted(set(kwargs) - set(info.default_kwargs))
    if unknown:
        raise ModelConfigError(
            f"model {name!r} does not accept {', '.join(unknown)}; accepted keywords: {', '.join(info.default_kwargs)}"
        )
    dims = kwargs.get("spatial_dims")
    if dims is not None and dims not in info.spatial_dims:
        raise ModelConfigError(f"model {name!r} supports spatial_dims {info.spatial_dims}, not {dims!r}")
    return use_onednn_conv3d(factory(**kwargs))  # one volume on CPU: oneDNN, not PyTorch's slow 3D kernel


def list_models(task: str | None = None) -> list[str]:
    """Sorted registered names, optionally only those for ``task``."""
    if task is None:
        return sorted(_REGISTRY)
    try:
        wanted = get_task(task)
    except TaskError as exc:
        raise ModelConfigError(str(exc)) from None
    return sorted(n for n, (info, _) in _REGISTRY.items() if wanted.owns(info.task))


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model (raises :class:`UnknownModelError`)."""
    return _lookup(name)[0]
