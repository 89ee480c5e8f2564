"""Golden tests of the image readers against hand-built files and nibabel / hashlib references."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tumorbench.data.catalog import scan
from tumorbench.data.dicom import find_dicom_series, read_dicom_series, series_tag
from tumorbench.data.io import (
    ImageData,
    image_content_hash,
    read_image,
    read_image_2d,
    read_nifti,
    to_canonical,
)
from tumorbench.errors import DataError

# ----------------------------------------------------------------------------- DICOM helpers

ROWS, COLS = 4, 3  # non-square, so a missing transpose cannot go unnoticed
PIXEL_SPACING = (0.7, 0.9)  # DICOM order: (row spacing, column spacing)
STEP = 2.5
SLOPE, INTERCEPT = 2.0, -1024.0


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues rotation matrix, written out by hand."""
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * kx + (1 - np.cos(t)) * kx @ kx


OBLIQUE = _rotation(np.array([1.0, 2.0, 0.5]), 30.0)
ROW_COS = np.round(OBLIQUE @ [1.0, 0.0, 0.0], 6)  # direction along a row (increasing column)
COL_COS = np.round(OBLIQUE @ [0.0, 1.0, 0.0], 6)  # direction down a column (increasing row)
NORMAL = np.cross(ROW_COS, COL_COS) / np.linalg.norm(np.cross(ROW_COS, COL_COS))
ORIGIN = np.array([-120.25, 35.5, 410.0])  # LPS, mm


def _slice_pixels(k: int, rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return (1000 + 100 * k + 10 * r + c).astype(np.uint16)


def _write_slice(
    path: Path,
    *,
    pixels: np.ndarray,
    ipp: np.ndarray | None,
    series_uid: str,
    instance: int,
    iop: np.ndarray | None = None,
    spacing: tuple[float, float] = PIXEL_SPACING,
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.PatientName = "Doe^Jane"
    ds.PatientBirthDate = "19700101"
    ds.PatientIdentityRemoved = "YES"  # a catalog of raw series would be refused: these test the reader
    ds.InstanceNumber = instance
    iop = np.concatenate([ROW_COS, COL_COS]) if iop is None else iop
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
    if ipp is not None:
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
    ds.PixelSpacing = [f"{v}" for v in spacing]
    ds.SliceThickness = f"{STEP}"
    ds.RescaleSlope, ds.RescaleIntercept = f"{SLOPE}", f"{INTERCEPT}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def _ipp(k: float) -> np.ndarray:
    return np.round(ORIGIN + k * STEP * NORMAL, 4)


def _write_series(folder: Path, positions: list[float], uid: str | None = None) -> tuple[str, list[Path]]:
    """Write slices at ``positions`` (in steps) in shuffled order; slice k holds value set k."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    write_order = np.random.default_rng(7).permutation(len(positions))
    files = []
    for n, k in enumerate(write_order):  # file name and InstanceNumber disagree with space
        path = folder / f"img{n:03d}.dcm"
        _write_slice(
            path, pixels=_slice_pixels(int(k)), ipp=_ipp(positions[k]), series_uid=uid, instance=int(len(positions) - n)
        )
        files.append(path)
    return uid, files


# ----------------------------------------------------------------------------- DICOM: golden


def test_oblique_dicom_series_geometry_order_and_rescale(tmp_path):
    n_slices = 5
    uid, _ = _write_series(tmp_path / "ct", list(range(n_slices)))
    (tmp_path / "ct" / "notes.txt").write_text("not dicom")

    image = read_dicom_series(tmp_path / "ct")

    assert image.array.shape == (COLS, ROWS, n_slices) and image.array.dtype == np.float32
    expected_lps = np.eye(4)
    expected_lps[:3, 0] = ROW_COS * PIXEL_SPACING[1]
    expected_lps[:3, 1] = COL_COS * PIXEL_SPACING[0]
    expected_lps[:3, 2] = NORMAL * STEP
    expected_lps[:3, 3] = _ipp(0)
    expected_ras = np.diag([-1, -1, 1, 1]) @ expected_lps
    np.testing.assert_allclose(image.affine, expected_ras, atol=1e-3)
    np.testing.assert_allclose(image.spacing, (0.9, 0.7, 2.5), atol=1e-3)
    for k in range(n_slices):  # slice k in space holds value set k, transposed to (i=col, j=row)
        np.testing.assert_array_equal(image.array[:, :, k], _slice_pixels(k).T * SLOPE + INTERCEPT)
    assert image.array[2, 3, 4] == (1000 + 400 + 30 + 2) * 2 - 1024
    # DICOM PS3.3 C.7.6.2.1.1: P = S + X * dcol * col + Y * drow * row, then LPS -> RAS.
    i, j, k = 2, 3, 4
    lps = _ipp(k) + ROW_COS * 0.9 * i + COL_COS * 0.7 * j
    np.testing.assert_allclose((image.affine @ [i, j, k, 1])[:3], [-lps[0], -lps[1], lps[2]], atol=1e-3)
    assert image.meta["format"] == "dicom" and image.meta["series_uid"] == uid
    assert image.meta["modality"] == "CT"
    assert image.meta["orientation"] == "".join(nib.aff2axcodes(expected_ras))
    assert all(r == (SLOPE, INTERCEPT) for r in image.meta["rescale"])
    assert not {"PatientName", "PatientBirthDate", "PatientID"} & set(image.meta)
    assert "Doe" not in repr(image.meta)


def test_find_and_choose_among_several_series(tmp_path):
    uid_a, files_a = _write_series(tmp_path / "a", [0, 1, 2])
    uid_b, _ = _write_series(tmp_path / "b", [0, 1])
    found = find_dicom_series(tmp_path)
    assert set(found) == {uid_a, uid_b} and sorted(found[uid_a]) == sorted(files_a)
    with pytest.raises(DataError, match="2 DICOM series") as err:
        read_dicom_series(tmp_path)
    assert series_tag(uid_a) in str(err.value) and series_tag(uid_b) in str(err.value)
    assert uid_a not in str(err.value) and uid_b not in str(err.value)  # a UID would identify the study
    assert read_dicom_series(tmp_path, series_uid=uid_b).array.shape == (COLS, ROWS, 2)
    assert read_dicom_series(files_a).array.shape == (COLS, ROWS, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM series"):
        find_dicom_series(tmp_path / "empty")


def _write_rtstruct(path: Path, modality: str = "RTSTRUCT") -> Path:
    """A non-image object as hospital exports keep it beside the images: no pixel data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"  # RT Structure Set Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.PatientID = modality, generate_uid(), "P1"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_structure_sets_and_reports_beside_the_images_are_not_series(tmp_path):
    from collections import Counter

    uid, _ = _write_series(tmp_path / "ct", [0, 1, 2])
    rs = _write_rtstruct(tmp_path / "ct" / "rs.dcm")  # in the series folder itself
    _write_rtstruct(tmp_path / "sr" / "report.dcm", modality="SR")
    scout = _write_rtstruct(tmp_path / "scout" / "s.dcm", modality="CT")
    ds = pydicom.dcmread(scout)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.save_as(scout)
    skipped = Counter()
    assert list(find_dicom_series(tmp_path, skipped)) == [uid]
    assert skipped == {"a RTSTRUCT object": 1, "a SR object": 1, "a localizer (scout) image": 1}
    assert read_dicom_series(tmp_path / "ct").array.shape == (COLS, ROWS, 3)  # the structure set is left out
    with pytest.raises(DataError, match="a RTSTRUCT object, not an image"):
        read_dicom_series([rs])

    frame = scan(tmp_path, "dicom")
    assert len(frame) == 1 and frame.attrs["notes"][0] == (
        "skipped DICOM files that hold no image to read: 1 x RTSTRUCT object, 1 x SR object, "
        "1 x localizer (scout) image"
    )
    assert frame.attrs["notes"][1:] == [  # these test files carry no PatientID
        "1 series without a PatientID: each grouped with the series under the same top folder as one patient; "
        "give patient_id in labels.csv if the top folders are not patients"
    ]


def test_single_dicom_file_reads_as_one_slice(tmp_path):
    path = tmp_path / "one.dcm"
    _write_slice(path, pixels=_slice_pixels(0), ipp=ORIGIN, series_uid=generate_uid(), instance=1)
    image = read_image(path)
    assert image.array.shape == (COLS, ROWS, 1)
    np.testing.assert_allclose(np.linalg.norm(image.affine[:3, 2]), STEP)


# ----------------------------------------------------------------------------- DICOM: bad series


def test_gap_in_slice_positions_is_rejected(tmp_path):
    uid, _ = _write_series(tmp_path / "s", [0, 1, 2, 4, 5])
    with pytest.raises(DataError, match="non-uniform slice spacing") as err:
        read_dicom_series(tmp_path / "s")
    assert series_tag(uid) in str(err.value) and uid not in str(err.value)


def test_duplicate_positions_are_rejected(tmp_path):
    _write_series(tmp_path / "s", [0, 1, 1, 2])
    with pytest.raises(DataError, match="duplicate slice position"):
        read_dicom_series(tmp_path / "s")


def test_slice_with_other_orientation_is_rejected(tmp_path):
    uid, _ = _write_series(tmp_path / "s", [0, 1, 2])
    tilted = np.concatenate([COL_COS, ROW_COS])
    bad = tmp_path / "s" / "tilted.dcm"
    _write_slice(bad, pixels=_slice_pixels(3), ipp=_ipp(3), series_uid=uid, instance=9, iop=tilted)
    with pytest.raises(DataError, match="ImageOrientationPatient differs") as err:
        read_dicom_series(tmp_path / "s")
    assert "tilted.dcm" in str(err.value)


def test_mixed_slice_sizes_are_rejected(tmp_path):
    uid, _ = _write_series(tmp_path / "s", [0, 1, 2])
    bad = tmp_path / "s" / "wide.dcm"
    wide = _slice_pixels(3, rows=ROWS, cols=COLS + 2)
    _write_slice(bad, pixels=wide, ipp=_ipp(3), series_uid=uid, instance=9)
    with pytest.raises(DataError, match="mixed slice sizes") as err:
        read_dicom_series(tmp_path / "s")
    assert "wide.dcm" in str(err.value)


def test_missing_position_is_rejected(tmp_path):
    uid, _ = _write_series(tmp_path / "s", [0, 1])
    bad = tmp_path / "s" / "nopos.dcm"
    _write_slice(bad, pixels=_slice_pixels(2), ipp=None, series_uid=uid, instance=9)
    with pytest.raises(DataError, match="ImagePositionPatient") as err:
        read_dicom_series(tmp_path / "s")
    assert "nopos.dcm" in str(err.value)


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_dicom_file_is_rejected(tmp_path, keep):
    _, files = _write_series(tmp_path / "s", [0, 1, 2])
    data = files[1].read_bytes()
    files[1].write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path / "s")
    assert files[1].name in str(err.value)
    assert "truncated" in str(err.value) or "unreadable" in str(err.value)


# ----------------------------------------------------------------------------- NIfTI


LPS_AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, -1.2, 0, 20.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
BLOB = (slice(2, 4), slice(7, 10), slice(5, 7))


def _write_lps_pair(folder: Path) -> tuple[Path, Path]:
    image = np.random.default_rng(0).uniform(0, 10, (10, 12, 8)).astype(np.float32)
    image[BLOB] = 100.0
    label = np.zeros((10, 12, 8), np.uint8)
    label[BLOB] = 1
    nib.save(nib.Nifti1Image(image, LPS_AFFINE), folder / "img.nii.gz")
    nib.save(nib.Nifti1Image(label, LPS_AFFINE), folder / "seg.nii.gz")
    return folder / "img.nii.gz", folder / "seg.nii.gz"


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    voxels = np.argwhere(mask).mean(axis=0)
    return (affine @ np.append(voxels, 1.0))[:3]


def test_lps_nifti_canonical_moves_label_with_image(tmp_path):
    img_path, seg_path = _write_lps_pair(tmp_path)
    before = _world_centroid(nib.load(seg_path).get_fdata() > 0, LPS_AFFINE)
    raw = read_nifti(img_path)
    assert raw.meta["orientation"] == "LPS" and raw.meta["format"] == "nifti"

    image = read_nifti(img_path, canonical=True)
    label = read_nifti(seg_path, canonical=True, dtype=np.uint8)

    assert image.meta["orientation"] == label.meta["orientation"] == "RAS"
    assert np.all(np.diag(image.affine)[:3] > 0)
    np.testing.assert_allclose(image.affine[:3, :3], np.diag(np.diag(image.affine)[:3]))
    np.testing.assert_array_equal(image.affine, label.affine)
    np.testing.assert_array_equal(label.array > 0, image.array > 50)
    np.testing.assert_allclose(_world_centroid(label.array > 0, label.affine), before)
    np.testing.assert_allclose(_world_centroid(image.array > 50, image.affine), before)
    reference = nib.as_closest_canonical(nib.load(img_path))
    np.testing.assert_array_equal(image.array, reference.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(image.affine, reference.affine)
    assert label.array.dtype == np.uint8


def test_to_canonical_permutes_spacing_like_nibabel(tmp_path):
    # voxel axis 0 runs inferior, axis 1 left, axis 2 anterior: a permutation plus flips
    affine = np.array([[0, -0.8, 0, 5.0], [0, 0, 1.3, -4.0], [-2.5, 0, 0, 9.0], [0, 0, 0, 1]])
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "perm.nii")
    image = to_canonical(read_nifti(tmp_path / "perm.nii"))
    reference = nib.as_closest_canonical(nib.load(tmp_path / "perm.nii"))
    np.testing.assert_array_equal(image.array, reference.get_fdata())
    np.testing.assert_allclose(image.affine, reference.affine)
    np.testing.assert_allclose(image.spacing, reference.header.get_zooms()[:3])
    assert image.spacing == pytest.approx((0.8, 1.3, 2.5))


def test_truncated_nifti_names_the_file(tmp_path):
    img_path, _ = _write_lps_pair(tmp_path)
    data = img_path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated") as err:
        read_nifti(cut)
    assert "cut.nii.gz" in str(err.value)
    with pytest.raises(DataError, match="not found"):
        read_nifti(tmp_path / "missing.nii.gz")


# ----------------------------------------------------------------------------- 2D images


def test_2d_modes_channels_and_values(tmp_path):
    grey = np.arange(6 * 7, dtype=np.uint8).reshape(6, 7)
    deep = np.arange(6 * 7, dtype=np.uint16).reshape(6, 7) * 1000  # up to 41000
    rgb = np.stack([grey, grey + 50, grey + 100], axis=-1).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "l.png")
    Image.fromarray(deep).save(tmp_path / "i16.png")
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.bmp")
    palette = Image.fromarray((grey % 3).astype(np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    palette.save(tmp_path / "p.png")
    rgba = np.concatenate([rgb, np.full((6, 7, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")

    l_img = read_image_2d(tmp_path / "l.png")
    assert l_img.array.shape == (1, 6, 7) and l_img.array.dtype == np.float32
    np.testing.assert_array_equal(l_img.array[0], grey)
    i16 = read_image(tmp_path / "i16.png")
    assert i16.array.shape == (1, 6, 7) and i16.array.max() == 41000
    np.testing.assert_array_equal(i16.array[0], deep)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.bmp").array, np.moveaxis(rgb, -1, 0))
    lut = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    np.testing.assert_array_equal(read_image(tmp_path / "p.png").array, np.moveaxis(lut[grey % 3], -1, 0))
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png").array, np.moveaxis(rgb, -1, 0))
    assert l_img.meta["format"] == "image2d" and l_img.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(l_img.affine, np.eye(4))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_2d_image_is_rejected(tmp_path, suffix):
    pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    whole = tmp_path / f"whole{suffix}"
    Image.fromarray(pixels).save(whole)
    data = whole.read_bytes()
    for n, keep in enumerate([len(data) // 2, len(data) - 12]):
        cut = tmp_path / f"cut{n}{suffix}"
        cut.write_bytes(data[:keep])
        with pytest.raises(DataError) as err:
            read_image_2d(cut)
        assert cut.name in str(err.value)


def test_read_image_dispatch_and_errors(tmp_path):
    img_path, _ = _write_lps_pair(tmp_path)
    assert read_image(img_path, canonical=True).meta["orientation"] == "RAS"
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        read_image(tmp_path / "table.csv")
    (tmp_path / "fake.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="fake.png"):
        read_image(tmp_path / "fake.png")
    with pytest.raises(DataError, match="3D volume"):
        to_canonical(ImageData(np.zeros((1, 2, 2), np.float32), np.eye(4), (1.0, 1.0), {"format": "image2d"}))


def test_image_content_hash_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(3).bytes(3 * 1024 * 1024 + 17))
    assert image_content_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DataError):
        image_content_hash(tmp_path / "missing.bin")


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_brats_volume_is_lps_and_canonicalizes_with_its_labels(brats_root):
    case = brats_root / "BraTS2021_00006"
    flair_path, seg_path = case / "BraTS2021_00006_flair.nii.gz", case / "BraTS2021_00006_seg.nii.gz"
    assert nib.aff2axcodes(nib.load(flair_path).affine) == ("L", "P", "S")
    flair = read_nifti(flair_path, canonical=True)
    seg = read_nifti(seg_path, canonical=True, dtype=np.uint8)
    assert flair.meta["orientation"] == seg.meta["orientation"] == "RAS"
    assert flair.array.shape == seg.array.shape == (240, 240, 155)
    np.testing.assert_array_equal(flair.affine, seg.affine)
    assert set(np.unique(seg.array)) <= {0, 1, 2, 4}
    raw_seg = nib.load(seg_path)
    before = _world_centroid(np.asarray(raw_seg.dataobj) > 0, raw_seg.affine)
    np.testing.assert_allclose(_world_centroid(seg.array > 0, seg.affine), before, atol=1e-6)


@pytest.mark.realdata
def test_lgg_slice_and_mask(lgg_root):
    patient = sorted(p for p in lgg_root.iterdir() if p.is_dir())[0]
    mask_path = sorted(patient.glob("*_mask.png"))[0]
    image = read_image(mask_path.with_name(mask_path.name.replace("_mask", "")))
    assert image.array.shape == (3, 256, 256)
    mask = read_image(mask_path)
    assert mask.array.shape == (1, 256, 256) and set(np.unique(mask.array)) <= {0.0, 255.0}


@pytest.mark.realdata
def test_yes_no_palette_grey_and_rgba_images_read(yes_no_root):
    seen = {}
    for path in sorted(yes_no_root.glob("*/*")):
        with Image.open(path) as img:
            seen.setdefault(img.mode, path)
    expected_channels = {"P": 3, "L": 1, "RGBA": 3, "RGB": 3}
    for mode, channels in expected_channels.items():
        if mode in seen:
            image = read_image(seen[mode])
            assert image.array.shape[0] == channels, (mode, seen[mode])
            assert image.array.ndim == 3 and image.array.max() > 0


def test_eight_bit_images_can_stay_uint8(tmp_path):
    rgb = np.arange(6 * 7 * 3, dtype=np.uint8).reshape(6, 7, 3)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    Image.fromarray((np.arange(42).reshape(6, 7) * 1000).astype(np.uint16)).save(tmp_path / "deep.png")
    native = read_image(tmp_path / "rgb.png", dtype=None)
    assert native.array.dtype == np.uint8 and native.array.shape == (3, 6, 7)
    np.testing.assert_array_equal(native.array, np.moveaxis(rgb, -1, 0))
    np.testing.assert_array_equal(native.array, read_image(tmp_path / "rgb.png").array)  # float32 by default
    assert read_image(tmp_path / "rgb.png").array.dtype == np.float32
    deep = read_image(tmp_path / "deep.png", dtype=None)  # 16-bit values do not fit: float32
    assert deep.array.dtype == np.float32 and deep.array.max() == 41000
