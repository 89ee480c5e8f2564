"""Studies refuse what cannot run before any trial starts."""

from __future__ import annotations

import pytest

from conftest import write_blob_folders
from tumorbench.study import presets as studies
from tumorbench.study.runner import prepare
from tumorbench.study.spec import Candidate, Study, StudyError
from tumorbench.tuning.space import apply_params


def _study(**changes) -> Study:
    values = dict(
        name="t",
        task="classification",
        data="unused",
        n_folds=2,
        candidates=(Candidate("resnet18_tiny", {"model": "resnet18_tiny"}),),
        baselines=("logreg",),
    )
    return Study(**(values | changes))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"candidates": (Candidate("x", {"model": "resnet19"}),)}, "unknown model 'resnet19'"),
        ({"candidates": (Candidate("x", {"model": "unet_tiny"}),)}, "unet_tiny is a segmentation model"),
        ({"candidates": (Candidate("x", {"model": "resnet18_tiny"}, searcher="hyperband"),)}, "unknown searcher"),
        ({"baselines": ("otsu",)}, r"unknown classification baselines \['otsu'\]"),
        ({"scheduler": "pbt"}, "unknown scheduler 'pbt'"),
        ({"task": "detection"}, "unknown task"),
        # Settings and spaces are typed when the study is built, naming the candidate.
        (
            {"config": {"preprocess": {"contrst": "clahe"}}},
            r"resnet18_tiny: unknown training settings \['preprocess\.contrst'\]",
        ),
        ({"config": {"lr": -1}}, "resnet18_tiny: lr must be positive"),
        (
            {"candidates": (Candidate("x", {"model": "resnet18_tiny", "augment": "wild"}),)},
            "x: augment must be a preset",
        ),
        (
            {"candidates": (Candidate("x", {"model": "resnet18_tiny"}, {"learning_rate": 0.1}),)},
            "x: unknown search key 'learning_rate'",
        ),
    ],
)
def test_invalid_studies_are_refused(changes, message):
    with pytest.raises(StudyError, match=message):
        _study(**changes)


def test_more_folds_than_patients_is_refused_before_training(tmp_path):
    write_blob_folders(tmp_path / "data", n=2)
    with pytest.raises(StudyError, match="5 folds need at least 5 patients"):
        prepare(_study(data=str(tmp_path / "data"), n_folds=5), tmp_path / "out")


def test_every_shipped_study_builds_at_every_preset():
    for build in studies.STUDIES.values():
        for preset in ("smoke", "default", "full"):
            study = build(preset)
            assert len(study.candidates) >= 2 and study.baselines
            assert study.explain_cases == (1 if preset == "smoke" else 4)  # a first look explains one case a fold
    assert len(studies.synthetic("default").candidates) >= 3
    with pytest.raises(StudyError, match="unknown preset"):
        studies.lgg("huge")


def test_shipped_studies_read_shared_data_from_the_environment_else_beside_the_checkout(monkeypatch, tmp_path):
    from conftest import REPO_ROOT

    monkeypatch.delenv("TUMORBENCH_SHARED_DATA", raising=False)
    assert studies.lgg("smoke").data == str(REPO_ROOT.parent / "shared" / "data" / "lgg")
    monkeypatch.setenv("TUMORBENCH_SHARED_DATA", str(tmp_path))
    assert studies.brats("smoke").data == str(tmp_path / "brats")


def test_compare_py_copied_alone_runs_from_the_installed_package(tmp_path):
    import shutil
    import subprocess
    import sys

    from conftest import REPO_ROOT

    script = shutil.copy(REPO_ROOT / "experiments" / "compare.py", tmp_path / "compare.py")  # as `ray submit` does
    done = subprocess.run(
        [sys.executable, script, "--study", "nope", "--preset", "smoke"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "unknown study 'nope' (choose from synthetic, lgg" in done.stderr
    from tumorbench.study.cli import build_study, parse_args

    args = ["--study", "lidc", "--preset", "smoke", "--seed", "7", "--data", str(tmp_path), "--require-deid"]
    study = build_study(parse_args(args))
    assert (study.name, study.seed, study.data, study.synthetic, study.require_deid) == (
        "lidc",
        7,
        str(tmp_path),
        None,
        True,
    )


def test_study_candidate_and_search_values_merge_by_one_rule(tmp_path):
    shared = {
        "preprocess": {"spatial_size": [64, 64], "normalize": "minmax"},
        "augment": "light",
        "lr": 2e-3,
        "model_kwargs": {"drop_rate": 0.1},
    }
    candidate = Candidate(
        "c",
        {
            "model": "resnet18_tiny",
            "preprocess": {"contrast": "clahe"},
            "augment.prob": 0.9,
            "model_kwargs.drop_path_rate": 0.05,
        },
    )
    study = _study(config=shared, candidates=(candidate,))
    config = study.train_config(candidate, data=str(tmp_path / "d"), out=str(tmp_path / "o"))
    # One nested key of the candidate keeps the study's others (it used to replace the whole dict).
    assert (config.preprocess.contrast, config.preprocess.spatial_size, config.preprocess.normalize) == (
        "clahe",
        (64, 64),
        "minmax",
    )
    assert (config.augment.rotate_deg, config.augment.flip_axes, config.augment.prob) == (10.0, (0, 1), 0.9)
    assert config.model_kwargs == {"drop_rate": 0.1, "drop_path_rate": 0.05}
    assert (config.lr, config.task, config.n_folds, config.data) == (2e-3, "classification", 2, str(tmp_path / "d"))
    # Search values are a third layer under the same rule: dotted keys, key by key.
    trial = apply_params(config, {"preprocess.spatial_size": [32, 32], "lr": 1e-3})
    assert (trial.preprocess.spatial_size, trial.preprocess.contrast, trial.lr) == ((32, 32), "clahe", 1e-3)
    # The same settings written nested in one layer or dotted in another give one config.
    dotted = _study(
        config={
            "preprocess.spatial_size": [64, 64],
            "preprocess.normalize": "minmax",
            "augment": "light",
            "lr": 2e-3,
            "model_kwargs.drop_rate": 0.1,
        },
        candidates=(candidate,),
    )
    assert dotted.train_config(candidate, data=str(tmp_path / "d"), out=str(tmp_path / "o")) == config


def test_manifest_records_spec_statistics_and_data_content(tmp_path):
    import json

    from tumorbench.data.splits import content_hash
    from tumorbench.study.manifest import ALPHA, N_BOOT, write_manifest

    write_blob_folders(tmp_path / "data", n=4)
    study = _study(data=str(tmp_path / "data"))
    frame, doc, _, _ = prepare(study, tmp_path / "out")
    write_manifest(study, tmp_path / "out", "smoke", doc, 1.0, {}, {"git_commit": None, "git_dirty": None})
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["statistics"]["n_boot"] == N_BOOT == 2000 and manifest["statistics"]["alpha"] == ALPHA == 0.05
    assert manifest["spec"]["n_folds"] == 2 and manifest["spec"]["candidates"][0]["config"]["model"] == "resnet18_tiny"
    assert manifest["data"]["content_hash"] == content_hash(frame)
