"""Brain tumour regions (WT / TC / ET) from a Decathlon or nnU-Net ``dataset.json``, not only BraTS' numbering.

The Decathlon's brain tumours and nnU-Net's BraTS store 1 oedema, 2 non-enhancing, 3 enhancing:
TC = {2, 3}, where BraTS' own numbering (1 necrosis, 2 oedema, 4 enhancing) has TC = {1, 4}.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorbench.baselines import segment_fold
from tumorbench.data.catalog import scan
from tumorbench.evaluation.metrics import brats_region_masks
from tumorbench.study.generic import detect, generic_study
from tumorbench.transforms import PreprocessConfig, build_transforms

SHAPE = (20, 20, 8)
DECATHLON = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
NNUNET = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
MSD_REGIONS = [[1, 2, 3], [2, 3], [3]]


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Oedema (1) around a non-enhancing core (2) with an enhancing rim spot (3); brightness by label."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[4:16, 4:16, 1:7] = 1
    labels[7:13, 7:13, 2:6] = 2
    labels[7 + seed % 2 : 10, 7:10, 3:5] = 3
    image = np.choose(labels, [30.0, 90.0, 150.0, 220.0]) + np.random.default_rng(seed).normal(0, 3, SHAPE)
    return image.astype(np.float32), labels


def _dataset(root: Path, labels: dict, cases: int = 4) -> Path:
    for i in range(cases):
        image, mask = _case(i)
        for folder, array in (("imagesTr", image), ("labelsTr", mask)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            name = f"BRATS_{i:03d}_0000.nii.gz" if folder == "imagesTr" else f"BRATS_{i:03d}.nii.gz"
            nib.save(nib.Nifti1Image(array, np.eye(4)), root / folder / name)
    spec = {"channel_names": {"0": "FLAIR"}, "labels": labels, "numTraining": cases, "file_ending": ".nii.gz"}
    if "whole tumor" in labels:
        spec["regions_class_order"] = [1, 2, 3]
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def test_region_sets_against_hand_written_masks():
    labels = np.array([0, 1, 2, 3, 3, 2, 1, 0])
    regions = brats_region_masks(labels, regions=MSD_REGIONS)
    np.testing.assert_array_equal(regions["WT"], labels > 0)
    np.testing.assert_array_equal(regions["TC"], (labels == 2) | (labels == 3))
    np.testing.assert_array_equal(regions["ET"], labels == 3)
    brats = brats_region_masks(np.array([0, 1, 2, 4]))  # BraTS' numbering unchanged: TC = {1, 4}
    np.testing.assert_array_equal(brats["TC"], [False, True, False, True])
    with pytest.raises(ValueError, match=r"values \[4\] not in \[0, 1, 2, 3\]"):
        brats_region_masks(np.array([0, 4]), regions=MSD_REGIONS)
    with pytest.raises(ValueError, match="regions must be three sets"):
        PreprocessConfig(label_map="binary", regions=MSD_REGIONS)


@pytest.mark.parametrize("labels", [DECATHLON, NNUNET], ids=["decathlon", "nnunet-regions"])
def test_a_brain_tumour_dataset_json_makes_a_region_study(tmp_path, labels, capsys):
    root = _dataset(tmp_path / "Dataset001_Brain", labels)
    frame = scan(root)
    detection = detect(frame)
    assert detection.template == "brats" and "WT 1+2+3, TC 2+3, ET 3" in detection.why
    study = generic_study(str(root), "smoke")
    pre = study.config["preprocess"]
    assert pre["label_map"] == "brats" and pre["regions"] == MSD_REGIONS
    # the deep models' chain: WT / TC / ET channels as np.isin makes them
    chain = build_transforms(PreprocessConfig(**pre, normalize="none"), spatial_dims=3)
    row = frame.iloc[0].to_dict()
    mask = chain({"image": list(row["image"]), "mask": row["mask"], "case_id": "c", "patient_id": "p"})["mask"]
    _, truth = _case(int(row["case_id"][-1]))
    for channel, members in zip(mask.numpy(), MSD_REGIONS):
        np.testing.assert_array_equal(channel > 0.5, np.isin(truth, members))
    # the baselines: the same regions, per region Dice by hand
    out = segment_fold(
        "otsu", frame.iloc[1:], frame.iloc[:1], mask_dir=tmp_path / "pred", brats_regions=4, regions=MSD_REGIONS
    )
    pred = np.load(tmp_path / "pred" / f"{row['case_id']}.npz")["mask"]
    for name, members in zip(("WT", "TC", "ET"), MSD_REGIONS):
        target = np.isin(truth, members)
        dice = 2 * (pred & target).sum() / (pred.sum() + target.sum())
        assert out[f"dice_{name}"].iloc[0] == pytest.approx(dice)
