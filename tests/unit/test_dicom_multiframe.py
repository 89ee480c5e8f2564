"""Multi-frame DICOM (Enhanced / Legacy Converted Enhanced CT) read as the volume its classic series gives.

The reference: the same slices as single-frame files, read by ``read_dicom_series``, and the
phantom's NIfTI mask on the same grid. highdicom's legacy converter writes the enhanced file.
A multi-frame cine loop is refused in ``test_dicom_codecs``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from tumorbench.data.catalog import scan
from tumorbench.data.dicom import dicom_series_headers, read_dicom_series
from tumorbench.data.io import read_image
from tumorbench.data.synthetic_lung import LungPhantomConfig, make_lung_study
from tumorbench.errors import DataError
from tumorbench.study.generic import detect


@pytest.fixture
def lung(tmp_path) -> Path:
    return make_lung_study(tmp_path / "lung", LungPhantomConfig(cases=2, shape=(24, 20, 16)))


def _enhance(series: Path, out: Path, *, order_seed: int = 3, datasets: list | None = None) -> Path:
    """The series' slices (shuffled: the reader must sort them in space) as one enhanced multi-frame file."""
    datasets = datasets or [pydicom.dcmread(p) for p in sorted(series.glob("*.dcm"))]
    shuffled = [datasets[n] for n in np.random.default_rng(order_seed).permutation(len(datasets))]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=shuffled,
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    enhanced.save_as(out)
    return out


def test_an_enhanced_ct_file_reads_as_its_classic_series(lung):
    case = lung / "SYNTH-LUNG-0000"
    classic = read_dicom_series(case / "scan_0")
    path = _enhance(case / "scan_0", case / "enhanced" / "ct.dcm")
    for image in (read_dicom_series(case / "enhanced"), read_image(path)):
        assert image.array.shape == classic.array.shape == (24, 20, 16) and image.array.dtype == np.float32
        np.testing.assert_array_equal(image.array, classic.array)  # frames sorted in space, rescaled to HU
        np.testing.assert_allclose(image.affine, classic.affine, atol=1e-3)
        np.testing.assert_allclose(image.spacing, classic.spacing, atol=1e-4)
        assert image.meta["frames"] == 16 and image.meta["format"] == "dicom"
        assert image.meta["orientation"] == classic.meta["orientation"]
    mask = read_image(case / "scan_0_nodule_mask.nii.gz")  # the phantom's mask is on the classic grid
    np.testing.assert_allclose(read_image(path).affine, mask.affine, atol=1e-3)
    with pytest.raises(DataError, match="multi-frame series"):  # outlines over it: refused, not misplaced
        dicom_series_headers(case / "enhanced")


def test_a_tree_of_enhanced_files_is_a_3d_study(lung):
    before = detect(scan(lung))  # the classic series
    for case in ("SYNTH-LUNG-0000", "SYNTH-LUNG-0001"):
        folder = lung / case / "scan_0"
        keep = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
        shutil.rmtree(folder)
        _enhance(folder, folder / "ct.dcm", datasets=keep)
    frame = scan(lung)
    assert list(frame["n_slices"]) == [16, 16]
    found = detect(frame)  # one file per series was one slice: a 2D study of 1-slice images
    assert (found.task, found.template) == (before.task, before.template) and found.template.endswith("-3d")
    assert read_image(frame["image"].iloc[0][0]).array.shape == (24, 20, 16)  # the series folder


def test_frames_that_are_not_one_volume_are_refused_naming_the_file(lung):
    folder = lung / "SYNTH-LUNG-0000" / "scan_0"
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))][:4]
    echo = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])  # a second frame at slice 0's position
    echo.SOPInstanceUID = generate_uid()
    path = _enhance(folder, lung / "echoes" / "mr.dcm", datasets=[*datasets, echo])
    with pytest.raises(DataError, match="not one regularly spaced 3D volume") as err:
        read_image(path)
    assert "mr.dcm" in str(err.value)


def test_an_enhanced_upload_is_read_whole_within_the_voxel_limit(lung, tmp_path):
    from tumorbench.uploads import UploadError, UploadLimits, read_upload
    from tumorbench.uploads.headers import MAX_FRAMES

    case = lung / "SYNTH-LUNG-0000"
    path = _enhance(case / "scan_0", tmp_path / "upload")  # an upload has no suffix: the format is sniffed
    image = read_upload(path, label="upload")
    np.testing.assert_array_equal(image.array, read_dicom_series(case / "scan_0").array)
    with pytest.raises(UploadError, match="rows x columns x frames") as err:  # 24 x 20 x 16 voxels declared
        read_upload(path, UploadLimits(max_voxels=24 * 20 * 15), label="upload")
    assert err.value.status == 413
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = MAX_FRAMES + 1  # rows x columns x frames within max_voxels: frames are bounded alone
    ds.PixelData = bytes(ds.Rows * ds.Columns * 2 * (MAX_FRAMES + 1))
    ds.save_as(tmp_path / "many_frames")
    with pytest.raises(UploadError, match="frames of a multi-frame DICOM") as err:
        read_upload(tmp_path / "many_frames", label="upload")
    assert err.value.status == 413
