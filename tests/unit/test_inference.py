"""Offline prediction: training preprocessing, answers at the input geometry, measurements vs references."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.measure import label as sk_label
from skimage.measure import regionprops

from model_packages import make_packages, synthetic_png
from tumorbench.data.writers import write_dicom_series, write_nifti
from tumorbench.inference import Predictor, Preprocessor
from tumorbench.package import read_manifest
from tumorbench.results import mask_file
from tumorbench.transforms import PreprocessConfig, build_transforms
from tumorbench.uploads import UploadError


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("packages")
    return make_packages(root)


def _lps_volume(path, shape=(20, 18, 12, 4), seed=0):
    affine = np.diag([-1.2, -1.0, 1.5, 1.0])  # LPS-like: canonicalization flips i and j
    affine[:3, 3] = [30.0, 20.0, -5.0]
    volume = np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32)
    return write_nifti(path, volume, affine), volume, affine


def _training_chain(package, dims):
    return build_transforms(
        PreprocessConfig(**read_manifest(package).preprocess), None, spatial_dims=dims, with_mask=False, train=False
    )


def test_preprocessing_is_the_training_chain(packages, tmp_path):
    png = synthetic_png(tmp_path / "a.png")
    nifti, _, _ = _lps_volume(tmp_path / "v.nii.gz")
    for package, path, dims in ((packages["seg2d"], png, 2), (packages["seg3d"], nifti, 3)):
        expected = _training_chain(package, dims)({"image": str(path)})["image"]
        prepared = Preprocessor.from_package(package).prepare_file(path)
        assert torch.equal(prepared.image.as_tensor(), expected.as_tensor())


def test_classification_matches_a_direct_forward_pass(packages, tmp_path):
    png = synthetic_png(tmp_path / "a.png", seed=3)
    predictor = Predictor.from_package(packages["cls2d"])
    x = _training_chain(packages["cls2d"], 2)({"image": str(png)})["image"].as_tensor()[None]
    with torch.no_grad():
        expected = torch.softmax(predictor.model(x), dim=1)[0].numpy()
    result = predictor.predict_file(png)
    np.testing.assert_allclose([result.probabilities["no"], result.probabilities["yes"]], expected, rtol=1e-5)
    assert result.label == ("yes" if expected[1] > 0.5 else "no")
    assert predictor.predict_file(png, threshold=0.999).label == "no"


def test_2d_mask_is_resized_back_and_measured(packages, tmp_path):
    png = synthetic_png(tmp_path / "a.png", size=(100, 120))
    predictor = Predictor.from_package(packages["seg2d"])
    x = _training_chain(packages["seg2d"], 2)({"image": str(png)})["image"].as_tensor()[None]
    with torch.no_grad():
        small = torch.sigmoid(predictor.model(x))
    reference = F.interpolate(small, size=(100, 120), mode="bilinear", align_corners=False)[0, 0].numpy() > 0.5
    result = predictor.predict_file(png)
    assert result.mask.shape == (1, 100, 120) and result.mask.dtype == np.uint8
    assert np.mean(result.mask[0] != reference) < 1e-3  # equal but for pixels within rounding of the threshold
    summary = result.summary()
    regions = regionprops(sk_label(result.mask[0], connectivity=1))
    assert summary["area_mm2"] == float(result.mask.sum()) and not summary["spacing_known"] and summary["notes"]
    assert summary["lesion_count"] == len(regions)
    boxes = {tuple(r.bbox) for r in regions}
    assert {tuple(les["bbox_min"] + les["bbox_max"]) for les in summary["lesions"]} <= boxes
    assert summary["lesions"][0]["voxels"] == max(r.area for r in regions)


def _oblique_permuted() -> np.ndarray:
    """i mostly S, j mostly P, k mostly R (a sagittal-style stack), turned 15 degrees about z."""
    t = np.radians(15)
    turn = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = turn @ np.array([[0, 0, 1.3], [0, -0.9, 0], [1.1, 0, 0]])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    return affine


@pytest.mark.parametrize("oblique", [False, True], ids=["lps", "oblique-permuted"])
def test_3d_restore_undoes_canonical_orientation(packages, tmp_path, oblique):
    nifti, volume, _ = _lps_volume(tmp_path / "v.nii.gz", shape=(9, 8, 7))
    if oblique:
        nifti = write_nifti(tmp_path / "o.nii.gz", volume, _oblique_permuted())
    manifest = read_manifest(packages["ct3d"])
    identity = Preprocessor(type(manifest)(**{**manifest.__dict__, "preprocess": {"normalize": "none"}}))
    prepared = identity.prepare_file(nifti)
    # nibabel's own reorientation is the reference for the forward step (axes permuted and flipped)
    canonical = np.asarray(nib.as_closest_canonical(nib.load(nifti)).dataobj)
    assert canonical.shape == ((7, 8, 9) if oblique else (9, 8, 7))
    np.testing.assert_array_equal(prepared.image[0].numpy(), canonical)
    restored = identity.restore(prepared, prepared.image)  # back to the file's own voxel order
    np.testing.assert_array_equal(restored[0], volume)


def test_3d_volume_from_true_spacing(packages, tmp_path):
    nifti, _, affine = _lps_volume(tmp_path / "v.nii.gz")
    result = Predictor.from_package(packages["seg3d"]).predict_file(nifti)
    assert result.mask.shape == (3, 20, 18, 12)
    summary = result.summary()
    voxel_ml = 1.2 * 1.0 * 1.5 / 1000
    assert summary["volume_ml"] == pytest.approx(result.mask[0].sum() * voxel_ml, rel=1e-6)
    assert [c["name"] for c in summary["channels"]] == ["WT", "TC", "ET"]
    assert summary["lesion_count"] == sk_label(result.mask[0], connectivity=1).max()
    media_type, blob = mask_file(result)
    saved = nib.Nifti1Image.from_bytes(gzip.decompress(blob))
    assert media_type == "application/gzip"
    np.testing.assert_array_equal(np.moveaxis(np.asarray(saved.dataobj), -1, 0), result.mask)
    np.testing.assert_allclose(saved.affine, affine)


def test_single_dicom_slice_on_a_2d_model_uses_pixel_spacing(packages, tmp_path):
    affine = np.diag([0.7, 0.9, 2.0, 1.0])
    pixels = np.random.default_rng(2).integers(0, 200, (30, 20, 1)).astype(float)  # (columns, rows, 1)
    dicom = write_dicom_series(tmp_path / "s", pixels, affine, patient_id="P", modality="MR", rescale_intercept=0)[0]
    result = Predictor.from_package(packages["cls2d"]).predict_file(dicom)
    assert set(result.probabilities) == {"no", "yes"}
    prepared = Preprocessor.from_package(packages["cls2d"]).prepare_file(dicom)
    assert prepared.shape == (20, 30) and prepared.spacing == pytest.approx((0.9, 0.7)) and prepared.spacing_known


def test_png_mask_file_round_trip(packages, tmp_path):
    result = Predictor.from_package(packages["seg2d"]).predict_file(synthetic_png(tmp_path / "a.png", size=(40, 50)))
    media_type, blob = mask_file(result)
    decoded = np.asarray(Image.open(io.BytesIO(blob)))
    assert media_type == "image/png"
    np.testing.assert_array_equal(decoded, result.mask[0] * 255)


def test_inputs_that_do_not_fit_the_model(packages, tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(grey)
    nifti, _, _ = _lps_volume(tmp_path / "v.nii.gz", shape=(8, 8, 8))
    cases = (
        (packages["seg2d"], grey, "has 1 channels"),
        (packages["seg2d"], nifti, "takes 2D images"),
        (packages["seg3d"], grey, "takes 3D volumes"),
        (packages["seg3d"], nifti, "has 1 channels"),
    )
    for package, path, words in cases:
        with pytest.raises(UploadError) as caught:
            Preprocessor.from_package(package).prepare_file(path)
        assert caught.value.status == 422 and words in str(caught.value)
