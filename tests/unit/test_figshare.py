"""The figshare brain tumour set's MATLAB 7.3 files made a class-folder set: pixels, masks, orientation, patients."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tumorbench.cli import main
from tumorbench.data.catalog import detect_layout, scan
from tumorbench.data.class_set import to_uint16
from tumorbench.data.figshare import convert, read_slice
from tumorbench.data.io import read_image
from tumorbench.data.splits import SplitConfig, make_splits
from tumorbench.errors import DataError
from tumorbench.transforms.custom import LoadCased

MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2015 HDF5 schema 1.00 ."


def _matlab(group, name, value, matlab_class):
    """Store ``value`` as MATLAB 7.3 does: column-major, so HDF5 holds the transpose."""
    group.create_dataset(name, data=np.asarray(value).T)
    group[name].attrs["MATLAB_class"] = np.bytes_(matlab_class)


def write_mat(path, image, mask, label, pid, **fields):
    """A ``cjdata`` struct in a MATLAB 7.3 file (HDF5 with MATLAB's 512-byte header block)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as handle:
        group = handle.create_group("cjdata")
        group.attrs["MATLAB_class"] = np.bytes_("struct")
        _matlab(group, "image", image, "int16")
        _matlab(group, "tumorMask", mask, "logical")
        _matlab(group, "label", np.array([[float(label)]]), "double")
        _matlab(group, "PID", np.array([[ord(c) for c in pid]], np.uint16), "char")
        _matlab(group, "tumorBorder", np.array([[1.0, 2.0, 3.0, 4.0]]), "double")
        for name, value in fields.items():
            _matlab(group, name, value, "double")
    with open(path, "r+b") as handle:
        handle.write(MATLAB_HEADER.ljust(128))


def _slice(rng, rows=40, cols=48):
    image = (rng.integers(0, 900, (rows, cols)) + np.arange(cols) * 40).astype(np.int16)  # values above 255
    mask = np.zeros((rows, cols), np.uint8)
    mask[5:15, 30:44] = 1  # off-centre and not square: a transposed read would move it
    return image, mask


PIDS = ["MR040237", "MR040237", "100360", "100360", "112649", "MR040237"]
LABELS = [1, 1, 2, 2, 3, 1]


def _figshare(root, rng):
    slices = {}
    for n, (pid, label) in enumerate(zip(PIDS, LABELS), start=1):
        image, mask = _slice(rng)
        folder = root / ("brainTumorDataPublic_1-3" if n <= 3 else "brainTumorDataPublic_4-6")
        write_mat(folder / f"{n}.mat", image, mask, label, pid)
        slices[n] = (image, mask)
    with h5py.File(root / "cvind.mat", "w") as handle:  # the authors' folds: not a slice
        handle.create_dataset("cvind", data=np.arange(6.0)[None])
    return slices


def test_a_slice_is_read_in_matlab_orientation(tmp_path):
    image, mask = _slice(np.random.default_rng(0))
    write_mat(tmp_path / "7.mat", image, mask, 2, "MR040237")
    got = read_slice(tmp_path / "7.mat")
    assert got.image.shape == (40, 48) and np.array_equal(got.image, image)
    assert np.array_equal(got.mask, mask) and got.label == 2 and got.patient == "MR040237"


def test_convert_writes_a_class_folder_set_with_masks_and_pseudonymous_patients(tmp_path):
    slices = _figshare(tmp_path / "figshare", np.random.default_rng(1))
    with pytest.raises(DataError, match="data figshare"):
        detect_layout(tmp_path / "figshare")
    result = CliRunner().invoke(main, ["data", "figshare", str(tmp_path / "figshare"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "6 slices (glioma 2, meningioma 3, pituitary 1) of 3 patients" in result.output
    assert "cvind.mat" in result.output
    out = tmp_path / "out"
    assert detect_layout(out)[0] == "image-folder"
    frame = scan(out).set_index("case_id")
    assert sorted(frame.index) == ["glioma/3.png", "glioma/4.png", "meningioma/1.png", "meningioma/2.png",
                                   "meningioma/6.png", "pituitary/5.png"]  # fmt: skip
    patient = frame["patient_id"]
    assert patient["meningioma/1.png"] == patient["meningioma/2.png"] == patient["meningioma/6.png"] == "figshare-1"
    assert (
        patient["glioma/3.png"] == patient["glioma/4.png"] == "figshare-2"
        and patient["pituitary/5.png"] == "figshare-3"
    )
    for n, case in ((1, "meningioma/1.png"), (5, "pituitary/5.png")):
        image, mask = slices[n]
        assert np.array_equal(read_image(out / case).array[0], image)  # 16-bit values kept, not clipped at 255
        loaded = LoadCased()({"image": frame.loc[case, "image"], "mask": frame.loc[case, "mask"]})
        assert np.array_equal(loaded["mask"][0].numpy(), mask)  # 0/255 PNG read back as the 0/1 mask
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file()) + result.output.encode()
    assert not any(pid.encode() in written for pid in set(PIDS))  # no patient ID anywhere
    doc = make_splits(scan(out), SplitConfig(n_folds=3, seed=0, stratify="none"))
    fold_of = {c: f["fold"] for f in doc["folds"] for c in f["val"]}
    assert len({fold_of[c] for c in ("meningioma/1.png", "meningioma/2.png", "meningioma/6.png")}) == 1


def test_bad_files_are_skipped_and_named_the_others_written(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "figshare"
    image, mask = _slice(rng)
    write_mat(root / "1.mat", image, mask, 1, "A1")
    write_mat(root / "2.mat", image, mask, 7, "A1")  # no such class
    write_mat(root / "3.mat", image, mask[:, :20], 1, "A1")  # mask of another shape
    (root / "4.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))  # the older format
    (root / "5.mat").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # a cut-off HDF5 file
    result = CliRunner().invoke(main, ["data", "figshare", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "1 slices (meningioma 1) of 1 patients" in result.output
    assert "skipped 2.mat: cjdata.label is 7, not 1 (meningioma)" in result.output
    assert "skipped 3.mat: cjdata.tumorMask is not a 0/1 mask of the image's shape (40, 48)" in result.output
    assert "skipped 4.mat: not a MATLAB 7.3 (HDF5) .mat file" in result.output
    assert "skipped 5.mat: " in result.output and "4 file(s) skipped" in result.output
    assert (tmp_path / "out" / "meningioma" / "1.png").exists() and (tmp_path / "out" / "patients.csv").exists()


def test_a_folder_of_unextracted_zips_is_told_to_extract_them(tmp_path):
    (tmp_path / "brainTumorDataPublic_1-766.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(DataError, match=r"no \.mat files under it .*: extract them first"):
        convert(tmp_path, tmp_path / "out")


def test_the_outer_zip_extracted_says_its_inner_zips_are_still_packed(tmp_path):
    """The release is four zips of slices and cvind.mat in one zip: extracted once, only cvind.mat is a .mat."""
    for part in ("1-766", "767-1532"):
        (tmp_path / f"brainTumorDataPublic_{part}.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    with h5py.File(tmp_path / "cvind.mat", "w") as handle:
        handle.create_dataset("cvind", data=np.arange(6.0)[None])
    with pytest.raises(DataError, match=r"none of its 1 \.mat files is a figshare slice .*; 2 \.zip file\(s\) beside"):
        convert(tmp_path, tmp_path / "out")
    # one zip extracted, one not: converted, and said
    write_mat(tmp_path / "1.mat", np.ones((8, 8)), np.eye(8), 1, "100")
    result = CliRunner().invoke(main, ["data", "figshare", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "1 slices (meningioma 1)" in result.output
    assert f"2 .zip file(s) under {tmp_path} not read: if they hold slices, extract them" in result.output


def test_a_huge_declared_image_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "1.mat"
    with h5py.File(path, "w") as handle:  # 40,000^2 int16 declared (3.2 GB), chunked and never written: a small file
        group = handle.create_group("cjdata")
        group.create_dataset("image", shape=(40_000, 40_000), dtype=np.int16, chunks=(256, 256), compression="gzip")
    assert path.stat().st_size < 100_000
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"cjdata.image is int16 of shape \(40000, 40000\), not a numeric 2D array"):
        read_slice(path)
    assert time.perf_counter() - started < 1.0


def test_values_outside_16_bits_are_scaled_and_said():
    kept, rescaled = to_uint16(np.array([[0, 300], [65535, 7]], np.int32))
    assert not rescaled and kept.dtype == np.uint16 and kept.tolist() == [[0, 300], [65535, 7]]
    scaled, rescaled = to_uint16(np.array([[-1.0, 0.5], [1.0, 0.0]]))
    assert rescaled and scaled.tolist() == [[0, 49151], [65535, 32768]]
