"""The planner's probe: each model's step timed here, as its trials build it, against the time model's constants."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from ray import tune

from tumorbench.study.probe import FACTOR_RANGE, MACHINE_RANGE, describe, machine_factor, probe_factors
from tumorbench.study.spec import Candidate, Study
from tumorbench.study.timemodel import MAX_FIXED_SHARE, fixed_share, model_ms


def _study():
    lr = {"lr": tune.loguniform(1e-4, 1e-2)}
    return Study(
        name="p",
        task="classification",
        data="/x",
        n_folds=3,
        config={"preprocess": {"spatial_size": [64, 64]}},
        baselines=("logreg",),
        candidates=(
            Candidate("small", {"model": "resnet18_tiny"}, lr, "random", 1),
            Candidate("big", {"model": "resnet18"}, lr, "random", 1),
            Candidate("big_again", {"model": "resnet18", "lr": 1e-3}, lr, "random", 1),
        ),
    )


def test_probe_times_each_distinct_model_once_and_divides_by_its_constant():
    torch.set_num_threads(2)
    found = probe_factors(_study(), {"channels": 3, "classes": {"no": 5, "yes": 5}}, 64, 2)
    assert torch.get_num_threads() == 2  # the driver's threads are given back
    assert sorted(found) == ["resnet18", "resnet18_tiny"]
    for name, f in found.items():
        train, evaluate = model_ms(name, 64, 2)
        assert f["train"] == pytest.approx(min(max(f["train_ms"] / train, FACTOR_RANGE[0]), FACTOR_RANGE[1]), rel=0.02)
        assert f["eval"] == pytest.approx(min(max(f["eval_ms"] / evaluate, FACTOR_RANGE[0]), FACTOR_RANGE[1]), rel=0.02)
        assert f["train_measured"] == pytest.approx(f["train_ms"] / train, rel=0.02)
    # resnet18 has ~16x the tiny variant's width squared: its step is measured several times slower
    assert found["resnet18"]["train_ms"] > 2 * found["resnet18_tiny"]["train_ms"]


def test_probe_times_each_model_at_the_smallest_size_the_plan_may_choose_too():
    """At 96 px the plan may go down to 64: each model is timed there too and the share of its step that did not
    fall with the pixels is kept; at 64 px, the smallest size, there is nothing to time."""
    study = replace(_study(), candidates=_study().candidates[:1])
    fp = {"channels": 3, "classes": {"no": 5, "yes": 5}}
    (entry,) = probe_factors(study, fp, 96, 2).values()
    assert (entry["size"], entry["smaller"]) == (96, 64)
    for kind in ("train", "eval"):
        expected = fixed_share(entry[f"{kind}_ms"], entry[f"smaller_{kind}_ms"], 64 / 96, 2)
        assert entry[f"fixed_{kind}"] == pytest.approx(expected, abs=0.02)  # from the ms rounded to 0.01
        assert 0.0 <= entry[f"fixed_{kind}"] <= MAX_FIXED_SHARE
    assert entry["smaller_train_ms"] < entry["train_ms"]  # a smaller input is cheaper: it was timed at 64 px
    (small,) = probe_factors(study, fp, 64, 2).values()
    assert "size" not in small and "fixed_train" not in small
    assert "(timed at 64 too): resnet18_tiny " in describe({"resnet18_tiny": entry})


def test_a_model_that_cannot_take_the_smaller_size_keeps_the_default_share(monkeypatch):
    """The second timing is only an estimate: a model that fails at 64 px is planned as before, not refused."""
    from tumorbench.study import probe

    def fails_small(model, task, batch, size, **kwargs):
        if size < 96:
            raise RuntimeError("Input size too small for the network's levels")
        return 10.0, 3.0

    monkeypatch.setattr(probe, "measure_step", fails_small)
    study = replace(_study(), candidates=_study().candidates[:1])
    (entry,) = probe_factors(study, {"channels": 3, "classes": {"no": 5, "yes": 5}}, 96, 2).values()
    assert entry["train_ms"] == 10.0 and "fixed_train" not in entry and "size" not in entry
    assert model_ms("resnet18_tiny", 64, 2, {"resnet18_tiny": entry}) == pytest.approx(
        tuple(v * entry[k] for v, k in zip(model_ms("resnet18_tiny", 64, 2), ("train", "eval"), strict=True))
    )


def test_the_plan_note_says_which_factor_was_clipped_and_what_was_measured():
    note = describe(
        {
            "unet": {"train": 1.27, "train_measured": 1.27, "eval": 0.5},
            "resnet50": {"train": FACTOR_RANGE[1], "train_measured": 7.31, "eval": 5.0},
            "tiny": {"train": FACTOR_RANGE[0], "train_measured": 0.05, "eval": 0.2},
        }
    )
    assert note == (
        "step times measured here (train, vs the time model's constants): unet 1.27x, "
        "resnet50 5.00x (measured 7.31x: clipped to 0.2-5x), tiny 0.20x (measured 0.05x: clipped to 0.2-5x); "
        "start-up, set-up, decoding and scoring at their geometric mean, 1.08x"  # (1.27 x 5 x 0.2) ** (1/3)
    )


def test_the_machine_factor_is_the_geometric_mean_of_the_models_within_its_range():
    assert machine_factor(None) == machine_factor({}) == 1.0  # no probe (GPUs): the constants as measured
    assert machine_factor({"a": {"train": 4.0}, "b": {"train": 0.25}}) == 1.0
    assert machine_factor({"a": {"train": 0.7}, "b": {"train": 0.9}}) == pytest.approx((0.7 * 0.9) ** 0.5, abs=1e-3)
    assert machine_factor({"a": {"train": 3.0}, "b": {"train": 3.0}}) == MACHINE_RANGE[1]
