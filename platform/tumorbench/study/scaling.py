"""The planner's knobs and how it scales them: down to fit a budget, back up to fill it (``study.planner``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tumorbench.study.capacity import study_size
from tumorbench.study.plan_apply import keeps_transfer
from tumorbench.study.spec import Candidate, Study
from tumorbench.study.timemodel import Factors

MIN_FOLDS, MIN_EPOCHS = 2, 1
SIZES_2D, PATCHES_3D = (128, 96, 64), (64, 48, 32)
# Training cases a classifier baseline's head may be fitted on per fold, in the order a budget lowers them: an RBF
# SVM's fit grows with the square of the cases (timemodel.HEAD_COST: ~12 min a fold at 16,000 cases on 2 cores).
# The first three go before the deep models give anything up, 2,000 only before a candidate is dropped.
BASELINE_CASES = (20000, 10000, 5000, 2000)
# A set too large for the budget even at the smallest settings (IDC histopathology: 277,524 patches) is studied on a
# sample of whole patients, cut by this factor a step, never below MIN_STUDY_CASES: before a candidate is dropped.
STUDY_CASES_STEP, MIN_STUDY_CASES = 0.8, 5000
# --budget: a search over a space runs at most this many times the study's trials (planned, or at run time
# while its share of the budget lasts)
TRIAL_SCALE_UP = 4
RUN_TIME_SEARCHERS = ("random", "bayes", "bayes-gp")  # searchers that draw a new configuration per trial


@dataclass
class Knobs:
    """The numbers the planner scales: down to fit a budget, trials up to fill one."""

    size: int
    batch_size: int
    epochs: int
    folds: int
    trials: dict[str, int]
    candidates: list[Candidate]
    inner: float = 0.2  # TrainConfig.inner_val_fraction
    asha: bool = True
    loaders: float = 1.0  # processes decoding and augmenting side by side (a trial's workers, on CPUs)
    workers: int = 1  # a trial's Train workers (each trains its shard in whole batches)
    val_ms: float = 0.0  # scoring one validation case beyond its forward pass (timemodel.SEG_VAL_MS_PER_CASE)
    factors: Factors = field(default_factory=dict)  # model -> step time here / the constant (study.probe)
    machine: float = 1.0  # this machine's CPU against the constants' (study.probe.machine_factor)
    baseline_cases: int | None = None  # training cases a classifier baseline fits on per fold (None: all)
    cases: int | None = None  # cases the study splits and uses (None: all; SplitConfig.max_cases)
    explain_cases: int = 0  # out-of-fold cases explained per fold and model (Study.explain_cases)
    volume: tuple[float, ...] | None = None  # 3D: the whole input a case is validated on (sliding windows)


def give_back_epochs(k: Knobs, epochs: int, fits) -> None:
    """The scale-down steps are coarse (a whole input size, a trial): give epochs back, up to the study's,
    while the plan still ``fits()``, so the study uses its budget rather than 80% of it."""
    while k.epochs < epochs:
        k.epochs += 1
        if not fits():
            k.epochs -= 1
            return


def fill_trials(k: Knobs, trials: dict[str, int], fits, grow: bool = True) -> dict[str, int]:
    """A budget of the user's (``--budget``): searches over a space (random or Bayesian: a grid has its size)
    take trials while the plan ``fits()``, the fewest against the study's first, unless the plan had to scale
    down (``grow`` False: the budget is already short of the study as written). A sampled search is as good as
    its number of draws; more epochs or a larger input than the study's would change what is compared.
    Returns each such search's cap (TRIAL_SCALE_UP x the study's trials), which its search may also reach at
    run time while its share of the budget lasts (a plan is an estimate).
    """
    caps = {
        c.name: TRIAL_SCALE_UP * trials[c.name] for c in k.candidates if c.space and c.searcher in RUN_TIME_SEARCHERS
    }
    growing = list(caps) if grow else []
    while growing:
        name = min(growing, key=lambda n: (k.trials[n] / trials[n], n))
        k.trials[name] += 1
        if not fits():
            k.trials[name] -= 1
            growing.remove(name)
        elif k.trials[name] >= caps[name]:
            growing.remove(name)
    return caps


def reductions(k: Knobs, dims: int, classifier_cases: int = 0, cases: int = 0) -> list:
    """Scale-down steps in order of what a comparison misses least; each returns a note or None.
    ``classifier_cases``: a fold's training cases for the study's classifier baselines (0: it has none);
    ``cases``: the study's usable cases."""
    sizes = PATCHES_3D if dims == 3 else SIZES_2D

    def fewer_cases():
        current = k.cases or cases
        target = max(MIN_STUDY_CASES, int(current * STUDY_CASES_STEP) // 100 * 100)
        if target >= current:
            return None
        k.cases = target
        return f"study cases -> {k.cases}"

    def baseline_cases_to(floor):
        def step():
            below = [c for c in BASELINE_CASES if floor <= c < (k.baseline_cases or classifier_cases)]
            if not below:
                return None
            k.baseline_cases = below[0]
            return f"classifier baselines' training cases -> {k.baseline_cases}"

        return step

    def trials_to(floor):
        def step():
            name = max(k.trials, key=lambda n: k.trials[n])
            if k.trials[name] <= floor:
                return None
            k.trials[name] -= 1
            return f"trials of {name} -> {k.trials[name]}"

        return step

    def lower(knob, floor):  # epochs or folds, one at a time
        def step():
            if getattr(k, knob) <= floor:
                return None
            setattr(k, knob, getattr(k, knob) - 1)
            return f"{knob} -> {getattr(k, knob)}"

        return step

    def smaller():
        below = [s for s in sizes if s < k.size]
        if not below:
            return None
        k.size = below[0]
        return f"{'patch' if dims == 3 else 'input'} size -> {k.size}"

    def fewer_explained():  # no part of the comparison: halved first, never below one a fold and model
        if k.explain_cases <= 1:
            return None
        k.explain_cases //= 2
        return f"explained cases -> {k.explain_cases}"

    def drop_candidate():
        if len(k.candidates) <= 1:
            return None
        dropped = k.candidates.pop()
        return f"candidate {dropped.name} dropped"

    return [
        fewer_explained,
        baseline_cases_to(5000),
        trials_to(2),
        lower("epochs", 4),
        trials_to(1),
        lower("folds", 3),
        smaller,
        lower("epochs", 2),
        lower("folds", MIN_FOLDS),
        lower("epochs", MIN_EPOCHS),
        baseline_cases_to(BASELINE_CASES[-1]),
        fewer_cases,
        drop_candidate,
    ]


def changes(study: Study, k: Knobs, trials: dict[str, int], dims: int, cases: int = 0) -> list[str]:
    """What the plan scaled down from the study as written (``cases``: its usable cases)."""
    notes = []
    if k.cases is not None:
        notes.append(
            f"scaled down: the study uses about {k.cases} of its {cases} cases (whole patients drawn at random, "
            "classes in proportion; the others are in no fold, model or baseline; a larger --budget takes more)"
        )
    for label, before, after in (
        ("input size" if dims == 2 else "patch size", study_size(study, dims), k.size),
        ("epochs", int(study.config.get("epochs", 10)), k.epochs),
        ("folds", study.n_folds, k.folds),
    ):
        if before != after:
            notes.append(f"scaled down: {label} {before} -> {after}")
    kept = {c.name for c in k.candidates}
    for c in study.candidates:
        if c.name not in kept:
            notes.append(f"scaled down: candidate {c.name} dropped")
        elif k.trials[c.name] < trials[c.name]:
            how = (
                f"grid of {trials[c.name]} -> random {k.trials[c.name]} of its combinations"
                + (" with pretrained=True (from scratch needs more epochs)" if keeps_transfer(c.space) else "")
                if c.searcher == "grid"
                else f"{trials[c.name]} -> {k.trials[c.name]} trials"
            )
            notes.append(f"scaled down: {c.name} {how}")
        elif k.trials[c.name] > trials[c.name]:
            notes.append(f"scaled up: {c.name} {trials[c.name]} -> {k.trials[c.name]} trials (the budget holds them)")
    if k.explain_cases < study.explain_cases:
        notes.append(
            f"scaled down: explained cases per fold and model {study.explain_cases} -> {k.explain_cases} "
            "(explanations are no part of the comparison; 3D ones take up to minutes a case on CPUs)"
        )
    if k.baseline_cases is not None:
        notes.append(
            f"scaled down: classifier baselines fitted on about {k.baseline_cases} of each fold's training cases "
            "(whole patients, classes in proportion; every validation case scored; fitted on every case they may "
            "score higher)"
        )
    return notes
