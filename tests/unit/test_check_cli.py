"""`tumorbench data check|synth|preview|split` end to end, on small and real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tumorbench.cli import main
from tumorbench.data.check import check_dataset


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _lgg_like(root, slices):
    """Write an LGG-layout folder; ``slices`` maps a file stem to (image size, mask size, tumor)."""
    folder = root / "TCGA_AA_0001_20000101"
    folder.mkdir(parents=True)
    for stem, (image_size, mask_size, tumor) in slices.items():
        Image.new("RGB", image_size, (30, 40, 50)).save(folder / f"{stem}.png")
        if mask_size is not None:
            mask = np.zeros(mask_size[::-1], np.uint8)
            mask[2:4, 2:4] = 255 * tumor
            Image.fromarray(mask).save(folder / f"{stem}_mask.png")
    return folder


def test_check_collects_every_problem_and_exits_nonzero(tmp_path):
    folder = _lgg_like(
        tmp_path,
        {
            "TCGA_AA_0001_20000101_1": ((8, 8), (8, 8), True),
            "TCGA_AA_0001_20000101_2": ((8, 8), (6, 8), False),  # mask shape mismatch (PIL sizes are width, height)
            "TCGA_AA_0001_20000101_3": ((8, 8), None, False),  # mask missing
            "TCGA_AA_0001_20000101_4": ((8, 8), (8, 8), False),
        },
    )
    corrupt = folder / "TCGA_AA_0001_20000101_4.png"
    corrupt.write_bytes(corrupt.read_bytes()[:40])  # truncated
    result = _run("data", "check", str(tmp_path))
    assert result.exit_code == 1
    assert "problems  3" in result.output
    assert "TCGA_AA_0001_20000101_2_mask.png: mask shape (8, 6) does not match image shape (8, 8)" in result.output
    assert "TCGA_AA_0001_20000101_3.png: slice without its mask" in result.output
    assert "TCGA_AA_0001_20000101_4.png" in result.output
    report = json.loads(_run("data", "check", str(tmp_path), "--json").output)
    # The usable cases are still summarized: 3 scanned cases, 1 of them with tumor.
    assert report["cases"] == 3 and report["with_tumor"] == 1


def test_unknown_layout_folder_is_a_clear_error(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    result = CliRunner().invoke(main, ["data", "check", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path}: cannot detect a layout" in result.output


def test_synth_then_check_then_preview_then_split(tmp_path):
    brain, lung = tmp_path / "brain", tmp_path / "lung"
    assert _run("data", "synth", "--task", "brain-mri", "--out", str(brain), "--cases", "3").exit_code == 0
    assert _run("data", "synth", "--task", "lung-ct", "--out", str(lung), "--cases", "4").exit_code == 0
    brain_report = check_dataset(brain)
    assert (brain_report["layout"], brain_report["cases"], brain_report["problems"]) == ("brats", 3, [])
    assert brain_report["channels"] == {"t1 + t1ce + t2 + flair": 3}
    lung_report = check_dataset(lung)
    assert (lung_report["layout"], lung_report["cases"], lung_report["problems"]) == ("dicom", 4, [])
    assert lung_report["labels"] == {"benign": 2, "malignant": 2}  # dealt to the fraction 0.5 exactly
    out = tmp_path / "preview.png"
    assert _run("data", "preview", str(brain), "--out", str(out)).exit_code == 0
    picture = np.asarray(Image.open(out).convert("RGB")).astype(int)
    red = (picture[..., 0] > 200) & (picture[..., 1] < 80) & (picture[..., 2] < 80)
    assert red.sum() > 50  # the tumor outlines were drawn
    split = tmp_path / "splits.json"
    refused = _run("data", "split", str(lung), "--folds", "3", "--out", str(split))  # a fold without a class
    assert refused.exit_code == 2 and "3 folds need at least 3 patients of every class" in refused.output
    assert _run("data", "split", str(lung), "--folds", "2", "--out", str(split)).exit_code == 0
    doc = json.loads(split.read_text())
    assert sum(len(f["val"]) for f in doc["folds"]) == 4


@pytest.mark.realdata
def test_real_lgg_check(lgg_root):
    report = check_dataset(lgg_root, duplicates=False)
    # Independent count of slices with tumor straight from the mask files.
    tumor = sum(np.asarray(Image.open(p)).max() > 0 for p in lgg_root.glob("*/*_mask.png"))
    assert (report["patients"], report["cases"], report["with_tumor"]) == (39, 1308, tumor)
    assert report["problems"] == []


@pytest.mark.realdata
def test_real_yes_no_check_finds_the_duplicate_groups(yes_no_root):
    report = check_dataset(yes_no_root)
    assert report["cases"] == 253 and report["labels"] == {"yes": 155, "no": 98}
    assert len(report["duplicate_groups"]) == 22
    for group in report["duplicate_groups"]:
        # Byte-identical images stay within one class in this set.
        assert len({case.split("/")[0] for case in group}) == 1


@pytest.mark.realdata
def test_real_brats_check_reports_naming_and_labels(brats_root):
    report = check_dataset(brats_root, duplicates=False)
    cases = {c["case_id"]: c for c in report["details"]["cases"]}
    assert report["cases"] == 3 and report["with_mask"] == 2
    assert cases["BraTS-GLI-00001-000"]["naming"] == "2023" and not cases["BraTS-GLI-00001-000"]["labelled"]
    assert cases["BraTS2021_00006"]["mask_labels"] == [0, 1, 2, 4]


def test_cli_layouts_are_the_catalogs():
    from tumorbench.cli_data import LAYOUT_CHOICES
    from tumorbench.data.catalog import LAYOUTS

    assert sorted(LAYOUT_CHOICES) == sorted(("auto", *LAYOUTS))  # `data check --layout csv` was refused


def test_data_labels_writes_a_dicom_trees_class_folders_as_labels(tmp_path):
    from tumorbench.data.catalog import scan
    from tumorbench.data.writers import write_dicom_series
    from tumorbench.errors import TumorbenchError
    from tumorbench.study.generic import detect

    root = tmp_path / "ct"
    for label in ("benign", "malignant"):
        for n in range(2):
            volume = np.full((8, 8, 3), 40.0 * (n + 1))
            write_dicom_series(
                root / label / f"case{n}", volume, np.eye(4), patient_id=f"{label[0]}{n}", uid_seed=label + str(n)
            )
    with pytest.raises(TumorbenchError, match="`tumorbench data labels PATH` writes it; .*`tumorbench data cbis-ddsm "):
        detect(scan(root))  # no labels yet: the refusal names the command
    result = _run("data", "labels", str(root))
    assert result.exit_code == 0 and "4 series (benign 2, malignant 2)" in result.output
    frame = scan(root)
    assert dict(zip(frame["case_id"], frame["label"])) == {
        f"{label}/case{n}": label for label in ("benign", "malignant") for n in range(2)
    }
    again = _run("data", "labels", str(root))
    assert again.exit_code == 1 and "exists: pass --overwrite" in again.output
    by_folder = _run("data", "labels", str(root), "--patient-level", "2", "--overwrite")  # case0 in both classes
    assert "4 series (benign 2, malignant 2), 2 patients" in by_folder.output
    assert sorted(scan(root)["patient_id"]) == ["case0", "case0", "case1", "case1"]


def test_data_labels_reads_classes_and_patients_from_a_deep_image_tree(tmp_path):
    """BreakHis: breast/<class>/SOB/<subtype>/<patient>/<magnification>/*.png; a BUSI mask beside an image."""
    from tumorbench.data.catalog import scan
    from tumorbench.errors import DataError

    root = tmp_path / "BreaKHis_v1" / "histology_slides" / "breast"
    for label, subtype in (("benign", "adenosis"), ("malignant", "ductal_carcinoma")):
        for patient in (f"SOB_{label[0].upper()}_14-1", f"SOB_{label[0].upper()}_14-2"):
            for mag in ("40X", "100X"):
                folder = root / label / "SOB" / subtype / patient / mag
                folder.mkdir(parents=True)
                for n in range(2):
                    Image.new("RGB", (12, 8), (40 * n, 90, len(patient))).save(folder / f"{patient}-{mag}-{n}.png")
    Image.new("L", (12, 8), 255).save(folder / f"{patient}-{mag}-1_mask.png")  # the last folder's second image
    with pytest.raises(
        DataError, match=r"first images sit 8 folders down: `tumorbench data labels .* --label-level 4`"
    ):
        scan(tmp_path)
    result = _run("data", "labels", str(tmp_path), "--label-level", "4", "--patient-level", "7")
    assert result.exit_code == 0, result.output
    assert "16 images (benign 8, malignant 8), 4 patients" in result.output
    frame = scan(tmp_path, strict=True).set_index("case_id")
    assert frame.attrs["layout"] == "csv" and len(frame) == 16
    case = "BreaKHis_v1/histology_slides/breast/malignant/SOB/ductal_carcinoma/SOB_M_14-2/100X/SOB_M_14-2-100X-1.png"
    assert (frame.loc[case, "label"], frame.loc[case, "patient_id"]) == ("malignant", "SOB_M_14-2")
    assert str(frame.loc[case, "mask"]).endswith("SOB_M_14-2-100X-1_mask.png") and frame["mask"].notna().sum() == 1
    subtypes = _run("data", "labels", str(root), "--label-level", "3", "--patient-level", "4", "--overwrite")
    assert "(adenosis 8, ductal_carcinoma 8), 4 patients" in subtypes.output
    too_deep = CliRunner().invoke(main, ["data", "labels", str(root), "--patient-level", "6", "--overwrite"])
    assert too_deep.exit_code == 2 and "16 of 16 image(s) sit fewer than 6 folder(s) below it: no patient" in (
        too_deep.output
    )
