"""A plan applied to its study: its numbers set, cut grids turned into random samples, dropped candidates removed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tumorbench.study.spec import Candidate, Study


def foreground_ct_window(study: Study, fp: dict[str, Any]) -> tuple[float, float] | None:
    """nnU-Net's CT normalization for a segmentation study of CT in HU that sets no window of its own.

    The default window (level -600, width 1500) is a lung window: liver, kidney or pancreas tumours
    (40-150 HU) end up in its top few per cent. nnU-Net clips CT to the 0.5-99.5 percentiles of the
    intensities under the masks (the fingerprint's) and scales: here the window spans them.
    Returns ``(level, width)``, or None (other studies, several channels, no masks).
    """
    pre = study.config.get("preprocess") or {}
    if study.task != "segmentation" or pre.get("normalize") != "ct_window" or "ct_window" in pre:
        return None
    if not fp.get("foreground") or fp.get("channels") != 1 or not fp.get("intensity"):
        return None
    low, high = float(fp["intensity"][0]["p00_5"]), float(fp["intensity"][0]["p99_5"])
    return ((low + high) / 2, high - low) if high - low >= 1 else None


def count_trials(candidate: Candidate) -> int:
    """The trials a candidate's search runs as written (a grid: every combination)."""
    if candidate.searcher == "grid":
        from tumorbench.tuning.space import grid_size

        return grid_size(candidate.space)
    return candidate.num_samples


def apply_plan(study: Study, plan: Any, cache_dir: str | None = None) -> Study:
    """The study with a :class:`~tumorbench.study.planner.Plan`'s numbers (grids cut to random samples,
    dropped candidates removed)."""
    config = dict(study.config) | {"epochs": plan.epochs, "batch_size": plan.batch_size, "cache": plan.cache}
    if plan.spatial_dims == 3:
        patch = [plan.size] * 3
        config["sampling"] = dict(config.get("sampling") or {}) | {"patch_size": patch}
        config["roi_size"] = patch
    else:
        config["preprocess"] = dict(config.get("preprocess") or {}) | {"spatial_size": [plan.size, plan.size]}
    if plan.ct_window is not None:
        config["preprocess"] = dict(config.get("preprocess") or {}) | {"ct_window": list(plan.ct_window)}
    if plan.max_cases is not None:  # a set too large for the budget: a sample of whole patients
        config["max_cases"] = plan.max_cases
    if plan.shared_cache and cache_dir:  # memory caches fill from it: one decode per case per study
        config["cache_dir"] = cache_dir
    by_name = {s.name: s for s in plan.searches}
    candidates = []
    for c in study.candidates:
        if c.name not in by_name:
            continue
        planned = by_name[c.name].trials
        if c.searcher == "grid" and planned < count_trials(c):
            c = replace(c, space=_grid_as_choice(c.space), searcher="random", num_samples=planned)
        elif c.searcher != "grid":  # a search the budget may extend at run time runs up to its maximum
            c = replace(c, num_samples=by_name[c.name].up_to)
        candidates.append(c)
    return replace(
        study,
        n_folds=plan.folds,
        config=config,
        candidates=tuple(candidates),
        baseline_params=_capped_baselines(study, plan.baseline_cases),
        explain_cases=study.explain_cases if plan.explain_cases is None else plan.explain_cases,
    )


def _capped_baselines(study: Study, cap: int | None) -> dict[str, dict[str, Any]]:
    """The study's baseline parameters with the plan's cap on a classifier baseline's training cases (a cap of the
    study's own, if lower, kept); segmentation baselines keep theirs."""
    from tumorbench.baselines import CLASSIFIERS

    params = {name: dict(p) for name, p in study.baseline_params.items()}
    if cap is None:
        return params
    for name in set(study.baselines) & set(CLASSIFIERS):
        own = params.setdefault(name, {}).get("max_train_cases")
        params[name]["max_train_cases"] = cap if own is None else min(int(own), cap)
    return params


def _grid_as_choice(space: dict[str, Any]) -> dict[str, Any]:
    """A cut grid as random choices; a transfer-vs-scratch axis keeps transfer (:func:`keeps_transfer`)."""
    from ray import tune

    grids = {k: v["grid_search"] for k, v in space.items() if isinstance(v, dict) and set(v) == {"grid_search"}}
    if keeps_transfer(space):
        grids.pop("pretrained")
        space = {**space, "pretrained": True}
    return {k: tune.choice(grids[k]) if k in grids else v for k, v in space.items()}


def keeps_transfer(space: dict[str, Any]) -> bool:
    """Whether a grid crosses ImageNet transfer with training from scratch: cut, it keeps transfer.

    From scratch, a backbone needs far more epochs than a cut plan has (EfficientNet-Lite0 from scratch
    stayed at chance, inner AUC 0.56, in a 2-epoch plan of 5,700 images where ResNet-18 reached 0.99).
    """
    grid = space.get("pretrained")
    return isinstance(grid, dict) and set(grid) == {"grid_search"} and True in grid["grid_search"]
