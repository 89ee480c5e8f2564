"""CBIS-DDSM made class-folder sets: tables matched by first folder, the mask told by its size, films downsized."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from planar_dicom import write_planar
from tumorbench.cli import main
from tumorbench.data.catalog import detect_layout, scan
from tumorbench.data.cbis_ddsm import resized
from tumorbench.data.io import read_image
from tumorbench.data.locked_test import locked_test_overlaps

UID = "1.3.6.1.4.1.9590.100.1.2.{}"  # the tables name series by UID; a download names them by description
HEADER = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,"
    "mass margins,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"
)


def _row(patient, film, lesion, pathology):
    full, roi = f"{film}/{UID.format(1)}/{UID.format(2)}/000000.dcm", f"{film}_{lesion}/{UID.format(3)}/{UID.format(4)}"
    return (
        f"{patient},3,LEFT,CC,{lesion},mass,OVAL,CIRCUMSCRIBED,4,{pathology},4,{full},{roi}/000000.dcm,{roi}/000001.dcm"
    )


def _film(root, film, pixels):
    write_planar(root / film / "07-20-2016-DDSM-74994" / "1.000000-full mammogram images-24515" / "1-1.dcm", pixels,
                 Modality="MG", PatientID=film)  # fmt: skip


def _roi(root, film, lesion, mask, *, mask_first=True):
    """An ROI folder: the cropped lesion and the mask, in either order and under either name."""
    folder = root / f"{film}_{lesion}" / "07-21-2016-DDSM-NA-09887" / "1.000000-ROI mask images-12345"
    cropped = np.full((20, 16), 900, np.uint16)
    files = [("mask", (mask * 255).astype(np.uint8)), ("cropped", cropped)]
    for n, (_, pixels) in enumerate(files if mask_first else files[::-1], start=1):
        write_planar(folder / f"1-{n}.dcm", pixels, Modality="MG")


def _cbis(root):
    rng = np.random.default_rng(0)
    films, masks = {}, {}
    for name in ("Mass-Training_P_00001_LEFT_CC", "Calc-Test_P_00002_RIGHT_MLO", "Mass-Training_P_00003_LEFT_MLO"):
        films[name] = rng.integers(100, 4000, (120, 80)).astype(np.uint16)
        _film(root / "CBIS-DDSM", name, films[name])
    for film, lesion, (r0, r1, c0, c1), mask_first in (
        ("Mass-Training_P_00001_LEFT_CC", 1, (10, 30, 20, 40), True),
        ("Mass-Training_P_00001_LEFT_CC", 2, (60, 90, 40, 60), False),  # the mask second: told by its size
        ("Calc-Test_P_00002_RIGHT_MLO", 1, (0, 40, 0, 20), True),
    ):
        masks[film, lesion] = np.zeros((120, 80), np.uint8)
        masks[film, lesion][r0:r1, c0:c1] = 1
        _roi(root / "CBIS-DDSM", film, lesion, masks[film, lesion], mask_first=mask_first)
    cropped_only = root / "CBIS-DDSM" / "Mass-Training_P_00003_LEFT_MLO_1" / "x" / "y"  # its mask not downloaded
    write_planar(cropped_only / "1-1.dcm", np.full((20, 16), 900, np.uint16), Modality="MG")
    train = [
        _row("P_00001", "Mass-Training_P_00001_LEFT_CC", 1, "BENIGN"),
        _row("P_00001", "Mass-Training_P_00001_LEFT_CC", 2, "MALIGNANT"),
        _row("P_00003", "Mass-Training_P_00003_LEFT_MLO", 1, "BENIGN_WITHOUT_CALLBACK"),
        _row("P_00004", "Mass-Training_P_00004_RIGHT_CC", 1, "MALIGNANT"),  # listed, not downloaded
    ]
    test = [_row("P_00002", "Calc-Test_P_00002_RIGHT_MLO", 1, "BENIGN").replace("mass,OVAL", "calcification,PLEO")]
    (root / "mass_case_description_train_set.csv").write_text("\n".join([HEADER, *train]) + "\n")
    (root / "calc_case_description_test_set.csv").write_text("\n".join([HEADER, *test]) + "\n")
    (root / "metadata.csv").write_text("Series UID,Collection,Number of Images\n1.2.3,CBIS-DDSM,1\n")  # TCIA's
    (root / "notes.csv").write_bytes(b"\x00\xff\xfe" * 50)  # not a table at all: left out
    (root / "CBIS-DDSM" / "Mass-Training_P_00001_LEFT_CC_1" / "note.dcm").write_bytes(b"not DICOM")  # never the mask
    return films, masks


def test_convert_writes_train_and_test_sets_with_lesion_masks(tmp_path):
    films, masks = _cbis(tmp_path / "cbis")
    command = ["data", "cbis-ddsm", str(tmp_path / "cbis"), "--out", str(tmp_path / "out"), "--max-side", "60"]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    assert "3 films (benign 2, malignant 1; test 1, train 2) of 3 patients, 5 lesions; 2 films with" in result.output
    assert "1 lesion(s) without a mask of its film's size" in result.output
    assert "1 film(s) the tables list are not there (not downloaded?): Mass-Training_P_00004_RIGHT_CC" in result.output
    train, test = tmp_path / "out" / "train", tmp_path / "out" / "test"
    assert detect_layout(train)[0] == detect_layout(test)[0] == "image-folder"
    frame = scan(train).set_index("case_id")
    assert frame["label"].to_dict() == {
        "benign/Mass-Training_P_00003_LEFT_MLO.png": "benign",  # BENIGN_WITHOUT_CALLBACK
        "malignant/Mass-Training_P_00001_LEFT_CC.png": "malignant",  # one of its two lesions is
    }
    film = read_image(train / "malignant" / "Mass-Training_P_00001_LEFT_CC.png").array[0]
    assert film.shape == (60, 40)  # 120 x 80, at most 60 high
    assert np.allclose(film, films["Mass-Training_P_00001_LEFT_CC"].reshape(60, 2, 40, 2).mean(axis=(1, 3)), atol=0.5)
    union = masks["Mass-Training_P_00001_LEFT_CC", 1] | masks["Mass-Training_P_00001_LEFT_CC", 2]
    mask = read_image(train / "malignant" / "Mass-Training_P_00001_LEFT_CC_mask.png").array[0] // 255
    assert np.array_equal(mask, union[::2, ::2])  # both lesions, even when the mask was the ROI folder's second file
    assert not (train / "benign" / "Mass-Training_P_00003_LEFT_MLO_mask.png").exists()  # its mask is missing
    assert locked_test_overlaps(scan(train), scan(test)) == []


def test_a_patient_in_both_sets_has_one_pseudonym_and_one_set_puts_them_together(tmp_path):
    _cbis(tmp_path / "cbis")
    table = tmp_path / "cbis" / "calc_case_description_test_set.csv"
    table.write_text(table.read_text().replace("\nP_00002,", "\nP_00001,"))  # the test film's woman is P_00001
    runner, out = CliRunner(), tmp_path / "out"
    result = runner.invoke(main, ["data", "cbis-ddsm", str(tmp_path / "cbis"), "--out", str(out)])
    assert "1 patient(s) have films in train and in test" in result.output and "--one-set" in result.output
    assert locked_test_overlaps(scan(out / "train"), scan(out / "test")) == ["patient cbis-1 is in both"]
    result = runner.invoke(main, ["data", "cbis-ddsm", str(tmp_path / "cbis"), "--out", str(out / "all"), "--one-set"])
    assert result.exit_code == 0, result.output
    frame = scan(out / "all")
    assert len(frame) == 3 and frame["patient_id"].nunique() == 2


def test_resized_keeps_the_aspect_and_averages_areas():
    image = np.arange(16, dtype=np.float64).reshape(4, 4)
    assert np.array_equal(resized(image, 2), [[2.5, 4.5], [10.5, 12.5]])
    assert resized(image, 8) is image  # never enlarged
    mask = np.zeros((4, 6), np.uint8)
    mask[:2, :3] = 1
    mask[2, 4] = 1  # a quarter of its 2 x 2 block: not kept
    assert resized(mask, 3, mask=True).tolist() == [[True, False, False], [False, False, False]]


def test_a_film_that_cannot_be_read_is_skipped_and_named_the_others_written(tmp_path):
    _cbis(tmp_path / "cbis")
    [film] = (tmp_path / "cbis" / "CBIS-DDSM" / "Mass-Training_P_00003_LEFT_MLO").rglob("*.dcm")
    film.write_bytes(film.read_bytes()[:-5000])  # its pixel data cut short
    command = ["data", "cbis-ddsm", str(tmp_path / "cbis"), "--out", str(tmp_path / "out"), "--workers", "1"]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1
    assert "skipped Mass-Training_P_00003_LEFT_MLO: " in result.output and "1 file(s) skipped" in result.output
    assert "2 films (benign 1, malignant 1; test 1, train 1)" in result.output
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == [
        "Calc-Test_P_00002_RIGHT_MLO.png", "Calc-Test_P_00002_RIGHT_MLO_mask.png",
        "Mass-Training_P_00001_LEFT_CC.png", "Mass-Training_P_00001_LEFT_CC_mask.png",
    ]  # fmt: skip
