"""Study planner: dataset fingerprint + resources + a time budget -> the numbers a study runs with.

The plan sets input (2D) or patch (3D) size, batch size, epochs, folds, trials per
search, cache mode and trials side by side, and estimates the study's minutes with
a time model calibrated on this machine (:mod:`tumorbench.study.timemodel`: its constants and how they
were measured). Too little budget for one fold of the smallest model is refused before
anything starts, with the minimum it would need; a user's budget with time to spare is filled
with trials (:mod:`tumorbench.study.scaling`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from tumorbench.baselines import CLASSIFIERS
from tumorbench.errors import TumorbenchError
from tumorbench.study.capacity import (
    Capacity,
    cache_bytes,
    choose_cache,
    free_disk_bytes,
    start_size,
    study_size,
    usable_cases,
    volume_edge,
    volume_shape,
)
from tumorbench.study.plan_apply import count_trials, foreground_ct_window
from tumorbench.study.probe import machine_factor
from tumorbench.study.scaling import MIN_FOLDS, Knobs, changes, fill_trials, give_back_epochs, reductions
from tumorbench.study.spec import Study
from tumorbench.study.timemodel import (
    CPU_PARALLEL_EFFICIENCY,
    DISK_CHAINS,
    GPU_SPEEDUP,
    RAY_BACKGROUND_CORES,
    RAY_START_S,
    SEG_VAL_MS_PER_CASE,
    SHARED_CACHES,
    TRIAL_STARTUP_S,
    Factors,
    baseline_seconds,
    decode_ms,
    explain_seconds,
    final_seconds,
    fold_seconds,
    model_ms,
    stats_seconds,
)
from tumorbench.tasks import get_task
from tumorbench.tuning.schedulers import asha_expected_share, asha_grace_epochs

DEFAULT_CAPS_MIN = {"smoke": 15.0, "default": 55.0, "full": None}  # without --budget


class BudgetError(TumorbenchError, ValueError):
    """The budget cannot hold even the smallest study (said before anything starts)."""


@dataclass(frozen=True)
class SearchPlan:
    """One candidate's search as planned."""

    name: str
    model: str
    searcher: str
    trials: int
    seconds: float
    fold_seconds: float
    share: float = 1.0  # of a trial's folds each trial is expected to train (ASHA's early stops)
    max_trials: int | None = None  # run while the search's share of the budget lasts, up to this (``fill``)

    @property
    def up_to(self) -> int:
        """The most trials the search may run: ``max_trials`` where the budget may extend it, else ``trials``."""
        return max(self.trials, self.max_trials or 0)


@dataclass(frozen=True)
class Plan:
    """The numbers a study runs with, its estimate, and what was scaled down (``notes``)."""

    size: int
    batch_size: int
    epochs: int
    folds: int
    cache: str
    side_by_side: int
    searches: tuple[SearchPlan, ...]
    baseline_seconds: float
    estimate_seconds: float
    budget_seconds: float | None
    spatial_dims: int
    notes: tuple[str, ...] = ()
    resources: dict[str, Any] = field(default_factory=dict)
    shared_cache: bool = False  # cases decoded once per study into a disk cache every trial and fold reads
    explain_seconds: float = 0.0  # explanations after the searches (timemodel.explain_seconds)
    test_seconds: float = 0.0  # a locked test set: final models retrained and baselines refitted, scored once
    test_cases: int = 0
    ct_window: tuple[float, float] | None = None  # (level, width) from the masks' HU (plan_apply.foreground_ct_window)
    baseline_cases: int | None = None  # training cases each classifier baseline fits on per fold (None: all)
    stats_seconds: float = 0.0  # the leaderboard's and paired comparisons' bootstraps (timemodel.stats_seconds)
    max_cases: int | None = None  # cases the study splits and uses (None: all; a sample of whole patients)
    explain_cases: int | None = None  # explained cases per fold and model (None: the study's)
    probe: dict[str, Any] = field(default_factory=dict)  # each model's timings here (study.probe), in plan.json

    def format(self) -> str:
        """The plan as printed before a study starts."""
        kind = "patch" if self.spatial_dims == 3 else "input"
        size = "x".join([str(self.size)] * self.spatial_dims)
        r = self.resources
        budget = f"budget {self.budget_seconds / 60:.0f} min" if self.budget_seconds else "no budget"
        lines = [
            f"plan ({r.get('source')}: {r.get('cpus', 0):g} CPUs, {r.get('gpus', 0):g} GPUs, "
            f"{r.get('memory', 0) / 2**30:.1f} GiB available; {budget})",
            f"  {kind} size {size}, batch {self.batch_size}, {self.epochs} epochs, {self.folds} folds, "
            f"cache {self.cache}, {self.side_by_side} trial(s) side by side",
        ]
        for s in self.searches:
            lines.append(
                f"  {s.name:<24} {s.model:<22} {s.searcher:<6} {s.trials:>2} trial(s), "
                f"~{s.fold_seconds:.0f} s per fold, ~{s.seconds / 60:.1f} min"
                + (f"; up to {s.up_to} trials while its share lasts" if s.up_to > s.trials else "")
            )
        lines.append(
            f"  baselines ~{self.baseline_seconds / 60:.1f} min; explanations ~{self.explain_seconds / 60:.1f} min; "
            f"statistics ~{self.stats_seconds / 60:.1f} min; Ray start-up ~{RAY_START_S / 60:.1f} min"
        )
        if self.test_cases:
            tested = f"~{self.test_seconds / 60:.1f} min"
            lines.append(f"  locked test set: {self.test_cases} cases; final models and baselines {tested}")
        lines.append(f"  estimate {self.estimate_seconds / 60:.1f} min")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def search_budget(self, name: str, remaining_s: float, remaining: list[str]) -> float:
        """Seconds the search ``name`` may take of ``remaining_s`` (its share among the searches still to run)."""
        planned = {s.name: s.seconds for s in self.searches}
        total = sum(planned.get(n, 0.0) for n in remaining) or 1.0
        # what runs after the searches
        after = self.baseline_seconds + self.explain_seconds + self.test_seconds + self.stats_seconds
        return max(0.0, remaining_s - after) * planned.get(name, 0.0) / total


def _estimate(
    k: Knobs,
    n: int,
    dims: int,
    cache: str,
    samples: int,
    speed: float,
    side: int,
    names: tuple[str, ...],
    cpus: float,
    decode: float,
) -> tuple[list[SearchPlan], float, float]:
    """The searches as planned, the baselines' seconds (``names`` on ``cpus``) and the study's total."""
    searches = []
    for c in k.candidates:
        model = c.config["model"]
        fold = fold_seconds(model, k, n, dims, cache, samples, speed, decode)
        trials = k.trials[c.name]
        share = asha_expected_share(trials, k.folds * k.epochs, asha_grace_epochs(k.epochs)) if k.asha else 1.0
        startup = TRIAL_STARTUP_S * k.machine
        seconds = trials * (startup + share * k.folds * fold)
        searcher = c.searcher if not (c.searcher == "grid" and trials < count_trials(c)) else "random"
        # a fold as the budget guard sees it: fold boundary to fold boundary, the run's start-up shared out
        searches.append(
            SearchPlan(c.name, model, searcher, trials, seconds / min(side, trials), fold + startup / k.folds, share)
        )
    baselines = baseline_seconds(names, n, k.folds, decode, cpus, k.machine, k.baseline_cases)
    first_fill = DISK_CHAINS * n * decode / 1000 / k.loaders if cache in SHARED_CACHES else 0.0  # once per chain
    return searches, baselines, RAY_START_S + first_fill + baselines + sum(s.seconds for s in searches)


def make_plan(
    study: Study,
    fp: dict[str, Any],
    capacity: Capacity,
    *,
    budget_minutes: float | None = None,
    preset: str = "default",
    disk_free: float | None = None,
    factors: Factors | None = None,
    test_cases: int = 0,
    fill: bool = False,
) -> Plan:
    """Size ``study`` to ``budget_minutes`` (default: the preset's cap) on ``capacity``; ``factors``: each
    model's step time measured here over the time model's constant (:func:`tumorbench.study.probe.probe_factors`);
    ``test_cases``: a locked test set's (its final models are planned too); ``fill``: the budget is the user's
    (``--budget``), a time to use and not only a cap: searches over a space take more trials while it holds them
    (:func:`tumorbench.study.scaling.fill_trials`), and may run more at run time while their share lasts.

    Raises:
        BudgetError: Not even one trial of the cheapest model at the smallest settings fits.
    """
    dims = int(study.config.get("spatial_dims", 2))
    cap = budget_minutes if budget_minutes is not None else DEFAULT_CAPS_MIN.get(preset)
    budget = None if cap is None else 60.0 * cap
    n = usable_cases(fp, study)
    samples = int((study.config.get("sampling") or {}).get("num_samples", 1)) if dims == 3 else 1
    workers = int(study.config.get("workers", 1))
    trials = {c.name: count_trials(c) for c in study.candidates}
    machine = machine_factor(factors)
    k = Knobs(
        size=study_size(study, dims),
        batch_size=int(study.config.get("batch_size", 16)),
        epochs=int(study.config.get("epochs", 10)),
        folds=study.n_folds,
        trials=dict(trials),
        candidates=sorted(study.candidates, key=lambda c: model_ms(c.config["model"], 128, dims, factors)[0]),
        inner=float(study.config.get("inner_val_fraction", 0.2)),
        asha=study.scheduler == "asha",
        val_ms=machine * SEG_VAL_MS_PER_CASE if get_task(study.task).with_mask else 0.0,
        factors=dict(factors or {}),
        workers=workers,
        machine=machine,
        explain_cases=study.explain_cases,
        volume=volume_shape(study, fp) if dims == 3 else None,
    )
    k.folds = min(k.folds, max(MIN_FOLDS, fp["patients"]))
    class_patients = fp.get("class_patients") or {}
    rare = min(class_patients, key=class_patients.get, default=None)
    fewest = class_patients[rare] if rare is not None else k.folds
    if fewest < MIN_FOLDS:
        raise TumorbenchError(
            f"class {rare!r} has {fewest} patient: cross-validation needs at least {MIN_FOLDS} patients of every "
            "class (one to train on, one to validate); add cases of that class or leave its folder out"
        )
    k.folds = min(k.folds, fewest)  # every validation fold holds every class (data.splits)
    k.size = start_size(study, fp)
    side = capacity.side_by_side(workers, max(trials.values()))
    decode = decode_ms(fp) * machine  # one case's read, decode and resize on this machine
    cores = capacity.cpus - RAY_BACKGROUND_CORES * machine  # fixed work per second: fewer cores on a faster CPU
    speed = GPU_SPEEDUP if capacity.gpus >= 1 else max(1.0, CPU_PARALLEL_EFFICIENCY * cores / side)
    # LGG --budget 15 (2 workers): 9.1 s per U-Net epoch measured, 9.2 s modelled with both workers loading
    k.loaders = 1.0 if capacity.gpus >= 1 else max(1.0, min(workers, capacity.cpus / side))
    free = disk_free if disk_free is not None else free_disk_bytes()
    cache, cache_note = choose_cache(fp, study, k.size, dims, side, capacity, free)

    def used() -> int:  # the cases the study splits: all, or the plan's sample
        return k.cases or n

    def kind() -> str:  # a memory cache is filled from a shared disk cache where the disk holds one
        shared = cache_bytes(fp, study, k.size, dims, used()) * DISK_CHAINS * 1.5 <= free
        return "memory+disk" if cache == "memory" and shared else cache

    def explained() -> float:  # the driver explains on every core (GPU when there is one), whole inputs
        edge = k.size if dims == 2 else volume_edge(study, fp)
        per_fold = min(k.explain_cases, math.ceil(used() / k.folds))
        driver = GPU_SPEEDUP if capacity.gpus >= 1 else max(1.0, CPU_PARALLEL_EFFICIENCY * capacity.cpus)
        return explain_seconds([c.config["model"] for c in k.candidates], edge, dims, k.folds, per_fold, driver)

    def tested() -> float:  # final models one after another, each on the study's trial resources
        if not test_cases:
            return 0.0
        args = (k, used(), test_cases, dims, kind(), samples, speed, decode)
        names = list(study.baselines)
        refits = baseline_seconds(names, used(), 1, decode, capacity.cpus, machine, k.baseline_cases, test_cases)
        return refits + sum(final_seconds(c.config["model"], *args) for c in k.candidates)

    def statistics() -> float:  # the leaderboard's and the paired comparisons' bootstraps, in the driver
        labels = get_task(study.task).target == "label"
        return stats_seconds(used(), len(k.candidates) + len(study.baselines), labels, machine)

    def estimate():
        searches, baselines, total = _estimate(
            k, used(), dims, kind(), samples, speed, side, study.baselines, capacity.cpus, decode
        )
        return searches, baselines, total + explained() + tested() + statistics()

    searches, baselines, total = estimate()
    scaled_down = False
    classifier_cases = int(n * (k.folds - 1) / k.folds) if set(study.baselines) & set(CLASSIFIERS) else 0
    for step in reductions(k, dims, classifier_cases, n) if budget is not None else []:
        while total > budget and step() is not None:
            scaled_down = True
            cache, cache_note = choose_cache(fp, study, k.size, dims, side, capacity, free, used())
            searches, baselines, total = estimate()
    if budget is not None and total <= budget:
        give_back_epochs(k, int(study.config.get("epochs", 10)), lambda: estimate()[2] <= budget)
        caps = fill_trials(k, trials, lambda: estimate()[2] <= budget, grow=not scaled_down) if fill else {}
        searches, baselines, total = estimate()
        searches = [replace(s, max_trials=caps[s.name]) if s.name in caps else s for s in searches]
    if budget is not None and total > budget:
        raise BudgetError(
            f"a budget of {budget / 60:g} min cannot hold one {k.folds}-fold trial of "
            f"{k.candidates[0].config['model']} at {k.size} px, {k.epochs} epoch(s) "
            f"({used()} images, {capacity.cpus:g} CPUs): the minimum is about {math.ceil(total / 60)} min"
        )
    k.batch_size = max(1, min(k.batch_size, int(used() * (k.folds - 1) / k.folds)))
    if k.baseline_cases is not None and k.baseline_cases >= used() * (k.folds - 1) / k.folds:
        k.baseline_cases = None  # fewer folds since: the cap no longer cuts anything
    notes = changes(study, k, trials, dims, n) + [cache_note]
    if fewest < study.n_folds:
        notes.append(f"folds: class {rare!r} has {fewest} patient(s); every validation fold needs each class")
    if factors:
        from tumorbench.study.probe import describe

        notes.append(describe(factors))
    if kind() == "memory+disk":
        notes.append(
            "memory caches filled from a disk cache every trial and fold shares: each case decoded once per chain"
        )
    if fp.get("sample", {}).get("sampled"):
        notes.append(f"fingerprint: {fp['sample']['note']}")
    if window := foreground_ct_window(study, fp):
        notes.append(f"CT window level {window[0]:.0f}, width {window[1]:.0f}: the masks' intensities p0.5-p99.5")
    order = {c.name: i for i, c in enumerate(study.candidates)}
    return Plan(
        size=k.size,
        batch_size=k.batch_size,
        epochs=k.epochs,
        folds=k.folds,
        cache=cache,
        side_by_side=side,
        searches=tuple(sorted(searches, key=lambda s: order[s.name])),
        baseline_seconds=baselines,
        estimate_seconds=total,
        explain_seconds=explained(),
        explain_cases=k.explain_cases,
        stats_seconds=statistics(),
        test_seconds=tested(),
        test_cases=test_cases,
        budget_seconds=budget,
        spatial_dims=dims,
        notes=tuple(notes),
        probe=dict(factors or {}),
        resources={
            "cpus": capacity.cpus,
            "gpus": capacity.gpus,
            "memory": capacity.memory,
            "source": capacity.source,
        },
        shared_cache=kind() in SHARED_CACHES,
        ct_window=window,
        baseline_cases=k.baseline_cases,
        max_cases=k.cases,
    )
