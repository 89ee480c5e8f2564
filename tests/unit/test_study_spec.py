"""Studies refuse what cannot run before any trial starts."""

from __future__ import annotations

import sys

import pytest

from conftest import REPO_ROOT, write_blob_folders
from tumorbench.study.runner import prepare
from tumorbench.study.spec import Candidate, Study, StudyError

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import studies  # noqa: E402


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
