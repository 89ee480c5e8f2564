"""Study planner and budget guard: budgets honoured by the time model, refusals, cache choice, clean stops."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from ray import tune

from tumorbench.errors import TumorbenchError
from tumorbench.study import planner, timemodel
from tumorbench.study.capacity import Capacity
from tumorbench.study.plan_apply import apply_plan
from tumorbench.study.planner import BudgetError, make_plan, model_ms
from tumorbench.study.spec import Candidate, Study
from tumorbench.tuning.budget import BudgetGuard
from tumorbench.tuning.schedulers import asha_expected_share

GIB = 2**30
TWO_CORES = Capacity(2, 0, 16 * GIB, "test")


def _fp(cases=250, classes=None, size=256, channels=3, redundant=0, patients=None):
    classes = {"no": cases // 2, "yes": cases - cases // 2} if classes is None else classes
    return {
        "cases": cases,
        "patients": patients or cases,
        "classes": classes,
        "channels": channels,
        "median_shape": [size, size],
        "duplicates": {"redundant_copies": redundant},
        "decoded_bytes_per_case": 768 * 1024,
        "sample": {"sampled": False},
    }


def _study(**config):
    shared = {"preprocess": {"spatial_size": [128, 128]}, "batch_size": 16, "epochs": 8, "dedupe": True} | config
    return Study(
        name="t",
        task="classification",
        data="/x",
        n_folds=3,
        config=shared,
        baselines=("logreg",),
        candidates=(
            Candidate(
                "lite0",
                {"model": "tf_efficientnet_lite0"},
                {"pretrained": tune.grid_search([True, False]), "augment": tune.grid_search(["light", "medium"])},
                "grid",
            ),
            Candidate("resnet18", {"model": "resnet18"}, {"lr": tune.loguniform(1e-4, 1e-2)}, "random", 2),
        ),
    )


def test_fold_time_follows_the_documented_model():
    train_ms, eval_ms = timemodel.MS_PER_IMAGE["resnet18"]
    assert model_ms("resnet18", 256, 2) == pytest.approx((train_ms * 4, eval_ms * 4))
    # below 128 px part of the cost is per image: 64 px costs 0.4 + 0.6 / 4 of 128 px, not a quarter
    assert model_ms("resnet18", 64, 2) == pytest.approx((train_ms * 0.55, eval_ms * 0.55))
    plan = make_plan(_study(), _fp(cases=300), TWO_CORES, budget_minutes=1000)
    # 3 folds: 200 training cases, of which the inner 20% validate every epoch; the outer 100 are scored once
    train_n, val_n, outer_n = 200 * 0.8, 200 * 0.2, 100
    speed = 0.9 * (2 - 0.3)  # one trial holds both cores, at the measured parallel efficiency, less Ray's own
    driver = 0.9 * 2  # explanations run in the driver after the searches
    epoch = (train_n * (train_ms / speed + timemodel.AUGMENT_MS) + val_n * eval_ms / speed) / 1000
    decode = timemodel.DECODE_MS_FIXED + timemodel.DECODE_MS_PER_MIB * 0.75  # 768 KiB per case
    # the memory caches fill all 300 cases (training, inner validation, outer) from the study's disk cache
    fill = (train_n + val_n + outer_n) * timemodel.CACHED_READ_MS / 1000
    fold = timemodel.FOLD_OVERHEAD_S + fill + outer_n * eval_ms / speed / 1000 + 8 * epoch
    search = next(s for s in plan.searches if s.name == "resnet18")
    assert search.fold_seconds == pytest.approx(fold + timemodel.TRIAL_STARTUP_S / 3)
    # 2 trials of 3 folds x 8 epochs under ASHA (grace 2 epochs, rungs at 2 and 8): the first trains all 24
    # epochs, the second passes the first rung with probability 1/2 and mostly the second: 2 + 22/2 - a bit
    share = asha_expected_share(2, 24, 2)
    assert (24 + 2 + 6 / 2 + 16 / 4) / 48 < share < (24 + 2 + 22 / 2) / 48
    assert search.seconds == pytest.approx(2 * timemodel.TRIAL_STARTUP_S + 2 * share * 3 * fold)
    # explanations after the searches: 4 cases of each of 3 folds per model, on both cores in the driver
    evals = timemodel.MS_PER_IMAGE["tf_efficientnet_lite0"][1] + eval_ms
    assert plan.explain_seconds == pytest.approx(3 * 4 * timemodel.EXPLAIN_PASSES[2] * evals / 1000 / driver)
    assert plan.estimate_seconds == pytest.approx(
        timemodel.RAY_START_S
        + 2 * 300 * decode / 1000
        + plan.baseline_seconds
        + plan.explain_seconds
        + plan.stats_seconds
        + sum(s.seconds for s in plan.searches)
    )  # every case decoded into the disk cache once per study and chain (training, validation)
    # the leaderboard's and paired comparisons' bootstraps: 300 cases of 2 deep models and 1 baseline
    assert plan.stats_seconds == pytest.approx(300 * 3 * timemodel.STATS_MS_PER_CASE / 1000)
    assert "statistics ~" in plan.format()
    assert "explanations ~" in plan.format()
    names, left = [s.name for s in plan.searches], plan.estimate_seconds  # a search's share leaves both out
    share = plan.searches[0].seconds / sum(s.seconds for s in plan.searches)
    after = plan.baseline_seconds + plan.explain_seconds + plan.stats_seconds
    assert plan.search_budget(names[0], left, names) == pytest.approx((left - after) * share)
    quiet = make_plan(replace(_study(), explain_cases=0), _fp(cases=300), TWO_CORES, budget_minutes=1000)
    assert quiet.explain_seconds == 0 and quiet.estimate_seconds == pytest.approx(
        plan.estimate_seconds - plan.explain_seconds
    )
    # segmentation scores each validation case on its mask: 8 ms more per inner case and epoch, per outer case
    knobs = SimpleNamespace(
        size=128,
        batch_size=16,
        workers=1,
        folds=3,
        inner=0.2,
        loaders=1.0,
        epochs=8,
        val_ms=0.0,
        factors={},
        machine=1.0,
        volume=None,
    )
    plain = timemodel.fold_seconds("unet", knobs, 300, 2, "memory+disk", 1, speed, decode)
    scored_knobs = SimpleNamespace(**{**vars(knobs), "val_ms": 8.0})
    scored = timemodel.fold_seconds("unet", scored_knobs, 300, 2, "memory+disk", 1, speed, decode)
    assert scored - plain == pytest.approx((8 * val_n + outer_n) * 8.0 / 1000)
    unet = Candidate("u", {"model": "unet"}, {"lr": tune.loguniform(1e-4, 1e-2)}, "random", 1)
    config = {"preprocess": {"spatial_size": [128, 128]}, "epochs": 8, "batch_size": 8}
    seg = Study(
        name="s", task="segmentation", data="/x", n_folds=3, config=config, baselines=("otsu",), candidates=(unet,)
    )
    planned = make_plan(seg, _fp(cases=300, classes={}), TWO_CORES, budget_minutes=1000, disk_free=10 * GIB)
    knobs = SimpleNamespace(**{**vars(knobs), "val_ms": timemodel.SEG_VAL_MS_PER_CASE})
    expected = timemodel.fold_seconds("unet", knobs, 300, 2, "memory+disk", 1, speed, decode)
    assert planned.searches[0].fold_seconds == pytest.approx(expected + timemodel.TRIAL_STARTUP_S / 3)
    # two workers decode and augment their shards side by side: the data part of a fold is halved
    two = make_plan(_study(workers=2), _fp(cases=300), TWO_CORES, budget_minutes=1000)
    halved = fold - (fill + 8 * train_n * timemodel.AUGMENT_MS / 1000) / 2
    assert next(s for s in two.searches if s.name == "resnet18").fold_seconds == pytest.approx(
        halved + timemodel.TRIAL_STARTUP_S / 3
    )


def test_a_locked_test_set_is_planned_and_reserved_after_the_searches():
    plain = make_plan(_study(), _fp(cases=300), TWO_CORES, budget_minutes=1000)
    tested = make_plan(_study(), _fp(cases=300), TWO_CORES, budget_minutes=1000, test_cases=60)
    assert plain.test_seconds == 0 and "locked test set" not in plain.format()
    assert "locked test set: 60 cases" in tested.format()
    # a final model trains on all 300 cases (its inner 20% pick the epoch) and scores the 60 test cases once;
    # the shared disk cache already holds the training cases: only the test cases are decoded
    speed, decode = 0.9 * (2 - 0.3), timemodel.DECODE_MS_FIXED + timemodel.DECODE_MS_PER_MIB * 0.75
    final = 0.0
    for model in ("tf_efficientnet_lite0", "resnet18"):
        train_ms, eval_ms = timemodel.MS_PER_IMAGE[model]
        epoch = 240 // 16 * 16 * (train_ms / speed + timemodel.AUGMENT_MS) + 60 * eval_ms / speed
        seconds = (60 * decode + 8 * epoch + 60 * eval_ms / speed) / 1000
        final += timemodel.TRIAL_STARTUP_S + timemodel.FOLD_OVERHEAD_S + seconds
    # the one baseline (logreg) refitted on all 300 cases; the features of the 300 + 60 cases in one shared pass
    head = timemodel.BASELINE_S_PER_FOLD + 0.1 + 300 * 5.8 / 1000
    features = 360 * (timemodel.FEATURE_MS_FIXED + timemodel.FEATURE_DECODE_SHARE * decode) / 1000
    refit = max((head + features) / (0.9 * 2), head, features)
    assert tested.test_seconds == pytest.approx(final + refit)
    assert tested.estimate_seconds == pytest.approx(plain.estimate_seconds + tested.test_seconds)
    names = [s.name for s in tested.searches]  # the budget guard leaves the final models their time
    after = tested.baseline_seconds + tested.explain_seconds + tested.test_seconds + tested.stats_seconds
    share = tested.searches[0].seconds / sum(s.seconds for s in tested.searches)
    assert tested.search_budget(names[0], 3600, names) == pytest.approx((3600 - after) * share)
    budgeted = make_plan(_study(), _fp(cases=3000), TWO_CORES, budget_minutes=15, test_cases=600)
    assert budgeted.estimate_seconds <= 15 * 60 and budgeted.test_seconds > 0  # scaled down to hold it too


@pytest.mark.parametrize("budget", [8, 15, 30])
def test_plans_fit_their_budget_and_say_what_was_scaled(budget):
    plan = make_plan(_study(), _fp(cases=3000), TWO_CORES, budget_minutes=budget)
    assert plan.estimate_seconds <= budget * 60
    assert any(n.startswith("scaled down") for n in plan.notes)


def test_default_preset_is_capped_under_an_hour_and_small_sets_keep_the_preset():
    big = make_plan(_study(), _fp(cases=5700), TWO_CORES, preset="default")
    assert big.budget_seconds == 55 * 60 and big.estimate_seconds <= 55 * 60
    small = make_plan(_study(), _fp(cases=40), TWO_CORES, preset="default")
    assert (small.size, small.epochs, small.folds) == (128, 8, 3)
    assert not any(n.startswith("scaled down") for n in small.notes)


@pytest.mark.parametrize(
    ("max_t", "rf", "expected"),
    [(2, 2, 0.75), (2, 4, 0.625), (3, 4, 0.5), (5, 4, (1 + 3 / 4 + 1 / 16) / 5), (1, 4, 1.0)],
)
def test_asha_fraction(max_t, rf, expected):
    from tumorbench.tuning.schedulers import asha_fraction

    assert asha_fraction(max_t, 1, rf) == pytest.approx(expected)


def test_asha_expected_share_replays_tunes_rule():
    from tumorbench.tuning.schedulers import _percentile, asha_expected_share, asha_fraction, asha_grace_epochs

    assert asha_grace_epochs(8) == 2 and asha_grace_epochs(3) == 1
    values = sorted(np.random.default_rng(0).random(7))
    assert _percentile(values, 0.75) == pytest.approx(np.percentile(values, 75))
    assert asha_expected_share(1, 24, 2) == 1.0  # a lone trial trains everything
    # rungs at 2 and 8 of 24, no noise: trial 2 passes the first with p 1/2, then leads trial 1 at the second
    assert asha_expected_share(2, 24, 2, noise=0.0) == pytest.approx((24 + 2 + 22 / 2) / 48, abs=0.01)
    # pure noise: it passes the second rung with p 1/2 too
    assert asha_expected_share(2, 24, 2, noise=1e6) == pytest.approx((24 + 2 + 6 / 2 + 16 / 4) / 48, abs=0.01)
    # measured: replays of the yes/no bench's 12 learning curves in 200 orders (grace 1, rf 4, 12 epochs)
    for trials, replayed in ((12, 0.35), (24, 0.32), (36, 0.29)):
        assert asha_expected_share(trials, 12, 1) == pytest.approx(replayed, abs=0.03)
    # many trials: every later one passes a rung with 1/rf, the limit asha_fraction gives
    assert asha_expected_share(2000, 24, 2) == pytest.approx(asha_fraction(24, 2), rel=0.05)


def test_inputs_are_never_upsampled():
    plan = make_plan(_study(), _fp(cases=300, size=64), TWO_CORES, budget_minutes=1000)
    assert plan.size == 64 and "scaled down: input size 128 -> 64" in plan.notes
    assert make_plan(_study(), _fp(cases=300, size=50), TWO_CORES, budget_minutes=1000).size == 64  # stride 16


def test_folds_never_outnumber_the_rarest_class_and_one_patient_is_refused():
    fp = _fp(cases=300) | {"class_patients": {"no": 298, "yes": 2}}
    plan = make_plan(_study(), fp, TWO_CORES, budget_minutes=1000)
    assert (
        plan.folds == 2 and "folds: class 'yes' has 2 patient(s); every validation fold needs each class" in plan.notes
    )
    assert make_plan(_study(), _fp(cases=300) | {"class_patients": {"no": 150, "yes": 150}}, TWO_CORES).folds == 3
    with pytest.raises(TumorbenchError, match="class 'yes' has 1 patient: cross-validation needs at least 2"):
        make_plan(_study(), _fp(cases=300) | {"class_patients": {"no": 299, "yes": 1}}, TWO_CORES)


def test_too_small_a_budget_is_refused_with_the_minimum():
    with pytest.raises(BudgetError, match=r"the minimum is about (\d+) min") as info:
        make_plan(_study(), _fp(cases=3000), TWO_CORES, budget_minutes=1)
    minimum = int(info.value.args[0].rsplit("about ", 1)[1].split()[0])
    plan = make_plan(_study(), _fp(cases=3000), TWO_CORES, budget_minutes=minimum)  # the minimum quoted fits
    assert plan.folds == 2 and len(plan.searches) == 1 and plan.estimate_seconds <= minimum * 60
    # the minimum is rounded up to a whole minute: what is left over goes back into epochs, while it fits
    one_epoch = make_plan(_study(epochs=1), _fp(cases=3000), TWO_CORES, budget_minutes=minimum)
    assert plan.epochs >= one_epoch.epochs == 1 and plan.estimate_seconds >= one_epoch.estimate_seconds


def test_scale_down_gives_epochs_back_while_the_budget_holds(monkeypatch):
    fp = _fp(cases=3000)
    given = make_plan(_study(), fp, TWO_CORES, budget_minutes=8.5, disk_free=10 * GIB)
    monkeypatch.setattr(planner, "give_back_epochs", lambda *args: None)
    coarse = make_plan(_study(), fp, TWO_CORES, budget_minutes=8.5, disk_free=10 * GIB)
    assert coarse.epochs < given.epochs <= 8  # the coarse steps took more than the budget needed
    assert coarse.estimate_seconds < given.estimate_seconds <= 8.5 * 60


def test_cache_memory_disk_or_none():
    backed = make_plan(_study(), _fp(cases=300), TWO_CORES, budget_minutes=1000, disk_free=10 * GIB)
    assert backed.cache == "memory" and backed.shared_cache
    assert apply_plan(_study(), backed, cache_dir="/x/cache").config["cache_dir"] == "/x/cache"
    # no room on disk: memory caches decode every case in every fold, and the plan pays for it
    alone = make_plan(_study(), _fp(cases=300), TWO_CORES, budget_minutes=1000, disk_free=0)
    assert alone.cache == "memory" and not alone.shared_cache
    assert "cache_dir" not in apply_plan(_study(), alone, cache_dir="/x/cache").config
    assert all(a.fold_seconds > b.fold_seconds for a, b in zip(alone.searches, backed.searches))
    # 200,000 images at 128x128x3 float32 = 37 GiB: over a quarter of 16 GiB
    huge = _fp(cases=200_000)
    plan = make_plan(_study(), huge, TWO_CORES, budget_minutes=100_000, disk_free=500 * GIB)
    assert plan.cache == "disk" and any("disk cache" in n for n in plan.notes)
    assert make_plan(_study(), huge, TWO_CORES, budget_minutes=100_000, disk_free=1 * GIB).cache == "none"


def test_a_users_budget_is_filled_with_trials_of_the_sampled_searches():
    """--budget (``fill``): random and Bayesian searches take trials while the plan fits, up to 4x the study's;
    a grid keeps its size; a preset's cap (no ``fill``) only bounds; a plan already scaled down takes none."""
    fp = _fp(cases=300)
    capped = make_plan(_study(), fp, TWO_CORES, budget_minutes=15, disk_free=10 * GIB)
    filled = make_plan(_study(), fp, TWO_CORES, budget_minutes=15, disk_free=10 * GIB, fill=True)
    grown = next(s for s in filled.searches if s.name == "resnet18")
    assert next(s.trials for s in capped.searches if s.name == "resnet18") == 2 < grown.trials < 8
    assert next(s.trials for s in filled.searches if s.name == "lite0") == 4  # the grid's size
    assert capped.estimate_seconds < filled.estimate_seconds <= 15 * 60

    # the study written with that many trials estimates the same; with one more it would not fit
    def written(trials):
        study = _study()
        study = replace(study, candidates=(study.candidates[0], replace(study.candidates[1], num_samples=trials)))
        return make_plan(study, fp, TWO_CORES, budget_minutes=1000, disk_free=10 * GIB).estimate_seconds

    assert written(grown.trials) == pytest.approx(filled.estimate_seconds)
    assert written(grown.trials + 1) > 15 * 60
    assert f"scaled up: resnet18 2 -> {grown.trials} trials" in " ".join(filled.notes)
    assert grown.max_trials == 8 and "up to 8 trials while its share lasts" in filled.format()
    # the run-time maximum reaches the search; progress and Optuna's start-up count the planned trials
    assert next(c for c in apply_plan(_study(), filled).candidates if c.name == "resnet18").num_samples == 8
    assert next(c for c in apply_plan(_study(), capped).candidates if c.name == "resnet18").num_samples == 2
    # time for far more: the cap
    assert next(s.trials for s in make_plan(_study(), fp, TWO_CORES, budget_minutes=600, fill=True).searches) == 4
    huge = make_plan(_study(), fp, TWO_CORES, budget_minutes=600, fill=True)
    assert next(s.trials for s in huge.searches if s.name == "resnet18") == 8
    # scaled down to fit: no trial added, though the search may still run more at run time
    short = make_plan(_study(), _fp(cases=3000), TWO_CORES, budget_minutes=8, disk_free=10 * GIB, fill=True)
    cut = next(s for s in short.searches if s.name == "resnet18")
    assert cut.trials <= 2 and cut.max_trials == 8 and not any("scaled up" in n for n in short.notes)


def test_gpus_run_one_trial_each():
    gpus = make_plan(_study(), _fp(cases=300), Capacity(16, 2, 128 * GIB, "test"), budget_minutes=1000)
    cpus = make_plan(_study(), _fp(cases=300), Capacity(16, 0, 128 * GIB, "test"), budget_minutes=1000)
    assert gpus.side_by_side == 2  # one trial per GPU
    assert cpus.side_by_side == 4  # 8 pairs of cores, but no search has more than 4 trials
    # a GPU trial (GPU_SPEEDUP) trains a fold faster than a CPU trial on its 4 cores (0.9 x 4)
    assert max(s.fold_seconds for s in gpus.searches) < min(s.fold_seconds for s in cpus.searches)


def test_apply_plan_turns_a_cut_grid_into_random_choices():
    study = _study()
    plan = make_plan(study, _fp(cases=3000), TWO_CORES, budget_minutes=15)
    planned = apply_plan(study, plan, cache_dir="/tmp/cache")
    lite = next(c for c in planned.candidates if c.name == "lite0")
    trials = next(s.trials for s in plan.searches if s.name == "lite0")
    assert trials < 4  # the grid of 4 is cut
    assert lite.searcher == "random" and lite.num_samples == trials
    assert all(not isinstance(v, dict) for v in lite.space.values())
    # cut, transfer vs scratch keeps transfer: from scratch stays near chance in a short plan
    assert lite.space["pretrained"] is True and sorted(lite.space["augment"].categories) == ["light", "medium"]
    assert any("lite0 grid of 4" in n and "pretrained=True" in n for n in plan.notes)
    assert planned.n_folds == plan.folds and planned.config["epochs"] == plan.epochs
    assert planned.config["preprocess"]["spatial_size"] == [plan.size, plan.size]


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _step(guard, **status):
    guard.on_step_begin(0, [SimpleNamespace(trial_id=t, status=s) for t, s in status.items()])


def _first_trial(seconds: float, fold_seconds: float, reports: tuple, **kwargs):
    """A guard whose first trial ``a`` reported its folds at the ``reports`` times, none of them stopped."""
    clock = _Clock()
    guard = BudgetGuard(seconds, n_folds=len(reports), fold_seconds=fold_seconds, clock=clock, **kwargs)
    _step(guard, a="RUNNING")
    for folds, now in enumerate(reports, 1):
        clock.now = now
        assert guard("a", {"folds_done": folds}) is False
    return guard, clock


def test_guard_keeps_the_first_trial_then_stops_at_fold_boundaries():
    clock = _Clock()
    guard = BudgetGuard(300, n_folds=3, fold_seconds=50, grace=30, clock=clock)
    _step(guard, a="RUNNING")
    for fold in (1, 2, 3):
        clock.now += 90  # folds take longer than planned; nothing has finished, so the first trial goes on
        assert guard("a", {"folds_done": fold}) is False
        assert not guard.stop_all()  # at fold 3 too: the trial still makes its closing report (its outcome)
    assert guard.finished() == 1 and guard.fold_seconds() == pytest.approx(90)
    _step(guard, a="TERMINATED", b="PENDING")  # t=270: a new 3-fold trial cannot fit 300 s
    assert guard.stop_all() and guard.ended_by == "budget: no further trial fits"


def test_guard_does_not_claim_a_search_that_ran_all_its_trials():
    # LGG --budget 15: one trial per search, done at 189 s of a 258 s share; a further trial would not have fit,
    # but none was planned: the search ended on its own, and its summary said "budget: no further trial fits"
    for planned, ends in ((1, False), (2, True), (None, True)):
        guard, _ = _first_trial(258, 71, (80, 135, 189), grace=26, planned_trials=planned)
        _step(guard, a="TERMINATED")  # 189 + 3 x 63 > 258
        assert guard.stop_all() is ends
        assert guard.summary()["ended_by"] == ("budget: no further trial fits" if ends else None)


def test_guard_starts_a_trial_that_fits_at_ashas_expected_share():
    # yes/no --budget 15: lite0's 282 s share, 41 s folds after a 49 s start-up; ASHA expected to stop a new trial
    # at 0.6 of its folds. Asking room for all 3 folds ended the search after one trial, 27% under the budget.
    for share, ends in ((1.0, True), (0.6, False)):
        guard, clock = _first_trial(282, 48, (90, 131, 172), grace=28, new_trial_share=share)
        _step(guard, a="TERMINATED", b="PENDING")  # 172 + 3 x 57.3 = 344 > 282; 172 + 0.6 x 172 = 275 <= 282
        assert guard.stop_all() is ends
    _step(guard, a="TERMINATED", b="RUNNING")
    clock.now = 200  # 200 + 0.6 x 172 > 282: no new trial would start now, but b started when it fitted
    assert guard.stop_all() is False  # ASHA judges it at its rung; ending the search would waste its start-up
    clock.now = 230  # promoted by ASHA past its rung: stopped at a fold boundary, and the search ends
    assert guard("b", {"folds_done": 1}) is True
    _step(guard, a="TERMINATED", b="RUNNING")
    assert guard.stop_all() is True and guard.ended_by == "budget: no further trial fits"


def test_guard_cuts_a_trial_whose_folds_no_longer_fit():
    clock = _Clock()
    guard = BudgetGuard(400, n_folds=2, fold_seconds=60, clock=clock)
    _step(guard, a="RUNNING")
    clock.now = 60
    guard("a", {"folds_done": 1})
    clock.now = 120
    guard("a", {"folds_done": 2})
    _step(guard, a="TERMINATED", b="PENDING")
    assert not guard.stop_all()  # 120 + 2 x 60 <= 400: a second trial fits
    _step(guard, a="TERMINATED", b="RUNNING")
    clock.now = 350
    assert guard("b", {"folds_done": 1}) is True  # 350 + 60 > 400: stop after this fold
    _step(guard, a="TERMINATED", b="TERMINATED")
    assert guard.stop_all()


def test_guard_lets_the_only_trial_finish_a_fold_past_the_deadline():
    # LGG --budget 15: a 240 s share, 77 s folds planned, ~90 s measured; the 10% grace ended at 264 s
    clock = _Clock()
    guard = BudgetGuard(240, n_folds=3, fold_seconds=77, grace=24, clock=clock)
    _step(guard, a="RUNNING")
    for now, folds in ((115, 1), (202, 2)):
        clock.now = now
        assert guard("a", {"folds_done": folds}) is False
    clock.now = 290  # past deadline + grace, inside a fold (~100 s measured) past the deadline
    assert not guard.stop_all()
    clock.now = 341  # 240 + 101: the search would still have no result; cut
    assert guard.stop_all() and "hard deadline" in guard.ended_by


def test_guard_hard_deadline_cuts_everything():
    clock = _Clock()
    guard = BudgetGuard(100, n_folds=3, fold_seconds=10, grace=20, clock=clock)
    _step(guard, a="RUNNING")
    clock.now = 119
    assert not guard.stop_all()
    clock.now = 120
    assert guard.stop_all() and guard.ended_by == "hard deadline: running folds cut"
    assert math.isclose(guard.summary()["budget_s"], 100)
    # past the hard deadline with every trial done (or its folds all reported): nothing was cut, and it says so
    idle = BudgetGuard(100, n_folds=2, fold_seconds=10, grace=20, clock=clock)
    _step(idle, a="RUNNING", b="PENDING")
    clock.now = 500
    idle("a", {"folds_done": 2})  # reported in the step begun above; its closing report is still to come
    assert idle.stop_all() and idle.ended_by == "hard deadline: no further trial started, nothing running was cut"


def test_probed_factors_scale_each_models_compute_like_a_changed_constant(monkeypatch):
    """A model timed 2x slower here trains as if its constant were 2x; explanations keep the constants.
    (The other model timed 0.5x: the machine as a whole, their geometric mean, is the calibration one.)"""
    probed_at = {"resnet18": {"train": 2.0, "eval": 2.0}, "tf_efficientnet_lite0": {"train": 0.5, "eval": 0.5}}
    probed = make_plan(_study(), _fp(cases=300), TWO_CORES, budget_minutes=1000, disk_free=10 * GIB, factors=probed_at)
    plain = make_plan(_study(), _fp(cases=300), TWO_CORES, budget_minutes=1000, disk_free=10 * GIB)
    for model, scale in (("resnet18", 2.0), ("tf_efficientnet_lite0", 0.5)):
        train_ms, eval_ms = timemodel.MS_PER_IMAGE[model]
        monkeypatch.setitem(timemodel.MS_PER_IMAGE, model, (scale * train_ms, scale * eval_ms))
    changed = make_plan(_study(), _fp(cases=300), TWO_CORES, budget_minutes=1000, disk_free=10 * GIB)
    assert [s.fold_seconds for s in probed.searches] == pytest.approx([s.fold_seconds for s in changed.searches])
    assert probed.explain_seconds == pytest.approx(plain.explain_seconds) != changed.explain_seconds
    assert probed.estimate_seconds == pytest.approx(
        changed.estimate_seconds - changed.explain_seconds + plain.explain_seconds
    )
    assert any("resnet18 2.00x" in note for note in probed.notes)


def test_a_model_probed_at_two_sizes_scales_by_its_own_fixed_share():
    """A U-Net whose step fell from 100 ms at 128 px to 32.5 ms at 64 px: 10% of it is per image
    ((0.325 - 0.25) / 0.75), not the default 40%; its time at 96 px follows from the probed 128 px."""
    assert timemodel.fixed_share(100.0, 32.5, 0.5, 2) == pytest.approx(0.1)
    assert timemodel.fixed_share(100.0, 20.0, 0.5, 2) == 0.0  # fell faster than the pixels: none fixed
    assert timemodel.fixed_share(100.0, 120.0, 0.5, 2) == timemodel.MAX_FIXED_SHARE  # slower when smaller: bounded
    assert timemodel.fixed_share(100.0, 15.0, 0.5, 3) == pytest.approx((0.15 - 0.125) / 0.875, abs=1e-3)
    probed = {"unet": {"train": 1.5, "eval": 2.0, "size": 128, "smaller": 64, "fixed_train": 0.1, "fixed_eval": 0.3}}
    train_ms, eval_ms = timemodel.MS_PER_IMAGE["unet"]  # the constants at 128 px, the calibration size
    assert model_ms("unet", 128, 2, probed) == pytest.approx((1.5 * train_ms, 2.0 * eval_ms))
    at_96 = (96 / 128) ** 2
    assert model_ms("unet", 96, 2, probed) == pytest.approx(
        (1.5 * train_ms * (0.1 + 0.9 * at_96), 2.0 * eval_ms * (0.3 + 0.7 * at_96))
    )
    # the default share would have planned this U-Net's 96-px steps 1.2x longer
    default = model_ms("unet", 96, 2, {"unet": {"train": 1.5, "eval": 2.0}})[0]
    assert default / model_ms("unet", 96, 2, probed)[0] == pytest.approx(0.7375 / 0.60625)


def test_a_budget_buys_more_of_a_unet_whose_cost_falls_with_the_pixels():
    """Under the same budget, a U-Net probed with a small fixed share is planned larger or longer than with the
    default share: LGG ``--budget 15`` planned 13.1 min and took 10.8 with 0.4 (2026-12-07)."""
    seg = replace(_study(), task="segmentation", baselines=("otsu",), candidates=(Candidate("u", {"model": "unet"}),))
    fp = _fp(cases=1300, classes={})
    plans = [
        make_plan(seg, fp, TWO_CORES, budget_minutes=6, disk_free=10 * GIB, factors={"unet": f})
        for f in (
            {"train": 1.3, "eval": 1.3},
            {"train": 1.3, "eval": 1.3, "size": 128, "smaller": 64, "fixed_train": 0.1, "fixed_eval": 0.1},
        )
    ]
    default, probed = ((p.size, p.epochs) for p in plans)
    assert default[0] < 128 and probed > default  # scaled down from 128 px with either, less with the probed share
    assert plans[1].estimate_seconds <= 6 * 60
    assert plans[1].probe["unet"]["fixed_train"] == 0.1  # the timings behind the plan are kept with it (plan.json)


def test_a_faster_machine_scales_the_cpu_bound_constants_too(monkeypatch):
    """Models probed at 0.8x: start-up, set-up, decoding, augmenting, scoring, baselines and Ray's own cores
    as if every constant had been measured at 0.8x (Ray's start-up and the explanations keep theirs)."""
    fast = {m: {"train": 0.8, "eval": 0.8} for m in ("resnet18", "tf_efficientnet_lite0")}
    seg = replace(_study(), task="segmentation", baselines=("otsu",), candidates=(Candidate("u", {"model": "unet"}),))
    probed = [
        make_plan(study, _fp(cases=300, classes=cl), TWO_CORES, budget_minutes=1000, disk_free=10 * GIB, factors=f)
        for study, cl, f in ((_study(), None, fast), (seg, {}, {"unet": {"train": 0.8, "eval": 0.8}}))
    ]
    for model in ("resnet18", "tf_efficientnet_lite0", "unet"):
        monkeypatch.setitem(timemodel.MS_PER_IMAGE, model, tuple(0.8 * v for v in timemodel.MS_PER_IMAGE[model]))
    for module, name in (
        (planner, "TRIAL_STARTUP_S"),
        (planner, "RAY_BACKGROUND_CORES"),
        (planner, "SEG_VAL_MS_PER_CASE"),
        (timemodel, "BASELINE_S_PER_FOLD"),
        (timemodel, "BASELINE_MS_PER_CASE"),
        (timemodel, "FEATURE_MS_FIXED"),
        (timemodel, "STATS_MS_PER_CASE"),
        (timemodel, "FOLD_OVERHEAD_S"),
        (timemodel, "AUGMENT_MS"),
        (timemodel, "CACHED_READ_MS"),
        (timemodel, "DECODE_MS_FIXED"),
        (timemodel, "DECODE_MS_PER_MIB"),
    ):
        monkeypatch.setattr(module, name, 0.8 * getattr(module, name))
    monkeypatch.setattr(timemodel, "HEAD_COST", {k: (0.8 * a, 0.8 * b) for k, (a, b) in timemodel.HEAD_COST.items()})
    for plan, study, classes in zip(probed, (_study(), seg), (None, {})):
        changed = make_plan(study, _fp(cases=300, classes=classes), TWO_CORES, budget_minutes=1000, disk_free=10 * GIB)
        assert [x for s in plan.searches for x in (s.fold_seconds, s.seconds)] == pytest.approx(
            [x for s in changed.searches for x in (s.fold_seconds, s.seconds)]
        )
        assert plan.baseline_seconds == pytest.approx(changed.baseline_seconds)
        assert plan.estimate_seconds - plan.explain_seconds == pytest.approx(
            changed.estimate_seconds - changed.explain_seconds
        )


def test_an_epoch_trains_each_workers_shard_in_whole_batches():
    """As training.data loads them: shards padded to equal sizes (MONAI's partition), drop_last past one batch."""
    from monai.data import partition_dataset

    for cases, batch, workers in ((122, 16, 2), (160, 16, 1), (7, 16, 2), (698, 8, 2), (33, 4, 3)):
        shards = partition_dataset(list(range(cases)), num_partitions=workers, even_divisible=True, drop_last=False)
        seen = sum(len(s) // batch * batch if len(s) > batch else len(s) for s in shards)
        assert timemodel.epoch_cases(cases, batch, workers) == seen
    assert timemodel.epoch_cases(122, 16, 2) == 96  # the yes/no study's epochs (96 images, 2 workers x 48)


def test_ct_segmentation_windows_the_masks_intensities_as_nnunet_does():
    unet = Candidate("u", {"model": "unet"}, {}, "random", 1)
    config = {"preprocess": {"spatial_size": [128, 128], "normalize": "ct_window"}, "epochs": 2, "batch_size": 8}
    seg = Study(name="s", task="segmentation", data="/x", n_folds=3, config=config, baselines=(), candidates=(unet,))
    fp = _fp(cases=40, classes={}, channels=1) | {
        "foreground": {"mean_fraction": 0.05},  # liver + tumour under the masks: 20-180 HU
        "intensity": [{"p00_5": 20.0, "p50": 70.0, "p99_5": 180.0, "mean": 75.0, "std": 30.0}],
    }
    plan = make_plan(seg, fp, TWO_CORES, budget_minutes=1000)
    assert plan.ct_window == (100.0, 160.0)  # [20, 180] HU, not the lung window [-1350, 150]
    assert "CT window level 100, width 160: the masks' intensities p0.5-p99.5" in plan.notes
    assert apply_plan(seg, plan).config["preprocess"]["ct_window"] == [100.0, 160.0]
    pinned = replace(seg, config={**config, "preprocess": {**config["preprocess"], "ct_window": [40, 400]}})
    assert make_plan(pinned, fp, TWO_CORES, budget_minutes=1000).ct_window is None  # a study's own window stays
    assert make_plan(_study(), fp | {"channels": 3}, TWO_CORES, budget_minutes=1000).ct_window is None


def test_classifier_baselines_share_features_and_run_side_by_side():
    """Features once per case for every classifier (FEATURE_MS_FIXED + half the decode), each fold's head an
    inner grid search (SVM's cost per case grows with the cases), 1-CPU tasks on 0.9 x the cores; the
    thresholding baselines keep the per-fold constants."""
    decode, n, folds = 4.0, 3000, 3
    train = 2000
    heads = {"logreg": 0.1 + train * 5.8 / 1000, "svm": 0.4 + train * 11.1 * train / 3800 / 1000}
    tasks = [timemodel.BASELINE_S_PER_FOLD + heads[name] for name in ("logreg", "svm") for _ in range(folds)]
    features = n * (7.7 + 0.5 * decode) / 1000
    expected = (sum(tasks) + features) / (0.9 * 2)
    assert timemodel.baseline_seconds(["logreg", "svm"], n, folds, decode, 2, 1.0) == pytest.approx(expected)
    # a machine at 0.8x: every constant and the decode (given as this machine's, as fold_seconds takes it)
    assert timemodel.baseline_seconds(["logreg", "svm"], n, folds, 0.8 * decode, 2, 0.8) == pytest.approx(
        0.8 * expected
    )
    assert timemodel.baseline_seconds(["logreg"], n, folds, decode, 64, 1.0) == pytest.approx(features)  # longest task
    otsu = timemodel.baseline_seconds(["otsu"], 300, 3, decode, 2, 1.0)
    assert otsu == pytest.approx(3 * (4.0 + 300 * 5.0 / 1000) / 1.8)
    assert timemodel.baseline_seconds([], 300, 3, decode, 2, 1.0) == 0.0


def _classifier_study():
    return replace(_study(), baselines=("logreg", "svm", "random_forest", "gradient_boosting"))


def test_large_sets_cap_the_classifier_baselines_before_the_deep_models():
    """50,000 images: four classifier baselines on every training case would not fit an hour beside one trial (an RBF
    SVM's fit is quadratic in its cases); the plan fits their heads on fewer cases, says so, and applies it."""
    study = _classifier_study()
    plan = make_plan(study, _fp(cases=50000), TWO_CORES, budget_minutes=60)
    assert plan.baseline_cases == 2000 and plan.estimate_seconds <= 3600
    assert any("classifier baselines fitted on about 2000" in n for n in plan.notes)
    applied = apply_plan(replace(study, baseline_params={"svm": {"max_train_cases": 1500, "C": 1.0}}), plan)
    assert applied.baseline_params["svm"] == {"max_train_cases": 1500, "C": 1.0}  # the study's own lower cap kept
    assert {n: p["max_train_cases"] for n, p in applied.baseline_params.items() if n != "svm"} == {
        "logreg": 2000,
        "random_forest": 2000,
        "gradient_boosting": 2000,
    }
    # 12,000 images: 5,000 cases is enough before any trial goes; small sets are never capped
    mid = make_plan(study, _fp(cases=12000), TWO_CORES, budget_minutes=60)
    assert mid.baseline_cases == 5000
    small = make_plan(study, _fp(cases=3000), TWO_CORES, budget_minutes=60)
    assert small.baseline_cases is None and apply_plan(study, small).baseline_params == {}
    assert not any("classifier baselines" in n for n in small.notes)


def test_baseline_time_counts_only_the_capped_training_cases():
    n, folds, decode = 30000, 3, 4.0
    features = n * (7.7 + 0.5 * decode) / 1000
    svm = timemodel.BASELINE_S_PER_FOLD + 0.4 + 5000 * 11.1 * 5000 / 3800 / 1000
    expected = max((folds * svm + features) / (0.9 * 2), svm, features)
    assert timemodel.baseline_seconds(["svm"], n, folds, decode, 2, 1.0, cap=5000) == pytest.approx(expected)
    assert timemodel.baseline_seconds(["svm"], n, folds, decode, 2, 1.0, cap=50000) == pytest.approx(
        timemodel.baseline_seconds(["svm"], n, folds, decode, 2, 1.0)
    )


def test_a_set_too_large_for_the_default_budget_is_studied_on_a_sample_of_whole_patients():
    """IDC histopathology, 277,524 patches of 279 patients: at the smallest settings every model and baseline on
    every case would take hours on 2 cores. The default preset studies a sample, before dropping a candidate, says
    so, and the split takes it; a budget that cannot hold even the smallest sample is still refused."""
    fp = _fp(cases=277524, size=50, patients=279)
    plan = make_plan(_classifier_study(), fp, TWO_CORES, preset="default")
    assert plan.estimate_seconds <= 55 * 60 and 5000 <= plan.max_cases < 277524
    assert [s.name for s in plan.searches] == ["lite0", "resnet18"]  # both candidates kept
    assert plan.notes[0].startswith(f"scaled down: the study uses about {plan.max_cases} of its 277524 cases")
    applied = apply_plan(_classifier_study(), plan)
    assert applied.config["max_cases"] == plan.max_cases
    assert applied.train_config(applied.candidates[0], data="/x", out="/o").max_cases == plan.max_cases
    # a larger budget takes more cases; a set that fits takes all of them
    assert make_plan(_classifier_study(), fp, TWO_CORES, budget_minutes=120).max_cases > plan.max_cases
    small = make_plan(_classifier_study(), _fp(cases=3000), TWO_CORES, budget_minutes=60)
    assert small.max_cases is None and "max_cases" not in apply_plan(_classifier_study(), small).config
    with pytest.raises(BudgetError, match=r"\(5000 images, 2 CPUs\): the minimum is about \d+ min"):
        make_plan(_classifier_study(), fp, TWO_CORES, budget_minutes=3)


def test_a_budget_explains_fewer_cases_before_the_comparison_gives_anything_up(monkeypatch):
    monkeypatch.setitem(timemodel.EXPLAIN_PASSES, 2, 60 * timemodel.EXPLAIN_PASSES[2])  # as dear as a 3D study's
    study, fp = _study(), _fp(cases=300)
    full = make_plan(study, fp, TWO_CORES, budget_minutes=1000)
    assert full.explain_cases == 4 and full.explain_seconds > full.estimate_seconds / 2
    budget = (full.estimate_seconds - 0.6 * full.explain_seconds) / 60  # fits with a quarter of the explanations
    plan = make_plan(study, fp, TWO_CORES, budget_minutes=budget)
    assert plan.explain_cases == 1 and plan.explain_seconds == pytest.approx(full.explain_seconds / 4)
    assert (plan.folds, plan.epochs, [s.name for s in plan.searches]) == (3, 8, ["lite0", "resnet18"])
    assert "scaled down: explained cases per fold and model 4 -> 1" in " ".join(plan.notes)
    assert apply_plan(study, plan).explain_cases == 1 and apply_plan(study, full).explain_cases == 4


@pytest.mark.parametrize(
    ("volume", "patch"), [((128, 128, 40), 32), ((64, 64, 40), 32), ((30, 32, 16), 32), ((512, 512, 130), 64)]
)
def test_sliding_windows_are_counted_as_monai_places_them(volume, patch):
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    roi = (patch,) * 3
    interval = _get_scan_interval(volume, roi, 3, (timemodel.SLIDING_WINDOW_OVERLAP,) * 3)
    assert timemodel.sliding_windows(volume, patch) == len(dense_patch_slices(volume, roi, interval))


def test_a_3d_validation_case_costs_a_pass_per_sliding_window():
    knobs = SimpleNamespace(
        size=32, batch_size=2, workers=1, folds=3, inner=0.2, loaders=1.0, epochs=4, val_ms=0.0, factors={},
        machine=1.0, volume=(32, 32, 32),
    )  # fmt: skip
    args = ("unet_tiny", 60, 3, "memory", 1, 1.0, 0.0)
    one = timemodel.fold_seconds(args[0], knobs, *args[1:])
    fifty = timemodel.fold_seconds(args[0], SimpleNamespace(**{**vars(knobs), "volume": (128, 128, 40)}), *args[1:])
    eval_ms = timemodel.MS_PER_PATCH_3D["unet_tiny"][1]
    val_cases = 4 * 60 * 2 / 3 * 0.2 + 60 / 3  # the inner cases every epoch, the outer ones once
    assert fifty - one == pytest.approx(val_cases * 49 * eval_ms / 1000)
