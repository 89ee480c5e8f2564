"""Search spaces without Ray running: dotted overrides of TrainConfig and checks against each searcher."""

from __future__ import annotations

import math

import pytest

from tumorbench.training.config import TrainConfig, TrainConfigError
from tumorbench.transforms import AugmentConfig, PreprocessConfig
from tumorbench.tuning.schedulers import make_scheduler
from tumorbench.tuning.search import make_searcher, plan_resources
from tumorbench.tuning.space import (
    SearchSpaceError,
    apply_params,
    decode_params,
    domain_kind,
    grid_size,
    searcher_space,
    validate_space,
)
from tumorbench.tuning.trial import FoldRecord, best_checkpoint, summary_metrics

tune = pytest.importorskip("ray.tune")


@pytest.fixture
def base(tmp_path) -> TrainConfig:
    return TrainConfig(
        task="classification",
        model="resnet18_tiny",
        data=str(tmp_path / "d"),
        out=str(tmp_path / "o"),
        lr=1e-3,
        preprocess=PreprocessConfig(normalize="zscore"),
    )


def test_apply_params_overrides_top_level_nested_and_presets(base):
    config = apply_params(
        base,
        {
            "lr": 0.02,
            "batch_size": 4,
            "pretrained": True,
            "preprocess.contrast": True,
            "preprocess.normalize": "minmax",
            "augment": "strong",
            "model_kwargs.drop_rate": 0.3,
        },
    )
    assert (config.lr, config.batch_size, config.pretrained) == (0.02, 4, True)
    assert (config.preprocess.contrast, config.preprocess.normalize) == ("clahe", "minmax")
    assert config.preprocess.denoise == base.preprocess.denoise  # untouched fields kept
    # The preset by name equals AugmentConfig's own strong preset in 2D: 30 degrees, both axes flipped, p 0.7.
    assert config.augment == AugmentConfig.preset("strong", spatial_dims=2)
    assert (config.augment.rotate_deg, config.augment.flip_axes, config.augment.prob) == (30.0, (0, 1), 0.7)
    assert config.model_kwargs == {"drop_rate": 0.3}
    assert apply_params(base, {"preprocess.contrast": False}).preprocess.contrast == "none"
    # A preset then one field of it; the base itself is never changed.
    tweaked = apply_params(base, {"augment": "light", "augment.prob": 0.9})
    assert (tweaked.augment.rotate_deg, tweaked.augment.prob) == (10.0, 0.9)
    assert base.lr == 1e-3 and base.augment == AugmentConfig()


def test_apply_params_refuses_unknown_keys_and_bad_values(base):
    with pytest.raises(SearchSpaceError, match=r"unknown search key 'preprocess\.clahe'.*preprocess\.contrast"):
        apply_params(base, {"preprocess.clahe": True})
    with pytest.raises(SearchSpaceError, match="unknown search key 'data'"):
        apply_params(base, {"data": "/elsewhere"})  # the data is the study's, not a hyperparameter
    with pytest.raises(SearchSpaceError, match="lr must be positive"):
        apply_params(base, {"lr": -1.0})
    with pytest.raises(SearchSpaceError, match="preset name"):
        apply_params(base, {"augment": "extreme"})
    with pytest.raises(SearchSpaceError, match="contrast must be one of"):
        apply_params(base, {"preprocess.contrast": "sharpen"})


def test_domain_kinds_and_grid_size():
    space = {
        "lr": tune.loguniform(1e-4, 1e-2),
        "wd": tune.uniform(0, 1),
        "n": tune.randint(1, 4),
        "a": tune.choice(["none", "light", "strong"]),
        "g": tune.grid_search([1, 2]),
        "c": 5,
        "q": tune.quniform(0, 1, 0.1),
    }
    kinds = {k: domain_kind(v) for k, v in space.items()}
    assert kinds == {
        "lr": "loguniform",
        "wd": "uniform",
        "n": "randint",
        "a": "choice",
        "g": "grid_search",
        "c": "constant",
        "q": "quniform",
    }
    assert grid_size({"a": space["a"], "g": space["g"], "c": 5}) == 3 * 2


def test_validate_space_per_searcher(base):
    with pytest.raises(SearchSpaceError, match="grid search needs grid_search/choice values, got uniform for lr"):
        validate_space({"lr": tune.uniform(1e-4, 1e-2), "batch_size": tune.choice([8, 16])}, "grid", base)
    with pytest.raises(SearchSpaceError, match="Bayesian.*grid_search for augment"):
        validate_space({"augment": tune.grid_search(["none", "light"])}, "bayes", base)
    with pytest.raises(SearchSpaceError, match=r"unknown search key 'learning_rate'; valid keys: .*\blr\b"):
        validate_space({"learning_rate": tune.uniform(0.1, 0.2)}, "random", base)
    with pytest.raises(SearchSpaceError, match="model_kwargs.drop_rate"):  # listed from the model's keywords
        validate_space({"model_kwargs.width": 3}, "random", base)
    # Range bounds are checked against the config too: a non-positive learning rate is refused up front.
    with pytest.raises(SearchSpaceError, match="lr must be positive"):
        validate_space({"lr": tune.uniform(-0.1, 0.1)}, "bayes", base)
    with pytest.raises(SearchSpaceError, match="unknown searcher 'hyperband'"):
        validate_space({}, "hyperband", base)
    good = {
        "lr": tune.loguniform(1e-4, 1e-2),
        "augment": tune.choice(["none", "medium"]),
        "preprocess.contrast": tune.choice([True, False]),
        "model_kwargs.drop_rate": tune.uniform(0.0, 0.5),
    }
    for searcher in ("random", "bayes", "bayes-gp"):
        validate_space(good, searcher, base)
    validate_space({"augment": tune.grid_search(["none", "light"]), "lr": 1e-3}, "grid", base)


def test_searcher_space_enumerates_grids_and_labels_tuples():
    space = {
        "a": tune.choice(["x", "y"]),
        "g": tune.grid_search([1, 2]),
        "model_kwargs.channels": tune.choice([(4, 8), (8, 16)]),
    }
    grid, table = searcher_space(space, "grid")
    assert grid["a"] == {"grid_search": ["x", "y"]} and grid["g"] == {"grid_search": [1, 2]}
    assert table == {"model_kwargs.channels": {"[4, 8]": (4, 8), "[8, 16]": (8, 16)}}
    random_space, _ = searcher_space(space, "random")
    assert domain_kind(random_space["g"]) == "choice" and random_space["g"].categories == [1, 2]
    assert decode_params({"model_kwargs.channels": "[8, 16]", "a": "x"}, table) == {
        "model_kwargs.channels": (8, 16),
        "a": "x",
    }


def test_searchers_and_schedulers():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    space = {"lr": tune.loguniform(1e-4, 1e-2)}
    assert isinstance(make_searcher("random", space, "auc_mean", "max", 0, 6), BasicVariantGenerator)
    bayes = make_searcher("bayes", space, "auc_mean", "max", 0, 9)
    assert isinstance(bayes, OptunaSearch) and bayes._sampler._n_startup_trials == 3
    assert type(make_searcher("bayes-gp", space, "auc_mean", "max", 0, 9)._sampler).__name__ == "GPSampler"
    with pytest.raises(SearchSpaceError, match="grid search needs"):
        make_searcher("grid", space, "auc_mean", "max", 0, 1)
    asha = make_scheduler("asha", max_t=24, metric="auc_mean", mode="max", grace_period=2)
    assert isinstance(asha, ASHAScheduler) and asha._time_attr == "epochs_spent" and asha._max_t == 24
    assert [rung[0] for rung in asha._brackets[0]._rungs] == [8, 2]  # epochs 2 and 8 of 3 folds x 8
    assert isinstance(make_scheduler("none", max_t=5, metric="auc_mean", mode="max", grace_period=1), FIFOScheduler)


def test_plan_resources_fits_trials_to_the_cluster(base):
    plan = plan_resources(base, 2.0, 0.0, trial_cpus=0.1, max_concurrent=4)
    # 2 CPUs: 2 trials would leave 0.9 each for workers, 3 only 0.57, 4 only 0.4 (< 0.5): 3 fit.
    assert plan.concurrent == 3 and plan.worker == {"CPU": math.floor((2 - 0.3) / 3 * 100) / 100}
    assert plan_resources(base, 2.0, 0.0).worker == {"CPU": 1.0}
    two = base.replace(workers=2)
    assert plan_resources(two, 2.0, 0.0).worker == {"CPU": 0.95}
    with pytest.raises(Exception, match="one trial needs"):
        plan_resources(base.replace(workers=4), 2.0, 0.0)
    gpu = plan_resources(base, 16.0, 2.0, max_concurrent=4)
    assert gpu.concurrent == 2 and gpu.worker["GPU"] == 1.0
    # the largest node's CPUs: one worker may take a 2-core node but its trial's sliver, and no more than
    # one node of two 1-CPU nodes has (sized from the 2-CPU total alone it would fit neither)
    assert plan_resources(base, 2.0, 0.0, node_cpus=2.0).worker == {"CPU": 1.9}
    assert plan_resources(base, 2.0, 0.0, node_cpus=1.0).worker == {"CPU": 1.0}
    assert plan_resources(two, 2.0, 0.0, node_cpus=2.0).worker == {"CPU": 0.95}
    assert plan_resources(base, 32.0, 0.0, node_cpus=16.0).worker == {"CPU": 15.9}
    assert plan_resources(base, 32.0, 4.0, node_cpus=16.0).worker == {"CPU": 4.0, "GPU": 1.0}


def test_summary_metrics_running_mean_and_sd():
    folds = [FoldRecord(0, 0.8, 1, 2, "/c0", {}), FoldRecord(1, 0.6, 0, 3, "/c1", {})]
    first = summary_metrics(folds[:1], "auc")
    assert first["folds_done"] == 1 and first["auc_mean"] == 0.8 and math.isnan(first["auc_sd"])
    both = summary_metrics(folds, "auc")
    assert both["auc_mean"] == pytest.approx(0.7) and both["auc_sd"] == pytest.approx(math.sqrt(0.02))
    assert (both["epochs_spent"], both["fold_0_auc"], both["fold_1_auc"]) == (5, 0.8, 0.6)


def test_epoch_metrics_running_mean_takes_the_fold_in_training():
    from tumorbench.training.crossval import epoch_metrics

    done = [FoldRecord(0, 0.8, 1, 4, "/c0", {})]
    report = epoch_metrics(done, "auc", 0.6, 2)  # fold 1, 2 epochs in, best so far 0.6
    assert report["auc_mean"] == pytest.approx(0.7) and report["folds_done"] == 1
    assert report["epochs_spent"] == 6 and report["fold_0_auc"] == 0.8 and "fold_1_auc" not in report
    first = epoch_metrics([], "auc", None, 1)  # nothing scored yet (a NaN epoch)
    assert math.isnan(first["auc_mean"]) and first["folds_done"] == 0 and first["epochs_spent"] == 1


def test_best_checkpoint_by_rays_result_api_never_picks_nan(tmp_path):
    from ray.train import Checkpoint, Result

    def result(scores):
        kept = []
        for epoch, score in enumerate(scores):
            (tmp_path / f"e{epoch}").mkdir(exist_ok=True)
            kept.append((Checkpoint.from_directory(str(tmp_path / f"e{epoch}")), {"hd95": score, "epoch": epoch}))
        return Result(metrics={}, checkpoint=None, error=None, path=str(tmp_path), best_checkpoints=kept)

    # Listed first, a NaN would win Ray's own max/min: it is set aside; inf is a real (worst) distance.
    run = result([math.nan, 4.0, 9.0, math.inf, 2.5, 2.5])
    # Locations are strings: a local path, or a URI when storage is s3:// / gs://.
    assert best_checkpoint(run, "hd95", "min") == (str(tmp_path / "e4"), {"hd95": 2.5, "epoch": 4})  # ties: first
    assert best_checkpoint(run, "hd95", "max")[0] == str(tmp_path / "e3")
    assert best_checkpoint(result([math.nan, math.inf]), "hd95", "min")[0] == str(tmp_path / "e1")
    path, metrics = best_checkpoint(result([math.nan, math.nan]), "hd95", "max")
    assert path == str(tmp_path / "e0") and math.isnan(metrics["hd95"])
    with pytest.raises(TrainConfigError, match="kept no checkpoint"):
        best_checkpoint(result([]), "hd95", "max")


def test_a_search_that_may_stop_trials_needs_the_state_api(monkeypatch):
    from types import SimpleNamespace

    import ray.util.state
    from ray.util.state.exception import ServerUnavailable

    from tumorbench.tuning.resources import ensure_trials_can_stop

    asked = []

    def no_dashboard(**kwargs):
        asked.append(kwargs["address"])
        raise ServerUnavailable("Failed to connect to API server")

    # the connected cluster is asked, not whichever the client finds first on this machine
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(gcs_address="10.0.0.1:6379"))
    monkeypatch.setattr(ray.util.state, "list_nodes", no_dashboard)
    with pytest.raises(TrainConfigError, match=r"answers no State API .*\(ServerUnavailable\)"):
        ensure_trials_can_stop(timeout_s=0)
    assert asked == ["10.0.0.1:6379"]
    monkeypatch.setattr(ray.util.state, "list_nodes", lambda **kwargs: [])
    ensure_trials_can_stop(timeout_s=0)  # a cluster with its dashboard: nothing to say


def test_a_trial_cut_before_its_closing_report_is_rebuilt_from_its_folds(tmp_path):
    import json
    from dataclasses import asdict

    from conftest import tiny_search_config
    from tumorbench.training.crossval import FOLD_RESULT
    from tumorbench.training.nested import write_outer
    from tumorbench.tuning.trial import read_state, recover_state

    trial = tmp_path / "trial_x"
    (trial / "fold_0").mkdir(parents=True)
    (trial / "config.json").write_text(json.dumps(tiny_search_config(tmp_path, trial).to_dict()))
    assert recover_state(str(trial), 2) is None  # no fold finished: nothing to rebuild
    for k in (0, 1):
        fold = trial / f"fold_{k}"
        write_outer(str(fold), {"auc": 0.5 + k / 10}, [{"case_id": f"c{k}", "probs": [0.3, 0.7]}])
        record = FoldRecord(
            k, 0.6 + k / 10, 2, 3, str(fold / "best"), {"auc": 0.6 + k / 10}, outer={"auc": 0.5 + k / 10}
        )
        (fold / FOLD_RESULT).write_text(json.dumps(asdict(record)))
    assert recover_state(str(trial), 3) is None  # fold 2 missing: the trial did not finish
    folds, oof = read_state(recover_state(str(trial), 2))
    assert [(f.fold, f.score, f.outer["auc"]) for f in folds] == [(0, 0.6, 0.5), (1, 0.7, 0.6)]
    assert [(r["case_id"], r["fold"]) for r in oof] == [("c0", 0), ("c1", 1)]
