"""mini-MIAS made a class-folder set: circles from the bottom-left corner, one patient per pair of films."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tumorbench.cli import main
from tumorbench.data.catalog import detect_layout, scan
from tumorbench.data.io import read_image
from tumorbench.data.mias import read_info
from tumorbench.errors import DataError

INFO = """MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY (MIAS) DATABASE
5th,6th columns: x,y image-coordinates of centre of abnormality. Coordinate system origin is the bottom-left corner.

mdb001 G CIRC B 40 20 6
mdb002 G NORM
mdb003 D SPIC M 10 50 5
mdb004 D NORM
mdb005 F CIRC B 20 20 4
mdb005 F CIRC B 45 45 3
mdb006 F CALC M *NOTE 3*
mdb007 G NORM
"""


def _mias(root):
    rng = np.random.default_rng(0)
    films = {}
    (root / "all-mias").mkdir(parents=True)
    for n in (1, 2, 3, 4, 5, 6, 9):  # mdb007 listed, not there; mdb009 there, not listed
        films[n] = rng.integers(0, 256, (64, 64), dtype=np.uint8)
        Image.fromarray(films[n]).save(root / "all-mias" / f"mdb{n:03d}.pgm")
    (root / "all-mias" / "Info.txt").write_text(INFO)
    return films


def _disc(row, col, radius, shape=(64, 64)):
    """A hand-drawn disc, pixel by pixel."""
    mask = np.zeros(shape, np.uint8)
    for i in range(shape[0]):
        for j in range(shape[1]):
            mask[i, j] = (i - row) ** 2 + (j - col) ** 2 <= radius**2
    return mask


def test_convert_draws_circles_from_the_bottom_and_pairs_films(tmp_path):
    films = _mias(tmp_path / "mias")
    with pytest.raises(DataError, match=r"\.pgm 7, \.txt 1; PGM films: mini-MIAS .*`tumorbench data mias "):
        detect_layout(tmp_path / "mias")
    result = CliRunner().invoke(main, ["data", "mias", str(tmp_path / "mias"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "6 films (benign 2, malignant 2, normal 2) of 3 women; 4 lesion circle(s) drawn; 1 abnormal" in result.output
    assert (
        "1 film(s) listed in Info.txt not found: mdb007" in result.output and "1 image(s) not listed" in result.output
    )
    out = tmp_path / "out"
    again = CliRunner().invoke(main, ["data", "mias", str(tmp_path / "mias"), "--out", str(out)])
    assert again.exit_code == 1 and "is not empty: pass --overwrite to write into it" in again.output
    frame = scan(out).set_index("case_id")
    assert detect_layout(out)[0] == "image-folder"
    assert frame["label"].to_dict() == {
        "benign/mdb001.png": "benign",
        "benign/mdb005.png": "benign",
        "malignant/mdb003.png": "malignant",
        "malignant/mdb006.png": "malignant",
        "normal/mdb002.png": "normal",
        "normal/mdb004.png": "normal",
    }
    patient = frame["patient_id"]
    assert patient["benign/mdb001.png"] == patient["normal/mdb002.png"] != patient["malignant/mdb003.png"]
    assert patient["malignant/mdb003.png"] == patient["normal/mdb004.png"]
    assert patient["benign/mdb005.png"] == patient["malignant/mdb006.png"] and patient.nunique() == 3

    def mask(case):
        return read_image(out / case.replace(".png", "_mask.png")).array[0] // 255

    assert np.array_equal(mask("benign/mdb001.png"), _disc(63 - 20, 40, 6))  # y = 20 from the bottom: row 43
    assert np.array_equal(mask("malignant/mdb003.png"), _disc(63 - 50, 10, 5))
    assert np.array_equal(mask("benign/mdb005.png"), _disc(43, 20, 4) | _disc(18, 45, 3))
    assert not mask("normal/mdb002.png").any()  # a normal film: an empty mask, a negative case
    assert not (out / "malignant" / "mdb006_mask.png").exists()  # spread calcifications: no circle, no mask
    assert np.array_equal(read_image(out / "benign" / "mdb001.png").array[0], films[1])
    film = tmp_path / "mias" / "all-mias" / "mdb004.pgm"
    film.write_bytes(film.read_bytes()[:-100])  # cut short: named, skipped, the others written
    result = CliRunner().invoke(main, ["data", "mias", str(tmp_path / "mias"), "--out", str(tmp_path / "again")])
    assert result.exit_code == 1 and "skipped mdb004.pgm: corrupt, truncated" in result.output
    assert "5 films (benign 2, malignant 2, normal 1)" in result.output


def test_a_bad_info_line_is_named(tmp_path):
    def read(text):
        (tmp_path / "Info.txt").write_text(text)
        return read_info(tmp_path / "Info.txt")

    with pytest.raises(DataError, match=r"line 2: severity 'X' of a CIRC, not B or M"):
        read("mdb001 G NORM\nmdb002 G CIRC X 1 2 3\n")
    with pytest.raises(DataError, match=r"line 1: abnormality 'LUMP', not one of"):
        read("mdb001 G LUMP B\n")
    with pytest.raises(DataError, match="no line starting with a reference"):
        read("ref x y\n")
    films = read("mdb001 G NORM\nmdb001 G CIRC B 5 5 2\n")  # a lesion listed after NORM: the film is benign
    assert films["mdb001"].label == "benign" and films["mdb001"].circles == [(5.0, 5.0, 2.0)]
