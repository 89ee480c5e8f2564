"""LUNA16's nodule list drawn as masks: ball size and place against SimpleITK's own geometry; the set it makes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

from tumorbench.cli import main
from tumorbench.data.catalog import scan
from tumorbench.data.fingerprint import compute_fingerprint
from tumorbench.data.integrity import case_grid_problem
from tumorbench.data.io import read_image
from tumorbench.errors import DataError

SPACING = (0.7, 0.7, 1.25)
ORIGIN = (-180.0, -170.0, -320.0)  # LPS, as LUNA16's headers give it


def _scan(path, shape=(96, 96, 64)):
    image = sitk.GetImageFromArray(np.full(shape[::-1], -1000, np.int16))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return image


def _luna(root):
    first = _scan(root / "subset0" / "1.3.6.1.4.1.14519.5.2.1.6279.6001.111.mhd")
    _scan(root / "subset1" / "1.3.6.1.4.1.14519.5.2.1.6279.6001.222.mhd")
    centre = first.TransformContinuousIndexToPhysicalPoint((40.0, 50.0, 30.0))  # LPS mm
    rows = [
        ("1.3.6.1.4.1.14519.5.2.1.6279.6001.111", *centre, 12.0),
        ("1.3.6.1.4.1.14519.5.2.1.6279.6001.111", ORIGIN[0] - 50, ORIGIN[1], ORIGIN[2], 6.0),  # outside the scan
        ("1.3.6.1.4.1.14519.5.2.1.6279.6001.999", 0.0, 0.0, 0.0, 5.0),  # a scan not downloaded
    ]
    lines = ["seriesuid,coordX,coordY,coordZ,diameter_mm"] + [",".join(map(str, r)) for r in rows]
    (root / "CSVFILES").mkdir()
    (root / "CSVFILES" / "annotations.csv").write_text("\n".join(lines) + "\n")
    return first, centre


def test_each_nodule_is_a_ball_of_its_diameter_at_its_centre_and_the_set_is_paired(tmp_path):
    first, centre = _luna(tmp_path / "LUNA16")
    with pytest.raises(DataError, match=r"subset0, subset1 with an annotations.csv: .*`tumorbench data luna16 "):
        scan(str(tmp_path / "LUNA16"))  # not two classes, subset0 and subset1 (CSVFILES/ beside them)
    result = CliRunner().invoke(main, ["data", "luna16", str(tmp_path / "LUNA16"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "2 scans, 1 with nodules (1 nodules drawn); 1 nodule centre(s) outside" in result.output
    assert "1 annotation(s) of scans not found" in result.output

    mask = read_image(tmp_path / "out" / "masks" / "1.3.6.1.4.1.14519.5.2.1.6279.6001.111.mha").array
    assert mask[40, 50, 30] == 1  # the centre, at the index SimpleITK put it
    expected = math.pi / 6 * 12.0**3 / math.prod(SPACING)  # the ball's volume in voxels
    assert abs(mask.sum() / expected - 1) < 0.05
    radius_voxels_i = 6.0 / SPACING[0]
    assert mask[40 + int(radius_voxels_i) - 1, 50, 30] == 1 and mask[40 + int(radius_voxels_i) + 2, 50, 30] == 0
    assert read_image(tmp_path / "out" / "masks" / "1.3.6.1.4.1.14519.5.2.1.6279.6001.222.mha").array.sum() == 0

    frame = scan(str(tmp_path / "out"))
    assert frame["layout"].iloc[0] == "paired" and len(frame) == 2
    raw = sum(p.stat().st_size for p in (tmp_path / "LUNA16").rglob("*.raw"))  # 2 x 96 x 96 x 64 x int16
    assert raw == 2 * 96 * 96 * 64 * 2 and compute_fingerprint(frame)["disk_bytes"] > raw  # + headers, masks
    assert all(case_grid_problem(row) is None for row in frame.to_dict("records"))
    np.testing.assert_array_equal(
        read_image(frame["image"].iloc[0][0]).array, sitk.GetArrayFromImage(first).transpose(2, 1, 0)
    )


def test_bad_nodule_lists_are_refused_by_name(tmp_path):
    from tumorbench.data.luna16 import write_masks

    _scan(tmp_path / "subset0" / "1.2.3.mhd")
    with pytest.raises(DataError, match="no annotations.csv"):
        write_masks(tmp_path, tmp_path / "out")
    (tmp_path / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ\n1.2.3,0,0,0\n")
    with pytest.raises(DataError, match=r"annotations\.csv: missing column\(s\) diameter_mm"):
        write_masks(tmp_path, tmp_path / "out")
    (tmp_path / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,0,x,0,5\n")
    with pytest.raises(DataError, match="1 row"):
        write_masks(tmp_path, tmp_path / "out")
