"""``tumorbench explain``: overlays, heatmaps on each file's own grid, and the scores table."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from model_packages import make_packages, synthetic_png
from tumorbench.cli import main
from tumorbench.data.writers import write_nifti


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("packages")
    return make_packages(root, ("seg2d", "cls2d", "seg3d"))


def _disc_mask(path, size=(100, 120)):
    yy, xx = np.mgrid[: size[0], : size[1]]
    mask = ((yy - size[0] // 2) ** 2 + (xx - size[1] // 3) ** 2 < (min(size) // 5) ** 2).astype(np.uint8) * 255
    Image.fromarray(mask).save(path)
    return path


def test_explain_png_with_mask_writes_overlay_heatmap_and_scores(packages, tmp_path):
    png, mask = synthetic_png(tmp_path / "a.png"), _disc_mask(tmp_path / "a_mask.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["explain", "--package", str(packages["seg2d"]), str(png), "--mask", str(mask), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores["file"]) == ["a.png"]
    assert set(scores.columns) >= {"pointing", "energy_in_tumor", "deletion_auc", "insertion_auc"}
    assert 0 <= scores["energy_in_tumor"].iloc[0] <= 1 and scores["pointing"].iloc[0] in (0.0, 1.0)
    heat = np.asarray(Image.open(out / "a_gradcam_heatmap.png"))
    assert heat.shape == (100, 120) and heat.max() == 255  # the upload's own grid, scaled to 0..255
    assert Image.open(out / "a_gradcam.png").format == "PNG"


def test_explain_classifier_occlusion_without_mask(packages, tmp_path):
    png = synthetic_png(tmp_path / "b.png", seed=2)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["explain", "--package", str(packages["cls2d"]), str(png), "--method", "occlusion", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(out / "scores.csv")
    assert "pointing" not in scores.columns and scores["deletion_auc"].between(0, 1).all()


def test_explain_volume_writes_nifti_heatmap_on_the_input_grid(packages, tmp_path):
    affine = np.diag([-1.2, -1.0, 1.5, 1.0])
    volume = np.random.default_rng(0).normal(100, 20, (20, 18, 12, 4)).astype(np.float32)
    nifti = write_nifti(tmp_path / "v.nii.gz", volume, affine)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["explain", "--package", str(packages["seg3d"]), str(nifti), "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = nib.Nifti1Image.from_bytes(gzip.decompress((out / "v_gradcam_heatmap.nii.gz").read_bytes()))
    assert saved.shape == (20, 18, 12)
    np.testing.assert_allclose(saved.affine, affine)


def test_explain_rejects_mismatched_masks(packages, tmp_path):
    png = synthetic_png(tmp_path / "c.png")
    result = CliRunner().invoke(
        main,
        [
            "explain",
            "--package",
            str(packages["seg2d"]),
            str(png),
            "--mask",
            str(png),
            "--mask",
            str(png),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "2 --mask for 1 files" in result.output
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small)
    result = CliRunner().invoke(
        main,
        ["explain", "--package", str(packages["seg2d"]), str(png), "--mask", str(small), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2 and "mask shape (10, 10) differs" in result.output
