"""Search spaces: Tune domains under dotted keys that override ``TrainConfig`` fields.

A study writes its space as a flat dict of Ray Tune domains (``tune.grid_search``,
``tune.choice``, ``tune.uniform``, ``tune.loguniform``, ``tune.randint``) and
constants, keyed by the setting they change::

    {"lr": tune.loguniform(1e-4, 1e-2), "augment": tune.choice(["none", "light"]),
     "preprocess.contrast": tune.grid_search(["none", "clahe"]), "model_kwargs.drop_rate": 0.1}

``augment`` takes a preset name (``AugmentConfig.preset``); ``preprocess.contrast``
also takes ``True``/``False`` for CLAHE on/off. The space is checked against the
searcher before any trial starts, and each trial turns its sample back into a
``TrainConfig`` with :func:`apply_params` (the one merge rule, ``training.config.merge_settings``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from tumorbench.errors import TumorbenchError
from tumorbench.training.config import NESTED_CONFIGS as NESTED
from tumorbench.training.config import TrainConfig, merge_settings

SEARCHERS = ("grid", "random", "bayes", "bayes-gp")
# Top-level settings a trial may change; data, task, folds, output and cluster layout stay the study's.
SEARCHABLE = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "backbone_lr_mult",
    "freeze_backbone_epochs",
    "warmup_epochs",
    "grad_clip",
    "patience",
    "seed",
    "pretrained",
    "synthetic_fraction",
    "gan_checkpoint",
    "foreground_prior",
)
# Model keywords the data sizes (or a top-level setting) decide.
SIZED_KWARGS = ("in_chans", "num_classes", "in_channels", "out_channels", "spatial_dims", "pretrained")
_CATEGORICAL = ("grid_search", "choice")
_PRIMITIVE = (type(None), bool, int, float, str)


class SearchSpaceError(TumorbenchError, ValueError):
    """A search space that cannot run (unknown key, bad value, wrong domain for the searcher)."""


def valid_keys(base: TrainConfig | None = None) -> list[str]:
    """Every key a space may use (``model_kwargs.*`` named from the model when ``base`` is given)."""
    keys = list(SEARCHABLE) + ["augment"]
    keys += [f"{head}.{f.name}" for head, kind in NESTED.items() for f in dataclasses.fields(kind)]
    if base is None:
        return keys + ["model_kwargs.<keyword>"]
    from tumorbench.models import model_info

    accepted = [k for k in model_info(base.model).default_kwargs if k not in SIZED_KWARGS]
    return keys + [f"model_kwargs.{k}" for k in accepted]


def _unknown_key(key: str, base: TrainConfig | None) -> SearchSpaceError:
    return SearchSpaceError(f"unknown search key {key!r}; valid keys: {', '.join(valid_keys(base))}")


def apply_params(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """``base`` with the dotted ``params`` of one trial merged in (:func:`merge_settings`), validated again.

    Raises:
        SearchSpaceError: An unknown key, or a value the config refuses.
    """
    for key in params:
        head, _, tail = key.partition(".")
        searchable = (
            key == "augment"
            or (not tail and key in SEARCHABLE)
            or (head == "model_kwargs" and tail)
            or (head in NESTED and tail in {f.name for f in dataclasses.fields(NESTED[head])})
        )
        if not searchable:
            raise _unknown_key(key, None)
    try:
        return TrainConfig.from_dict(merge_settings(base.to_dict(), params))
    except (TypeError, ValueError) as exc:
        raise SearchSpaceError(f"search parameters {params}: {exc}") from exc


def domain_kind(value: Any) -> str:
    """The Tune function that made ``value`` (``constant`` for a plain value)."""
    from ray.tune.search.sample import Categorical, Float, Function, Integer, LogUniform, Normal, Quantized

    if isinstance(value, dict) and set(value) == {"grid_search"}:
        return "grid_search"
    if isinstance(value, Categorical):
        return "choice"
    if isinstance(value, (Float, Integer)):
        sampler = value.get_sampler()
        prefix = "q" if isinstance(sampler, Quantized) else ""
        inner = sampler.sampler if isinstance(sampler, Quantized) else sampler
        if isinstance(inner, Normal):
            return f"{prefix}randn"
        log = "log" if isinstance(inner, LogUniform) else ""
        return f"{prefix}{log}uniform" if isinstance(value, Float) else f"{prefix}{log}randint"
    if isinstance(value, Function):
        return "sample_from"
    return "constant"


def _values(value: Any, kind: str) -> list[Any]:
    """Values that represent a domain when checking it against the config: all of them, or its bounds."""
    if kind == "grid_search":
        return list(value["grid_search"])
    if kind == "choice":
        return list(value.categories)
    if kind.endswith("uniform"):
        return [value.lower, value.upper]
    if kind.endswith("randint"):
        return [value.lower, value.upper - 1]
    return [] if kind in ("sample_from", "randn", "qrandn") else [value]


def _check_kind(key: str, kind: str, searcher: str) -> None:
    if searcher == "grid" and kind not in (*_CATEGORICAL, "constant"):
        raise SearchSpaceError(f"grid search needs grid_search/choice values, got {kind} for {key}")
    if searcher.startswith("bayes"):
        if kind == "grid_search":
            raise SearchSpaceError(
                f"Bayesian search (Optuna) cannot take grid_search values, got grid_search for {key}: use tune.choice"
            )
        if kind in ("sample_from", "randn", "qrandn"):
            raise SearchSpaceError(f"Bayesian search (Optuna) cannot take {kind} values, got {kind} for {key}")


def check_domains(space: dict[str, Any], searcher: str) -> dict[str, str]:
    """Each key's domain kind, refusing those ``searcher`` cannot take (see :func:`validate_space`)."""
    if searcher not in SEARCHERS:
        raise SearchSpaceError(f"unknown searcher {searcher!r}; choose from {', '.join(SEARCHERS)}")
    kinds = {key: domain_kind(value) for key, value in space.items()}
    for key, kind in kinds.items():
        _check_kind(key, kind, searcher)
    return kinds


def validate_space(space: dict[str, Any], searcher: str, base: TrainConfig) -> None:
    """Refuse, before any trial starts, a space the searcher or the config cannot take.

    Checks the searcher name, every key (listing the valid ones), every domain
    against the searcher, and every categorical value and range bound against
    ``base`` (the other keys at their first value).

    Raises:
        SearchSpaceError: The first problem found, naming the key.
    """
    if not isinstance(space, dict):
        raise SearchSpaceError(f"a search space is a dict of dotted keys, got {type(space).__name__}")
    keys = valid_keys(base if any(k.startswith("model_kwargs.") for k in space) else None)
    for key in space:
        if key not in keys:
            raise _unknown_key(key, base)
    kinds = check_domains(space, searcher)
    values = {key: _values(value, kinds[key]) for key, value in space.items()}
    first = {key: vals[0] for key, vals in values.items() if vals}
    for key, vals in values.items():
        for value in vals:
            apply_params(base, first | {key: value})


def grid_size(space: dict[str, Any]) -> int:
    """Configurations a grid search runs (every grid_search/choice combined)."""
    kinds = {key: domain_kind(value) for key, value in space.items()}
    return math.prod(len(_values(space[k], kind)) for k, kind in kinds.items() if kind in _CATEGORICAL)


def _label(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError:
        return repr(value)


def searcher_space(space: dict[str, Any], searcher: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The Tune ``param_space`` for ``searcher`` and the table that decodes its labelled values.

    Grid search enumerates every ``choice`` (Tune would sample it); random search
    samples every ``grid_search`` (Tune would repeat the grid ``num_samples``
    times). Categorical values that are not plain scalars (channel tuples, dicts)
    travel as JSON labels, which Optuna needs and which keep trial names readable.
    """
    from ray import tune

    tune_space: dict[str, Any] = {}
    table: dict[str, dict[str, Any]] = {}
    for key, value in space.items():
        kind = domain_kind(value)
        if kind not in _CATEGORICAL:
            tune_space[key] = value
            continue
        options = _values(value, kind)
        if not all(isinstance(option, _PRIMITIVE) for option in options):
            labels = [_label(option) for option in options]
            if len(set(labels)) != len(labels):
                raise SearchSpaceError(f"values of {key} are not distinguishable: {options}")
            table[key] = dict(zip(labels, options))
            options = labels
        tune_space[key] = tune.grid_search(options) if searcher == "grid" else tune.choice(options)
    return tune_space, table


def decode_params(params: dict[str, Any], table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A trial's sampled params with labelled categorical values turned back into their values."""
    return {key: table[key][value] if key in table else value for key, value in params.items()}
