"""Compressed and quirky DICOM: each compressed syntax decodes to its uncompressed original's pixels,
missing decoders are named, MONOCHROME1 is inverted, radiographs without orientation read as 2D."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from planar_dicom import write_planar as _eight_bit
from tumorbench.data.dicom import check_series, read_dicom_series
from tumorbench.data.io import read_image
from tumorbench.data.writers import write_dicom_series
from tumorbench.errors import DataError


def jpeg_lossless_sv1(image: np.ndarray, precision: int = 16) -> bytes:
    """A minimal JPEG lossless (process 14, first-order prediction) encoder, independent of any library.

    Every difference category 0..16 gets a 5-bit Huffman code equal to the category.
    """
    img = image.astype(np.int64)
    pred = np.empty_like(img)
    pred[:, 1:], pred[1:, 0], pred[0, 0] = img[:, :-1], img[:-1, 0], 1 << (precision - 1)
    diffs = (img - pred) % 65536
    diffs = np.where(diffs > 32768, diffs - 65536, diffs)
    bits: list[str] = []
    for d in diffs.ravel().tolist():
        size = abs(d).bit_length()
        bits.append(format(size, "05b"))
        if 0 < size < 16:
            bits.append(format(d if d > 0 else (d - 1) & ((1 << size) - 1), f"0{size}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for n in range(0, len(stream), 8):
        byte = int(stream[n : n + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0)  # byte stuffing
    rows, cols = img.shape
    size = rows.to_bytes(2, "big") + cols.to_bytes(2, "big")
    sof = bytes([0xFF, 0xC3, 0, 11, precision]) + size + bytes([1, 1, 0x11, 0])
    dht = bytes([0xFF, 0xC4, 0, 36, 0x00]) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    sos = bytes([0xFF, 0xDA, 0, 8, 1, 1, 0x00, 1, 0, 0])
    return b"\xff\xd8" + sof + dht + sos + bytes(data) + b"\xff\xd9"


def _encapsulated(ds: Dataset, frame: bytes, syntax: UID) -> None:
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uncompressed 16-bit CT series (values over the full 12-bit range and beyond)."""
    rng = np.random.default_rng(3)
    volume = rng.integers(-1024, 3000, size=(40, 36, 4)).astype(np.float32)
    volume[10:20, 5:30, :] = 2000
    affine = np.diag([-0.8, -0.7, 2.0, 1.0])
    root = tmp_path_factory.mktemp("plain")
    write_dicom_series(root, volume, affine, patient_id="CODEC", uid_seed="codec")
    return root


def _recompress(series: Path, out: Path, syntax: UID) -> Path:
    out.mkdir()
    for path in sorted(series.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if syntax == JPEGLosslessSV1:
            _encapsulated(ds, jpeg_lossless_sv1(ds.pixel_array), syntax)
        else:
            ds.compress(syntax)  # pydicom's encoders: native / pylibjpeg-rle, pyjpegls, pylibjpeg-openjpeg
        assert ds.file_meta.TransferSyntaxUID == syntax
        ds.save_as(out / path.name)
    return out


@pytest.mark.parametrize(
    "syntax",
    [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1],
    ids=["rle", "jpeg-ls", "jpeg2000", "jpeg-lossless-sv1"],
)
def test_lossless_syntaxes_decode_to_the_uncompressed_pixels(series: Path, tmp_path: Path, syntax: UID) -> None:
    plain = read_dicom_series(series)
    packed = _recompress(series, tmp_path / "packed", syntax)
    assert sum(p.stat().st_size for p in packed.iterdir()) < sum(p.stat().st_size for p in series.iterdir())
    image = read_dicom_series(packed)
    assert np.array_equal(image.array, plain.array)
    assert np.allclose(image.affine, plain.affine) and image.spacing == plain.spacing
    check_series(packed)  # planning's header check passes encapsulated pixel data (undefined length)
    cut = sorted(packed.iterdir())[1]
    cut.write_bytes(cut.read_bytes()[:-40])
    with pytest.raises(DataError), pytest.warns(UserWarning, match="before delimiter"):
        read_dicom_series(packed)
    with pytest.raises(DataError, match=f"{cut.name}: no readable pixel data"):  # refused as the reader does
        with pytest.warns(UserWarning, match="before delimiter"):  # pydicom's, as it drops the element
            check_series(packed)


def test_jpeg_baseline_decodes_like_an_independent_decoder(tmp_path: Path) -> None:
    yy, xx = np.mgrid[:48, :64]
    pixels = (np.clip(128 + 90 * np.sin(xx / 7.0) * np.cos(yy / 5.0), 0, 255)).astype(np.uint8)
    ds = _eight_bit(tmp_path / "plain.dcm", pixels, PixelSpacing=[0.5, 0.5])
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    _encapsulated(ds, buffer.getvalue(), JPEGBaseline8Bit)
    ds.save_as(tmp_path / "jpeg.dcm", enforce_file_format=True)
    image = read_image(tmp_path / "jpeg.dcm")
    reference = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32)
    assert image.array.shape == (1, 48, 64) and image.meta["format"] == "image2d"
    assert np.abs(image.array[0] - reference).max() <= 1  # libjpeg vs libjpeg-turbo rounding
    assert np.abs(image.array[0] - pixels.astype(np.float32)).mean() < 2.0  # quality 95 is close to the original


def test_missing_decoder_names_the_syntax(series: Path, tmp_path: Path) -> None:
    path = tmp_path / "video.dcm"
    ds = pydicom.dcmread(sorted(series.glob("*.dcm"))[0])
    _encapsulated(ds, b"\x00\x00\x01\xb3" + b"\x00" * 64, UID("1.2.840.10008.1.2.4.100"))
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DataError, match=r"MPEG2 Main Profile / Main Level \(1\.2\.840\.10008\.1\.2\.4\.100\)"):
        read_image(path)


def test_radiographs_without_orientation_read_as_2d_with_their_spacing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4096, size=(30, 50)).astype(np.uint16)
    _eight_bit(
        tmp_path / "cr.dcm",
        stored,
        Modality="CR",
        BitsStored=12,
        HighBit=11,
        PhotometricInterpretation="MONOCHROME1",
        ImagerPixelSpacing=[0.2, 0.15],
        RescaleSlope=2,
        RescaleIntercept=-10,
    )
    image = read_image(tmp_path / "cr.dcm")
    assert image.meta["format"] == "image2d" and image.array.shape == (1, 30, 50)
    assert image.spacing == (0.2, 0.15) and image.meta["spacing_source"] == "ImagerPixelSpacing"
    assert np.array_equal(image.array[0], (4095 - stored.astype(np.float32)) * 2 - 10)  # inverted, then rescaled
    _eight_bit(
        tmp_path / "dx.dcm",
        stored,
        Modality="DX",
        BitsStored=12,
        HighBit=11,
        PixelSpacing=[0.1, 0.1],
        ImagerPixelSpacing=[0.12, 0.12],
    )
    image = read_image(tmp_path / "dx.dcm")
    assert image.spacing == (0.1, 0.1) and np.array_equal(image.array[0], stored.astype(np.float32))
    _eight_bit(tmp_path / "ct.dcm", stored, Modality="CT")  # a CT slice without orientation stays an error
    with pytest.raises(DataError, match="ImageOrientationPatient"):
        read_image(tmp_path / "ct.dcm")


def test_radiograph_spacing_reaches_the_measurements(tmp_path: Path) -> None:
    from tumorbench.inference import Preprocessor
    from tumorbench.package import ModelManifest

    _eight_bit(tmp_path / "dx.dcm", np.full((40, 40), 100, np.uint16), Modality="DX", ImagerPixelSpacing=[0.2, 0.3])
    manifest = ModelManifest(
        name="unet_tiny",
        task="segmentation",
        model_kwargs={},
        spatial_dims=2,
        data_dims=2,
        in_channels=1,
        out_channels=1,
        preprocess={"spatial_size": [32, 32]},
    )
    prepared = Preprocessor(manifest).prepare_file(tmp_path / "dx.dcm")
    assert prepared.spacing_known and prepared.spacing == (0.2, 0.3) and prepared.shape == (40, 40)


def test_ultrasound_reads_as_a_2d_image_in_colour_or_grey(tmp_path: Path) -> None:
    # Breast ultrasound as a hospital exports it: one US file, RGB, no ImageOrientationPatient.
    rgb = np.random.default_rng(1).integers(0, 256, size=(20, 30, 3)).astype(np.uint8)
    colour = {"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 0}
    _eight_bit(tmp_path / "us.dcm", rgb[..., 0], Modality="US", **colour, PixelData=rgb.tobytes())
    image = read_image(tmp_path / "us.dcm")
    assert image.meta["format"] == "image2d" and image.array.shape == (3, 20, 30)
    assert np.array_equal(image.array, np.moveaxis(rgb, -1, 0).astype(np.float32))
    assert not image.meta["spacing_known"]
    _eight_bit(tmp_path / "grey.dcm", rgb[..., 1], Modality="US")  # before: "no ImageOrientationPatient"
    assert np.array_equal(read_image(tmp_path / "grey.dcm").array[0], rgb[..., 1].astype(np.float32))

    from tumorbench.uploads import read_upload

    assert read_upload(tmp_path / "us.dcm", label="upload").array.shape == (3, 20, 30)  # the server takes it too


def test_colour_slices_and_multi_frame_files_are_refused_by_name(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    (tmp_path / "ct").mkdir()
    colour = {"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 0}
    _eight_bit(tmp_path / "ct" / "a.dcm", rgb[..., 0], Modality="CT", **colour, PixelData=rgb.tobytes())
    with pytest.raises(DataError, match=r"a\.dcm: a colour \(RGB\) image cannot be a slice of a volume"):
        read_image(tmp_path / "ct" / "a.dcm")
    frames = np.zeros((2, 8, 8), np.uint8)
    _eight_bit(tmp_path / "cine.dcm", frames[0], Modality="US", NumberOfFrames=2, PixelData=frames.tobytes())
    with pytest.raises(DataError, match=r"cine\.dcm: .*multi-frame planar image \(cine loop\)"):
        read_image(tmp_path / "cine.dcm")
