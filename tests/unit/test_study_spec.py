"""Studies refuse what cannot run before any trial starts."""

from __future__ import annotations

import pytest

from conftest import write_blob_folders
from tumorbench.study import presets as studies
from tumorbench.study.runner import prepare
from tumorbench.study.spec import Candidate, Study, StudyError


def _study(**changes) -> Study:
    values = dict(name="t", task="classification", data="unused", n_folds=2,
                  candidates=(Candidate("resnet18_tiny", {"model": "resnet18_tiny"}),), baselines=("logreg",))
    return Study(**(values | changes))


@pytest.mark.parametrize("changes, message", [
    ({"candidates": (Candidate("x", {"model": "resnet19"}),)}, "unknown model 'resnet19'"),
    ({"candidates": (Candidate("x", {"model": "unet_tiny"}),)}, "unet_tiny is a segmentation model"),
    ({"candidates": (Candidate("x", {"model": "resnet18_tiny"}, searcher="hyperband"),)}, "unknown searcher"),
    ({"baselines": ("otsu",)}, r"unknown classification baselines \['otsu'\]"),
    ({"scheduler": "pbt"}, "unknown scheduler 'pbt'"),
    ({"task": "detection"}, "unknown task"),
])
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
    done = subprocess.run([sys.executable, script, "--study", "nope", "--preset", "smoke"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "unknown study 'nope' (choose from synthetic, lgg" in done.stderr
    from tumorbench.study.cli import build_study, parse_args

    args = ["--study", "lidc", "--preset", "smoke", "--seed", "7", "--data", str(tmp_path), "--require-deid"]
    study = build_study(parse_args(args))
    assert (study.name, study.seed, study.data, study.synthetic, study.require_deid) == ("lidc", 7, str(tmp_path),
                                                                                        None, True)
