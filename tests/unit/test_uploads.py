"""Untrusted uploads: format sniffing, declared-size limits before decoding, safe zips, channel stacking."""

from __future__ import annotations

import gzip
import logging
import struct
import tempfile
import time
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import attack_files
from tumorbench.data.dicom import read_dicom_series
from tumorbench.data.io import read_image_2d
from tumorbench.data.writers import write_dicom_series, write_nifti
from tumorbench.errors import DataError
from tumorbench.uploads import (
    UploadError,
    UploadLimits,
    quiet_pydicom,
    read_upload,
    sniff_format,
    typed_upload,
)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid PNG header declaring a huge image, with one tiny compressed row of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )
    return path


def _affine() -> np.ndarray:
    affine = np.diag([-1.2, -1.0, 1.5, 1.0])
    affine[:3, 3] = [30.0, 20.0, -5.0]
    return affine


def test_sniff_format_reads_bytes_not_names(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "b.jpg")
    write_nifti(tmp_path / "c.nii", np.zeros((3, 3, 3), np.float32), np.eye(4))
    write_nifti(tmp_path / "d.nii.gz", np.zeros((3, 3, 3), np.float32), np.eye(4))
    dicom = write_dicom_series(tmp_path / "s", np.zeros((4, 4, 1)), np.eye(4), patient_id="X")[0]
    with zipfile.ZipFile(tmp_path / "e.zip", "w") as archive:
        archive.write(tmp_path / "a.png", "a.png")
    (tmp_path / "f.png").write_bytes(b"not an image at all")
    renamed = (tmp_path / "a.png").rename(tmp_path / "misleading.dcm")
    found = [
        sniff_format(p)
        for p in (
            renamed,
            tmp_path / "b.jpg",
            tmp_path / "c.nii",
            tmp_path / "d.nii.gz",
            dicom,
            tmp_path / "e.zip",
            tmp_path / "f.png",
        )
    ]
    assert found == ["png", "jpeg", "nifti", "nifti-gz", "dicom", "zip", None]


def test_png_reads_as_pillow_does(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "upload", format="PNG")
    image = read_upload(tmp_path / "upload")
    np.testing.assert_array_equal(image.array, np.moveaxis(rgb, -1, 0).astype(np.float32))
    assert image.meta["format"] == "image2d" and image.meta["path"] == "upload"
    assert list(tmp_path.iterdir()) == [tmp_path / "upload"]  # nothing left beside the input


def test_typed_upload_is_read_in_place(tmp_path, monkeypatch):
    rgb = np.random.default_rng(1).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "f00d", format="PNG")
    write_nifti(tmp_path / "v.nii.gz", np.ones((3, 4, 5), np.float32), _affine())
    (tmp_path / "v.nii.gz").rename(tmp_path / "beef")  # an upload's name carries no suffix
    typed = typed_upload(tmp_path / "f00d")
    assert typed == tmp_path / "f00d.png" and not (tmp_path / "f00d").exists()
    assert typed_upload(typed) == typed  # already typed: unchanged
    # read where it lies: no scratch folder (the per-request cost the serving path avoids)
    monkeypatch.setattr(tempfile, "TemporaryDirectory", None)
    image = read_upload(typed, label="upload")
    np.testing.assert_array_equal(image.array, np.moveaxis(rgb, -1, 0).astype(np.float32))
    assert image.meta["path"] == "upload"
    volume = read_upload(typed_upload(tmp_path / "beef"), label="upload")
    np.testing.assert_allclose(volume.affine, _affine())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beef.nii.gz", "f00d.png"]  # nothing beside them


def test_declared_sizes_refused_before_decoding(tmp_path):
    with pytest.raises(UploadError) as png:
        read_upload(_bomb_png(tmp_path / "bomb.png", 8_000, 8_000))  # over our 40 M pixel limit
    with pytest.raises(UploadError) as huge:
        read_upload(_bomb_png(tmp_path / "huge.png", 60_000, 60_000))  # Pillow's own bomb check fires first
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.uint8)
    (tmp_path / "bomb.nii").write_bytes(header.binaryblock + b"\x00" * 4 + b"\x00" * 64)
    with pytest.raises(UploadError) as nifti:
        read_upload(tmp_path / "bomb.nii")
    assert (png.value.status, huge.value.status, nifti.value.status) == (413, 413, 413)
    assert "64,000,000" in str(png.value) and "(4000, 4000, 4000)" in str(nifti.value)


def test_truncated_and_non_finite_files_are_422(tmp_path):
    Image.fromarray(np.full((40, 40), 7, np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    volume = np.ones((4, 4, 4), np.float32)
    volume[1, 2, 3] = np.nan
    volume[0, 0, 0] = np.inf
    write_nifti(tmp_path / "nan.nii.gz", volume, np.eye(4))
    data = (tmp_path / "nan.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    for name, words in (("cut.png", "truncated"), ("nan.nii.gz", "2 pixel values are NaN"), ("cut.nii.gz", "")):
        with pytest.raises(UploadError) as caught:
            read_upload(tmp_path / name, label="upload")
        assert caught.value.status == 422 and words in str(caught.value)
        assert str(tmp_path) not in str(caught.value)  # temporary paths never reach the message


def test_zip_safety(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("../../etc/x.dcm", b"x")
    with zipfile.ZipFile(tmp_path / "big.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.dcm", b"\x00" * 3_000_000)  # ~3 kB compressed
    with zipfile.ZipFile(tmp_path / "mixed.zip", "w") as archive:
        archive.writestr("a.txt", b"hello")
    (tmp_path / "cut.zip").write_bytes((tmp_path / "big.zip").read_bytes()[:100])
    limits = UploadLimits(max_unpacked_bytes=1_000_000)
    statuses = {}
    for name in ("evil", "big", "mixed", "cut"):
        with pytest.raises(UploadError) as caught:
            read_upload(tmp_path / f"{name}.zip", limits)
        statuses[name] = caught.value.status
    assert statuses == {"evil": 422, "big": 413, "mixed": 415, "cut": 422}
    assert not (tmp_path.parent / "etc").exists()


def test_zipped_dicom_series_matches_folder_reader(tmp_path):
    volume = np.random.default_rng(1).integers(-1000, 400, (6, 5, 4)).astype(float)
    files = write_dicom_series(tmp_path / "series", volume, _affine(), patient_id="P", uid_seed="z")
    with zipfile.ZipFile(tmp_path / "series.zip", "w") as archive:
        for file in reversed(files):  # order in the zip must not matter
            archive.write(file, f"study/{file.name}")
            # a Mac's zip: AppleDouble twins (named like the slices, not DICOM) and Windows' thumbnail cache
            archive.writestr(f"__MACOSX/study/._{file.name}", b"\x00\x05\x16\x07" + b"\x00" * 80)
            archive.writestr(f"study/._{file.name}", b"\x00\x05\x16\x07" + b"\x00" * 80)
        archive.writestr("study/Thumbs.db", b"\xd0\xcf\x11\xe0" + b"\x00" * 80)
    expected = read_dicom_series(tmp_path / "series")
    image = read_upload(tmp_path / "series.zip")
    np.testing.assert_array_equal(image.array, expected.array)
    np.testing.assert_allclose(image.affine, expected.affine)
    np.testing.assert_array_equal(image.array, volume)


def _brats_zip(tmp_path: Path) -> Path:
    """A zip of four constant volumes in BraTS naming: t1 1, t1ce 2, t2 3, flair 4 (listed out of order)."""
    names = {"flair": 4.0, "t1": 1.0, "t2": 3.0, "t1ce": 2.0}
    with zipfile.ZipFile(tmp_path / "case.zip", "w") as archive:
        for modality, value in names.items():
            path = write_nifti(tmp_path / f"Case_7_{modality}.nii.gz", np.full((3, 4, 5), value, np.float32), _affine())
            archive.write(path, path.name)
    return tmp_path / "case.zip"


def test_zipped_brats_modalities_stack_in_catalog_order(tmp_path):
    image = read_upload(_brats_zip(tmp_path))
    assert image.array.shape == (3, 4, 5, 4)
    np.testing.assert_array_equal(image.array[0, 0, 0], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(image.spacing, (1.2, 1.0, 1.5), rtol=1e-6)


def test_gzip_that_is_not_nifti_is_unsupported(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"hello world" * 100))
    with pytest.raises(UploadError) as caught:
        read_upload(tmp_path / "x.gz")
    assert caught.value.status == 415


# ----------------------------------------------------------------------------- bounded work (issue 11)


def _upload(tmp_path: Path, data: bytes, limits: UploadLimits | None = None) -> UploadError:
    path = tmp_path / "upload"
    path.write_bytes(data)
    with pytest.raises(UploadError) as caught:
        read_upload(path, limits or UploadLimits(), label="upload")
    return caught.value


def test_deflated_dicom_is_refused_without_inflating(tmp_path):
    data = attack_files.deflated_dicom(inflated_mb=64)
    assert len(data) < 200_000
    tracemalloc.start()
    try:
        error = _upload(tmp_path, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.status == 415 and "Deflated" in error.problem
    assert peak < 4 * 1024**2  # inflating would allocate 64 MB


def test_dicom_pixel_data_must_match_the_declared_size(tmp_path):
    extra = _upload(tmp_path, attack_files.extra_frames_dicom(8))
    assert extra.status == 422 and "holds 4,096 bytes" in extra.problem and "= 512 bytes" in extra.problem
    good = attack_files.dicom_with()
    end = good.rindex(b"\xe0\x7f\x10\x00") + 12  # PixelData element header: tag, VR, reserved, length
    short = good[: end - 4] + struct.pack("<I", 256) + good[end : end + 256]
    assert _upload(tmp_path, short).status == 422
    frames = _upload(tmp_path, attack_files.dicom_with(NumberOfFrames=8))
    assert frames.status == 422 and "single-frame" in frames.problem


def test_max_pixels_counts_channels(tmp_path):
    limits = UploadLimits(max_pixels=2000)
    error = _upload(tmp_path, attack_files.rgb_png(30, 30), limits)  # 2,700 values
    assert error.status == 413 and "30 x 30 x 3" in error.problem and "2,700" in error.problem
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "grey.png")
    assert read_upload(tmp_path / "grey.png", limits).array.shape == (1, 30, 30)  # 900 values


def test_multi_frame_tiff_found_with_one_seek(tmp_path):
    data = attack_files.tiff_chain(16_384)  # walking the chain (n_frames) took seconds
    start = time.process_time()
    error = _upload(tmp_path, data)
    (tmp_path / "chain.tif").write_bytes(data)
    with pytest.raises(DataError, match="multi-frame"):
        read_image_2d(tmp_path / "chain.tif")
    assert error.status == 422 and "multi-frame" in error.problem
    assert time.process_time() - start < 0.5
    single = attack_files.tiff_chain(1)
    (tmp_path / "one.tif").write_bytes(single)
    assert read_upload(tmp_path / "one.tif").array.shape == (1, 1, 1)


@pytest.mark.parametrize(
    "make, status, words",
    [
        (lambda: attack_files.dicom_with(PixelSpacing=[0, 0]), 422, "PixelSpacing must be finite and positive"),
        (lambda: attack_files.dicom_with(SliceThickness="NaN"), 422, "SliceThickness must be finite"),
        (lambda: attack_files.dicom_with(RescaleSlope="inf"), 422, "RescaleSlope must be finite"),
        (lambda: attack_files.nifti_bytes(np.zeros((4, 4, 4, 3)), dtype_code=128), 415, "voxel type RGB"),
        (lambda: attack_files.nifti_bytes(np.zeros((4, 4, 4), np.complex64)), 415, "voxel type complex64"),
        (lambda: attack_files.nifti_bytes(np.zeros((4, 4, 4), np.float32), zooms=(np.nan, 1, 1)), 422, "pixdim"),
    ],
)
def test_malformed_geometry_is_a_clear_upload_error(tmp_path, make, status, words):
    error = _upload(tmp_path, make())
    assert (error.status, words in error.problem) == (status, True), error.problem


def test_no_phi_in_messages_logs_or_warnings(tmp_path, caplog, monkeypatch):
    uploads = [
        attack_files.phi_dicom_zip(**kwargs)
        for kwargs in ({"duplicate": True}, {"two_series": True}, {"bad_uid": True})
    ]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # only this test's temporary files
    (tmp_path / "tmp").mkdir()
    caplog.set_level(logging.DEBUG)
    dropped = quiet_pydicom()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages = [_upload(tmp_path, data) for data in uploads[:2]]
        (tmp_path / "ok.zip").write_bytes(uploads[2])
        assert read_upload(tmp_path / "ok.zip").array.shape == (16, 16, 4)
    assert [m.status for m in messages] == [422, 422]
    assert "duplicate slice position" in messages[0].problem and "2 DICOM series (4, 4 files)" in messages[1].problem
    seen = "\n".join(
        [m.problem for m in messages] + [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
    )
    for secret in ("DOE", "JOHN", "MRN123456", "19610415", "1.2.826."):
        assert secret not in seen, secret
    assert quiet_pydicom() > dropped  # the malformed UID was reported to pydicom's logger: dropped, counted
    assert list((tmp_path / "tmp").iterdir()) == []  # every temporary folder removed, errors included


def test_zipped_sequences_follow_the_models_training_order(tmp_path):
    """A Decathlon-trained model (FLAIR, T1w, t1gd, T2w) gets a BraTS-named zip in its own order."""
    from tumorbench.data.layouts.brats import sequence_order
    from tumorbench.inference import Preprocessor
    from tumorbench.package import ModelManifest

    image = read_upload(_brats_zip(tmp_path))

    def manifest(channels):
        data = {"layout": "msd", **({"channels": channels} if channels else {})}
        return ModelManifest(
            name="unet_tiny", task="segmentation", model_kwargs={}, spatial_dims=3, data_dims=3,
            in_channels=4, out_channels=3, preprocess={"normalize": "none"}, data=data,
        )  # fmt: skip

    decathlon = Preprocessor(manifest(["FLAIR", "T1w", "t1gd", "T2w"])).layout(image)[0]
    assert decathlon[:, 0, 0, 0].tolist() == [4.0, 1.0, 2.0, 3.0]
    brats = Preprocessor(manifest(["t1", "t1ce", "t2", "flair"])).layout(image)[0]
    assert brats[:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    unnamed = Preprocessor(manifest(None)).layout(image)[0]  # older packages: the zip's BraTS order, as before
    assert unnamed[:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert sequence_order(["t1", "t1ce", "t2", "flair"], ["CT", "PET", "t2", "flair"]) is None
