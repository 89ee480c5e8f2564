"""MedMNIST .npz files made class-folder sets: streamed items, class names, 3D volumes, hostile archives."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from tumorbench.cli import main
from tumorbench.data import medmnist
from tumorbench.data.catalog import detect_layout, scan
from tumorbench.data.io import read_image
from tumorbench.errors import DataError


def _split(rng, n, shape, classes):
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, classes, (n, 1))


def _npz(path, shape, classes, sizes=(10, 4, 6)):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _split(rng, n, shape, classes)
    np.savez_compressed(path, **arrays)
    return arrays


def test_breastmnist_is_written_with_its_class_names_val_joining_train(tmp_path, monkeypatch):
    arrays = _npz(tmp_path / "breastmnist_64.npz", (64, 64), 2)
    monkeypatch.setattr(medmnist, "CHUNK_BYTES", 3 * 64 * 64)  # three items per read: several chunks
    result = CliRunner().invoke(
        main, ["data", "medmnist", str(tmp_path / "breastmnist_64.npz"), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    train, test = tmp_path / "out" / "train", tmp_path / "out" / "test"
    expected = np.bincount(np.concatenate([arrays["train_labels"], arrays["val_labels"]]).ravel(), minlength=2)
    assert f"malignant {expected[0] + np.sum(arrays['test_labels'] == 0)}" in result.output
    assert "train 14" in result.output and "test 6" in result.output and f"--test {test}" in result.output
    frame = scan(train).set_index("case_id")
    assert detect_layout(train)[0] == "image-folder" and len(frame) == 14
    assert not (train / "patients.csv").exists()  # no patients: each image its own, near-duplicates share a fold
    label = ("malignant", "normal_or_benign")[int(arrays["val_labels"][3, 0])]
    assert frame.loc[f"{label}/val_00003.png", "label"] == label
    assert np.array_equal(read_image(train / label / "val_00003.png").array[0], arrays["val_images"][3])


def test_data_on_an_npz_file_or_a_folder_of_them_points_to_the_command(tmp_path):
    _npz(tmp_path / "breastmnist.npz", (8, 8), 2, sizes=(2, 0, 0))
    with pytest.raises(DataError, match=r"a NumPy archive, not a folder: `tumorbench data medmnist "):
        detect_layout(tmp_path / "breastmnist.npz")
    with pytest.raises(
        DataError, match=r"\.npz 1; NumPy archives: MedMNIST\? `tumorbench data medmnist .*/<file>\.npz"
    ):
        detect_layout(tmp_path)


def test_3d_and_rgb_sets(tmp_path):
    arrays = _npz(tmp_path / "nodulemnist3d.npz", (16, 16, 16), 2, sizes=(4, 0, 2))
    medmnist.convert(tmp_path / "nodulemnist3d.npz", tmp_path / "nodule")
    label = ("benign", "malignant")[int(arrays["test_labels"][1, 0])]
    volume = read_image(tmp_path / "nodule" / "test" / label / "test_00001.nii.gz")
    assert np.array_equal(volume.array, arrays["test_images"][1]) and volume.spacing == (1.0, 1.0, 1.0)
    assert detect_layout(tmp_path / "nodule" / "train")[0] == "image-folder"
    arrays = _npz(tmp_path / "pathmnist.npz", (28, 28, 3), 9, sizes=(6, 0, 0))
    summary = medmnist.convert(tmp_path / "pathmnist.npz", tmp_path / "path")
    assert summary.images == 6 and summary.dims == 2 and not (tmp_path / "path" / "test").exists()
    name = medmnist.CLASS_NAMES["pathmnist"][int(arrays["train_labels"][2, 0])]
    rgb = read_image(tmp_path / "path" / "train" / name / "train_00002.png").array
    assert np.array_equal(rgb, np.moveaxis(arrays["train_images"][2], -1, 0))


def _raw_npz(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)


def _npy(array, *, header_shape=None, cut=0):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
                 "shape": header_shape or array.shape}
    )  # fmt: skip
    return buffer.getvalue() + array.tobytes()[: len(array.tobytes()) - cut]


def test_hostile_and_unusable_archives_are_refused_by_name(tmp_path):
    labels = _npy(np.zeros((2, 1), np.int64))
    cases = {
        "pickled": ({"train_images": b"", "train_labels": labels}, "not plain numbers"),
        "huge": ({"train_images": _npy(np.zeros((1, 2, 2), np.uint8), header_shape=(10, 50_000, 50_000))}, "larger"),
        "cut": ({"train_images": _npy(np.zeros((2, 8, 8), np.uint8), cut=10), "train_labels": labels}, "early"),
        "multilabel": ({"train_images": _npy(np.zeros((2, 8, 8), np.uint8)),
                        "train_labels": _npy(np.zeros((2, 14), np.int64))}, "multi-label"),
    }  # fmt: skip
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    cases["pickled"][0]["train_images"] = pickled.getvalue()
    for name, (members, problem) in cases.items():
        _raw_npz(tmp_path / f"{name}.npz", members)
        with pytest.raises(DataError, match=problem):
            medmnist.convert(tmp_path / f"{name}.npz", tmp_path / name)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match=r"text.npz: not a NumPy .npz archive"):
        medmnist.convert(tmp_path / "text.npz", tmp_path / "text")
