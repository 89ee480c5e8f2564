"""Organ + tumour masks: a generic segmentation study segments the tumour's labels, deep models and baselines alike.

Read as "every non-zero label", LiTS / KiTS / the Decathlon's liver task scored liver segmentation as
tumour detection.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorbench.baselines import read_case, segment_fold
from tumorbench.data.catalog import scan
from tumorbench.errors import TumorbenchError
from tumorbench.study.cli import parse_args
from tumorbench.study.generic import generic_study, mask_labels
from tumorbench.study.target import choose_target

SHAPE = (24, 24, 8)


def _organ_and_tumour(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Air 0 around a body (40), an organ (label 1, 100) and a tumour in it (label 2, 200)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, np.uint8)
    labels[6:18, 6:18, 1:7] = 1
    a, b = 9 + seed % 2, 10 + seed % 3
    labels[a : a + 4, b : b + 4, 2:6] = 2
    image = np.choose(labels, [40.0, 100.0, 200.0]) + rng.normal(0, 4, SHAPE)
    body = np.zeros(SHAPE, bool)
    body[2:22, 2:22, :] = True
    return np.where(body, image, 0.0).astype(np.float32), labels


def _dataset(root: Path, labels: dict, cases: int = 4) -> Path:
    for i in range(cases):
        image, mask = _organ_and_tumour(i)
        for folder, array, name in (("imagesTr", image, f"liver_{i}.nii.gz"), ("labelsTr", mask, f"liver_{i}.nii.gz")):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, np.eye(4)), root / folder / name)
    training = [
        {"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"} for i in range(cases)
    ]
    spec = {"name": "Liver", "modality": {"0": "CT"}, "labels": labels, "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


@pytest.mark.parametrize(
    ("labels", "expected", "says"),
    [
        (
            {"0": "background", "1": "liver", "2": "cancer"},
            (2,),
            "named as lesions in dataset.json (liver 1; cancer 2)",
        ),
        ({"background": 0, "kidney": [1, 2], "masses": [2], "tumor": 2}, (2,), "named as lesions"),  # v2 regions
        ({"0": "background", "1": "edema", "2": "enhancing tumour"}, None, None),  # a brain tumour's whole extent
        ({"0": "background", "1": "PZ", "2": "TZ"}, None, "no dataset.json label is named as a lesion"),
        ({"background": 0, "whole tumor": [1, 2], "tumor core": [2]}, None, "declares regions"),  # nnU-Net BraTS
    ],
)
def test_the_target_follows_dataset_json_label_names(tmp_path, labels, expected, says):
    target = choose_target(scan(_dataset(tmp_path / "d", labels)), mask_labels)
    assert target.labels == expected
    assert (target.note is None) if says is None else says in target.note


def test_unnamed_label_maps_get_a_note_and_the_option_is_checked(tmp_path):
    root = _dataset(tmp_path / "d", {"0": "background", "1": "liver", "2": "cancer"})
    (root / "dataset.json").unlink()  # now paired imagesTr/labelsTr: no names
    frame = scan(root)
    target = choose_target(frame, mask_labels)
    assert target.labels is None and "the masks hold labels [1, 2]" in target.note
    assert choose_target(frame, mask_labels, (2,)).labels == (2,)
    with pytest.raises(TumorbenchError, match=r"--foreground-labels 3: the first mask holds labels \[1, 2\]"):
        choose_target(frame, mask_labels, (3,))
    with pytest.raises(TumorbenchError, match=r"binary \(0/255\)"):  # read as {0, 1}: nothing to choose
        choose_target(frame, lambda _: {0, 255}, (255,))
    assert parse_args(["--data", "x", "--foreground-labels", "3,2"]).foreground_labels == (3, 2)
    with pytest.raises(SystemExit):
        parse_args(["--data", "x", "--foreground-labels", "0"])


def test_deep_models_and_baselines_score_the_same_tumour_target(tmp_path, capsys):
    root = _dataset(tmp_path / "liver", {"0": "background", "1": "liver", "2": "cancer"})
    study = generic_study(str(root), "smoke")
    assert "target: label(s) [2]" in capsys.readouterr().out
    preprocess = study.config["preprocess"]
    assert preprocess["label_map"] == "binary" and preprocess["foreground_labels"] == [2]
    frame = scan(root)
    row = frame.iloc[0].to_dict()
    _, target, _ = read_case(row, foreground=preprocess["foreground_labels"])
    _, labels = _organ_and_tumour(0)
    np.testing.assert_array_equal(target, labels == 2)
    # Otsu on organ (100) + tumour (200): scored against the tumour, its Dice is the hand-computed one.
    out = segment_fold("otsu", frame.iloc[1:], frame.iloc[:1], mask_dir=tmp_path / "pred", foreground_labels=[2])
    pred = np.load(tmp_path / "pred" / f"{row['case_id']}.npz")["mask"]
    dice = 2 * (pred & (labels == 2)).sum() / (pred.sum() + (labels == 2).sum())
    assert out["dice"].iloc[0] == pytest.approx(dice)
    whole = segment_fold("otsu", frame.iloc[1:], frame.iloc[:1])  # every label: the organ too
    assert whole["dice"].iloc[0] != pytest.approx(dice)


def test_ct_without_a_ct_channel_name_is_windowed_by_its_air(tmp_path, capsys):
    root = _dataset(tmp_path / "mr", {"0": "background", "1": "liver", "2": "cancer"})
    (root / "dataset.json").unlink()  # paired: the channel is "image"
    assert generic_study(str(root), "smoke").config["preprocess"].get("normalize", "zscore") == "zscore"
    for path in (root / "imagesTr").iterdir():  # the same cases with air at -1000 HU around the body
        image = nib.load(path)
        array = np.asanyarray(image.dataobj)
        nib.save(nib.Nifti1Image(np.where(array == 0, -1000.0, array).astype(np.float32), image.affine), path)
    assert generic_study(str(root), "smoke").config["preprocess"]["normalize"] == "ct_window"
