"""Splits: patient-level, stratified, reproducible, hashed, de-duplicated."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tumorbench.data.catalog import scan
from tumorbench.data.splits import (
    SplitConfig,
    SplitError,
    catalog_hash,
    check_content,
    content_hash,
    find_duplicates,
    fold_frames,
    load_splits,
    make_splits,
    write_splits,
)
from tumorbench.errors import DataError


def _frame(n_patients=20, slices=5, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = "tumor" if p % 3 else "healthy"
        for s in range(int(rng.integers(1, slices + 1))):
            rows.append(
                {
                    "case_id": f"p{p}_s{s}",
                    "patient_id": f"p{p}",
                    "layout": "x",
                    "image": (f"/d/p{p}_{s}.png",),
                    "channels": ("image",),
                    "mask": None,
                    "label": label,
                }
            )
    return pd.DataFrame(rows)


def _patients_per_fold(frame, doc):
    case_to_patient = dict(zip(frame["case_id"], frame["patient_id"]))
    return [{case_to_patient[c] for c in fold["val"]} for fold in doc["folds"]]


def test_no_patient_in_two_folds_and_every_case_once():
    frame = _frame()
    doc = make_splits(frame, SplitConfig(n_folds=4, seed=3))
    fold_patients = _patients_per_fold(frame, doc)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not fold_patients[i] & fold_patients[j]
    all_val = [c for fold in doc["folds"] for c in fold["val"]]
    assert sorted(all_val) == sorted(frame["case_id"]) and len(all_val) == len(set(all_val))
    for k in range(4):
        train, val = fold_frames(frame, doc, k)
        assert not set(train["patient_id"]) & set(val["patient_id"])
        assert len(train) + len(val) == len(frame)


def test_stratification_keeps_class_balance_per_fold():
    frame = _frame(n_patients=30, slices=1)
    doc = make_splits(frame, SplitConfig(n_folds=5, seed=0, stratify="label"))
    overall = (frame["label"] == "healthy").mean()
    labels = dict(zip(frame["case_id"], frame["label"]))
    for fold in doc["folds"]:
        share = np.mean([labels[c] == "healthy" for c in fold["val"]])
        assert abs(share - overall) <= 0.1


def test_same_seed_same_split_and_different_seed_differs():
    frame = _frame()
    a = make_splits(frame, SplitConfig(n_folds=3, seed=1))
    b = make_splits(frame, SplitConfig(n_folds=3, seed=1))
    c = make_splits(frame, SplitConfig(n_folds=3, seed=2))
    assert a == b and a["hash"] == b["hash"]
    assert a["folds"] != c["folds"]


def test_stratify_none_honours_the_seed():
    frame = _frame(n_patients=30, slices=1)  # equal-sized groups: plain GroupKFold ignored any shuffling
    a, b = (make_splits(frame, SplitConfig(n_folds=3, seed=s, stratify="none")) for s in (1, 2))
    assert a == make_splits(frame, SplitConfig(n_folds=3, seed=1, stratify="none"))
    assert [f["val"] for f in a["folds"]] != [f["val"] for f in b["folds"]]


def test_content_hash_sees_bytes_not_names(tmp_path):
    for cls in ("yes", "no"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("L", (4, 4), 10 * i + (cls == "yes")).save(tmp_path / cls / f"{i}.png")
    frame = scan(tmp_path)
    doc = make_splits(frame, SplitConfig(n_folds=2), content=content_hash(frame))
    assert check_content(doc, frame, "splits.json") == doc["dataset"]["content_hash"]
    Image.new("L", (4, 4), 200).save(tmp_path / "no" / "1.png")  # same name, other pixels
    changed = scan(tmp_path)
    assert catalog_hash(changed) == doc["dataset"]["catalog_hash"]
    with pytest.raises(DataError, match="content changed"):
        check_content(doc, changed, "splits.json")


def test_more_folds_than_patients_is_refused():
    with pytest.raises(SplitError, match="5 folds need at least 5 patients; the catalog has 3"):
        make_splits(_frame(n_patients=3), SplitConfig(n_folds=5))


def test_a_class_with_fewer_patients_than_folds_is_refused():
    frame = _frame(n_patients=5)  # healthy: p0 and p3 only
    with pytest.raises(SplitError, match="3 folds need at least 3 patients of every class; class 'healthy' has 2"):
        make_splits(frame, SplitConfig(n_folds=3))
    doc = make_splits(frame, SplitConfig(n_folds=2))
    labels = dict(zip(frame["patient_id"], frame["label"]))
    assert [sorted({labels[p] for p in f["val_patients"]}) for f in doc["folds"]] == [["healthy", "tumor"]] * 2


def test_split_file_round_trip_and_tamper_detection(tmp_path):
    frame = _frame()
    doc = make_splits(frame, SplitConfig(n_folds=3))
    path = write_splits(doc, tmp_path / "splits.json")
    assert load_splits(path, frame) == doc
    edited = json.loads(path.read_text())
    edited["folds"][0]["val"].append("p99_s0")
    path.write_text(json.dumps(edited))
    with pytest.raises(DataError, match="does not match its hash"):
        load_splits(path)
    write_splits(doc, path)
    with pytest.raises(DataError, match="another catalog"):
        load_splits(path, _frame(seed=5))


def test_dedupe_drops_identical_images_before_splitting(tmp_path):
    for cls, values in {"yes": [1, 2, 2, 3], "no": [7, 8, 9, 9, 9]}.items():
        (tmp_path / cls).mkdir()
        for i, v in enumerate(values):
            Image.new("L", (4, 4), v).save(tmp_path / cls / f"{cls}{i}.png")
    frame = scan(tmp_path)
    groups = find_duplicates(frame)
    assert groups == [["no/no2.png", "no/no3.png", "no/no4.png"], ["yes/yes1.png", "yes/yes2.png"]]
    doc = make_splits(frame, SplitConfig(n_folds=2, dedupe=True))
    assert set(doc["excluded"]) == {"no/no3.png", "no/no4.png", "yes/yes2.png"}
    assert sum(len(f["val"]) for f in doc["folds"]) == len(frame) - 3


@pytest.mark.realdata
def test_real_lgg_folds_are_patient_disjoint(lgg_root):
    frame = scan(lgg_root)
    doc = make_splits(frame, SplitConfig(n_folds=5, seed=0, stratify="none"))
    fold_patients = _patients_per_fold(frame, doc)
    assert sum(len(p) for p in fold_patients) == 39
    assert len(set().union(*fold_patients)) == 39


def test_max_cases_splits_a_sample_of_whole_patients_and_excludes_the_rest():
    frame = _frame(n_patients=60, slices=5, seed=1)  # 2 of 3 patients tumor
    doc = make_splits(frame, SplitConfig(n_folds=3, seed=0, max_cases=60))
    used = [c for fold in doc["folds"] for c in fold["val"]]
    assert set(used).isdisjoint(doc["excluded"]) and len(used) + len(doc["excluded"]) == len(frame)
    assert set(doc["excluded"].values()) == {"not in the study's sample of 60 cases"}
    sample = frame[frame["case_id"].isin(used)]
    # whole patients: every slice of a drawn patient, none of the others
    for patient, rows in frame.groupby("patient_id"):
        assert rows["case_id"].isin(used).all() or not rows["case_id"].isin(used).any(), patient
    assert 60 <= len(sample) < 60 + 5  # drawn until each class holds its share, a patient at a time
    tumor_share = (sample["label"] == "tumor").mean()
    assert abs(tumor_share - (frame["label"] == "tumor").mean()) < 0.1
    for k in range(3):
        train, val = fold_frames(frame, doc, k)
        assert len(train) + len(val) == len(sample) and not set(train["patient_id"]) & set(val["patient_id"])
    assert make_splits(frame, SplitConfig(n_folds=3, seed=0, max_cases=60))["folds"] == doc["folds"]
    assert make_splits(frame, SplitConfig(n_folds=3, seed=0, max_cases=10_000))["excluded"] == {}
