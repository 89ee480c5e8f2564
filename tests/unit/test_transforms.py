"""Transform chains and datasets, checked against numpy / skimage / nibabel references."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Randomizable
from PIL import Image
from skimage.exposure import equalize_adapthist

from tumorbench.data.datasets import cases_from_catalog, make_dataset
from tumorbench.errors import DataError
from tumorbench.transforms import (
    AugmentConfig,
    ConvertToBratsRegionsd,
    LoadCased,
    PreprocessConfig,
    SamplingConfig,
    build_transforms,
)

NONE = PreprocessConfig(normalize="none")


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return str(path)


def _png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array.astype(np.uint8)).save(path)
    return str(path)


def _case(image, mask=None, label=None, **extra) -> dict:
    images = image if isinstance(image, list) else [image]
    return {"case_id": "c", "patient_id": "p", "image": images, "mask": mask, "label": label, **extra}


def _blob_2d(tmp_path: Path, size: int = 16) -> tuple[np.ndarray, np.ndarray, dict]:
    """A bright square in the top-left quadrant, its 0/255 mask, and the case."""
    img = np.full((size, size), 20, np.uint8)
    img[2:6, 3:7] = 200
    mask = np.where(img == 200, 255, 0).astype(np.uint8)
    return img, mask, _case(_png(tmp_path / "img.png", img), _png(tmp_path / "img_mask.png", mask))


def test_zscore_within_foreground_per_channel(tmp_path):
    rng = np.random.default_rng(0)
    channels = [np.zeros((6, 5, 4), np.float32) for _ in range(2)]
    for n, ch in enumerate(channels):
        ch[1:5, 1:4, 1:3] = rng.normal(100 * (n + 1), 10 * (n + 1), size=(4, 3, 2))
    paths = [_nifti(tmp_path / f"ch{n}.nii.gz", ch) for n, ch in enumerate(channels)]
    out = build_transforms(PreprocessConfig(normalize="zscore"), spatial_dims=3, with_mask=False)(_case(paths))
    image = out["image"].numpy()
    assert image.shape == (2, 6, 5, 4)
    for n, ch in enumerate(channels):
        fg = ch != 0
        expected = (ch[fg] - ch[fg].mean()) / ch[fg].std()
        np.testing.assert_allclose(image[n][fg], expected, atol=1e-4)
        assert abs(image[n][fg].mean()) < 1e-5 and abs(image[n][fg].std() - 1) < 1e-4
        assert np.all(image[n][~fg] == 0)


def test_ct_window_maps_level_and_edges(tmp_path):
    level, width = 40.0, 400.0
    hu = np.array([-1000, level - width / 2, level, level + width / 2, 3000, 140], np.float32).reshape(6, 1, 1)
    pre = PreprocessConfig(normalize="ct_window", ct_window=(level, width))
    out = build_transforms(pre, spatial_dims=3, with_mask=False)(_case(_nifti(tmp_path / "ct.nii.gz", hu)))
    np.testing.assert_allclose(out["image"].numpy().ravel(), [0.0, 0.0, 0.5, 1.0, 1.0, 0.75], atol=1e-6)


def test_clahe_matches_skimage_per_channel(tmp_path):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:40, :48]
    rgb = np.stack([(xx * 4) % 256, (yy * 5 + xx) % 200 + 30, rng.integers(0, 256, (40, 48))], axis=-1)
    path = _png(tmp_path / "rgb.png", rgb)
    pre = PreprocessConfig(normalize="none", contrast="clahe", clahe_clip=0.02)
    out = build_transforms(pre, with_mask=False)(_case(path))["image"].numpy()
    for c in range(3):
        channel = rgb[..., c].astype(np.float64)
        scaled = (channel - channel.min()) / (channel.max() - channel.min())
        np.testing.assert_allclose(out[c], equalize_adapthist(scaled, clip_limit=0.02), atol=1e-5)


def test_resample_to_1mm_doubles_shape_and_keeps_world_centre(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (10.0, -4.0, 7.0)
    world = np.einsum("ij,jklm->iklm", affine[:3, :3], np.indices((4, 5, 3), float)) + affine[:3, 3, None, None, None]
    vol = (world[0] + 3 * world[1] - 2 * world[2]).astype(np.float32)  # linear in world mm
    mask = (vol > 30).astype(np.uint8)
    case = _case(_nifti(tmp_path / "v.nii.gz", vol, affine), _nifti(tmp_path / "m.nii.gz", mask, affine))
    out = build_transforms(PreprocessConfig(normalize="none", spacing=(1.0, 1.0, 1.0)), spatial_dims=3)(case)
    image, new_mask = out["image"], out["mask"]
    assert tuple(image.shape) == (1, 8, 10, 6) and tuple(new_mask.shape) == (1, 8, 10, 6)
    new_affine = image.affine.numpy()
    np.testing.assert_allclose(np.diag(new_affine)[:3], [1.0, 1.0, 1.0])
    old_centre = affine @ np.array([1.5, 2.0, 1.0, 1.0])  # (n - 1) / 2 voxel centres
    np.testing.assert_allclose(new_affine @ np.array([3.5, 4.5, 2.5, 1.0]), old_centre, atol=1e-6)
    assert set(np.unique(new_mask.numpy())) <= {0.0, 1.0}
    # linear interpolation reproduces the linear field at each new voxel's world position (borders extrapolate)
    new_world = np.einsum("ij,jklm->iklm", new_affine[:3, :3], np.indices((8, 10, 6), float))
    new_world += new_affine[:3, 3, None, None, None]
    expected = new_world[0] + 3 * new_world[1] - 2 * new_world[2]
    np.testing.assert_allclose(image.numpy()[0][1:-1, 1:-1, 1:-1], expected[1:-1, 1:-1, 1:-1], atol=1e-4)


def test_canonical_moves_lps_image_and_mask_together(tmp_path):
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS as stored by BraTS
    vol = np.zeros((5, 4, 3), np.float32)
    vol[0, 1, 2] = 9.0
    ref = nib.as_closest_canonical(nib.Nifti1Image(vol, affine))
    case = _case(
        _nifti(tmp_path / "v.nii.gz", vol, affine), _nifti(tmp_path / "m.nii.gz", (vol > 0).astype(np.uint8), affine)
    )
    out = build_transforms(NONE, spatial_dims=3)(case)
    np.testing.assert_array_equal(out["image"].numpy()[0], np.asarray(ref.dataobj))
    np.testing.assert_array_equal(out["mask"].numpy()[0], np.asarray(ref.dataobj) > 0)
    np.testing.assert_allclose(out["image"].affine.numpy(), ref.affine)


def test_flips_move_image_and_mask_together(tmp_path):
    img, mask, case = _blob_2d(tmp_path)
    chain = build_transforms(NONE, AugmentConfig(flip_axes=(0, 1), prob=1.0), train=True, seed=3)
    out = chain(case)
    np.testing.assert_array_equal(out["image"].numpy()[0], img[::-1, ::-1])
    np.testing.assert_array_equal(out["mask"].numpy()[0], mask[::-1, ::-1] // 255)
    assert np.all(out["image"].numpy()[0][out["mask"].numpy()[0] == 1] == 200)


def test_rotation_keeps_mask_binary_and_on_the_blob(tmp_path):
    img, mask, case = _blob_2d(tmp_path, size=24)
    out = build_transforms(NONE, AugmentConfig(rotate_deg=40.0, prob=1.0), train=True, seed=5)(case)
    rotated_mask = out["mask"].numpy()[0]
    assert set(np.unique(rotated_mask)) == {0.0, 1.0}
    assert not np.array_equal(rotated_mask, mask // 255)  # it did rotate
    on_blob = out["image"].numpy()[0][rotated_mask == 1]
    assert on_blob.mean() > 150  # image 200 inside, 20 outside; edges interpolate


def test_channels_unify_grey_and_rgb(tmp_path):
    grey = np.arange(12).reshape(3, 4) * 20
    rgb = np.stack([grey, grey // 2, 255 - grey], axis=-1)
    as_rgb = build_transforms(PreprocessConfig(normalize="none", channels=3), with_mask=False)
    np.testing.assert_array_equal(as_rgb(_case(_png(tmp_path / "g.png", grey)))["image"].numpy(), np.stack([grey] * 3))
    as_grey = build_transforms(PreprocessConfig(normalize="none", channels=1), with_mask=False)
    luma = 0.299 * grey + 0.587 * (grey // 2) + 0.114 * (255 - grey)
    np.testing.assert_allclose(as_grey(_case(_png(tmp_path / "c.png", rgb)))["image"].numpy()[0], luma, rtol=1e-5)


def test_translation_is_a_fraction_of_each_axis(tmp_path):
    img = np.zeros((20, 40), np.uint8)
    img[8:12, 18:22] = 255
    case = _case(_png(tmp_path / "t.png", img), _png(tmp_path / "t_mask.png", img))
    chain = build_transforms(NONE, AugmentConfig(translate_frac=0.25, prob=1.0), train=True, seed=11)
    shifts = []
    for _ in range(6):
        moved = np.argwhere(chain(case)["mask"].numpy()[0] == 1).mean(axis=0) - (9.5, 19.5)
        shifts.append(moved)
    shifts = np.abs(np.array(shifts))
    assert np.all(shifts <= np.array([0.25 * 20, 0.25 * 40]) + 0.5)
    assert shifts[:, 1].max() > 0.25 * 20  # the wide axis moves further than the short one could


def test_shape_mismatch_names_both_files(tmp_path):
    image = _png(tmp_path / "scan.png", np.zeros((8, 8)))
    mask = _png(tmp_path / "scan_seg.png", np.zeros((8, 6)))
    with pytest.raises(DataError) as err:
        LoadCased(spatial_dims=2)(_case(image, mask))
    assert "scan.png" in str(err.value) and "scan_seg.png" in str(err.value)


def test_affine_mismatch_is_refused(tmp_path):
    vol = np.zeros((4, 4, 4), np.float32)
    image = _nifti(tmp_path / "t1.nii.gz", vol, np.diag([-1.0, -1.0, 1.0, 1.0]))
    mask = _nifti(tmp_path / "seg.nii.gz", vol.astype(np.uint8))  # identity: would flip against the image
    with pytest.raises(DataError, match="seg.nii.gz.*affine.*t1.nii.gz"):
        LoadCased(spatial_dims=3)(_case(image, mask))


def test_missing_mask_is_an_error_and_none_label_is_dropped(tmp_path):
    image = _png(tmp_path / "a.png", np.zeros((4, 4)))
    with pytest.raises(DataError, match="a.png.*no mask"):
        LoadCased(spatial_dims=2)(_case(image))
    out = LoadCased(mask_key=None, spatial_dims=2)(_case(image, label=float("nan")))
    assert "label" not in out and "mask" not in out
    with pytest.raises(DataError, match="a.png.*'yes'"):
        LoadCased(mask_key=None, spatial_dims=2)(_case(image, label="yes"))


@pytest.mark.parametrize(
    ("enhancing", "wt", "tc", "et"),
    [  # labels 0, 1, 2, 4, 3 along the first axis
        (4, [0, 1, 1, 1, 0], [0, 1, 0, 1, 0], [0, 0, 0, 1, 0]),
        (3, [0, 1, 1, 0, 1], [0, 1, 0, 0, 1], [0, 0, 0, 0, 1]),
    ],
)
def test_brats_regions_for_both_conventions(tmp_path, enhancing, wt, tc, et):
    labels = np.array([0, 1, 2, 4, 3], np.uint8).reshape(5, 1, 1)
    case = _case(
        _nifti(tmp_path / "t1.nii.gz", np.ones((5, 1, 1), np.float32)), _nifti(tmp_path / "seg.nii.gz", labels)
    )
    pre = PreprocessConfig(normalize="none", label_map="brats", enhancing_label=enhancing)
    out = build_transforms(pre, spatial_dims=3)(case)["mask"].numpy()
    assert out.shape == (3, 5, 1, 1) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :, 0, 0], np.array([wt, tc, et], np.float32))
    # a case's own enhancing_label (as the catalog records it) overrides the default
    other = 3 if enhancing == 4 else 4
    loaded = LoadCased(spatial_dims=3)(dict(case, enhancing_label=enhancing))
    via_case = ConvertToBratsRegionsd("mask", enhancing_label=other)(loaded)["mask"].numpy()
    np.testing.assert_array_equal(via_case[:, :, 0, 0], np.array([wt, tc, et], np.float32))


def test_binary_label_map_is_the_whole_tumor(tmp_path):
    labels = np.array([0, 1, 2, 4, 3, 0], np.uint8).reshape(6, 1, 1)
    image = _nifti(tmp_path / "t1.nii.gz", np.ones((6, 1, 1), np.float32))
    case = _case(image, _nifti(tmp_path / "seg.nii.gz", labels))
    out = build_transforms(PreprocessConfig(normalize="none", label_map="binary"), spatial_dims=3)(case)["mask"]
    np.testing.assert_array_equal(out.numpy()[0, :, 0, 0], [0, 1, 1, 1, 1, 0])


@pytest.mark.parametrize("label_map", ["binary", "none"])
def test_foreground_labels_keep_the_tumour_not_its_organ(tmp_path, label_map):
    labels = np.array([0, 1, 2, 1, 3, 2], np.uint8).reshape(6, 1, 1)  # liver 1, tumour 2, cyst 3
    case = _case(
        _nifti(tmp_path / "ct.nii.gz", np.ones((6, 1, 1), np.float32)), _nifti(tmp_path / "seg.nii.gz", labels)
    )
    for fg in ((2,), (2, 3)):
        pre = PreprocessConfig(normalize="none", label_map=label_map, foreground_labels=fg)
        out = build_transforms(pre, spatial_dims=3)(case)["mask"].numpy()[0, :, 0, 0]
        np.testing.assert_array_equal(out, np.isin(labels[:, 0, 0], fg).astype(np.float32))
    with pytest.raises(ValueError, match="foreground_labels"):
        PreprocessConfig(label_map="brats", foreground_labels=(2,))
    assert PreprocessConfig(foreground_labels=[3, 2, 2]).foreground_labels == (2, 3)  # lists cross processes


def _volume_case(tmp_path: Path, positive=(3, 7)) -> dict:
    rng = np.random.default_rng(2)
    vol = rng.uniform(1, 2, size=(8, 8, 10)).astype(np.float32)
    mask = np.zeros((8, 8, 10), np.uint8)
    for k in positive:
        mask[2:5, 3:6, k] = 1
    return _case(_nifti(tmp_path / "v.nii.gz", vol), _nifti(tmp_path / "m.nii.gz", mask))


def test_slice2d_positive_fraction_one_and_zero(tmp_path):
    case = _volume_case(tmp_path)
    for fraction, allowed in ((1.0, {3, 7}), (0.0, set(range(10)) - {3, 7})):
        sampling = SamplingConfig("slice2d", pos_fraction=fraction, num_samples=12)
        samples = build_transforms(NONE, spatial_dims=3, train=True, sampling=sampling, seed=0)(case)
        assert len(samples) == 12
        for s in samples:
            assert tuple(s["image"].shape) == (1, 8, 8) and tuple(s["mask"].shape) == (1, 8, 8)
            assert s["slice_index"] in allowed
            assert (s["mask"].sum() > 0) == (fraction == 1.0)
        if fraction == 1.0:
            assert {s["slice_index"] for s in samples} == {3, 7}  # 12 draws: both positive slices


def test_patch3d_returns_patch_size_with_foreground(tmp_path):
    sampling = SamplingConfig("patch3d", patch_size=(4, 4, 4), pos_fraction=1.0, num_samples=3)
    samples = build_transforms(NONE, spatial_dims=3, train=True, sampling=sampling, seed=1)(_volume_case(tmp_path))
    assert len(samples) == 3
    for s in samples:
        assert tuple(s["image"].shape) == (1, 4, 4, 4) and tuple(s["mask"].shape) == (1, 4, 4, 4)
        assert s["mask"].sum() > 0 and "_foreground" not in s


def test_patch3d_samples_edema_only_foreground_of_region_masks(tmp_path):
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[1:3, 1:3, 1:3] = 2  # edema only: WT set, TC/ET empty (MONAI alone would see no foreground)
    case = _case(
        _nifti(tmp_path / "t1.nii.gz", np.ones((12, 12, 12), np.float32)), _nifti(tmp_path / "seg.nii.gz", labels)
    )
    pre = PreprocessConfig(normalize="none", label_map="brats")
    sampling = SamplingConfig("patch3d", patch_size=(4, 4, 4), pos_fraction=1.0, num_samples=4)
    for s in build_transforms(pre, spatial_dims=3, train=True, sampling=sampling, seed=0)(case):
        assert s["mask"][0].sum() > 0 and s["mask"][1:].sum() == 0


def test_configs_validate_and_accept_lists():
    pre = PreprocessConfig(spacing=[1, 1, 2], spatial_size=[64.0, 64.0])
    assert pre.spacing == (1, 1, 2) and pre.spatial_size == (64, 64) and hash(pre)
    assert AugmentConfig(flip_axes=[0, 1]).flip_axes == (0, 1)
    for bad in ({"normalize": "robust"}, {"ct_window": (40, 0)}, {"spatial_size": (0, 4)}, {"clahe_clip": 0}):
        with pytest.raises(ValueError):
            PreprocessConfig(**bad)
    with pytest.raises(ValueError, match="patch3d"):
        SamplingConfig("patch3d")
    strengths = [AugmentConfig.preset(s, spatial_dims=3) for s in ("none", "light", "medium", "strong")]
    assert not strengths[0].active and strengths[3].flip_axes == (0, 1, 2)
    assert [a.rotate_deg for a in strengths] == sorted(a.rotate_deg for a in strengths)
    with pytest.raises(ValueError, match="slice2d"):
        build_transforms(pre, spatial_dims=2, train=True, sampling=SamplingConfig("slice2d"))
    with pytest.raises(ValueError, match="flip_axes"):
        build_transforms(PreprocessConfig(), AugmentConfig(flip_axes=(2,)), spatial_dims=2, train=True)


def test_validation_chain_is_deterministic_and_typed(tmp_path):
    _, _, case = _blob_2d(tmp_path)
    chain = build_transforms(PreprocessConfig(spatial_size=(8, 8)), AugmentConfig.preset("strong"), train=False)
    assert not any(isinstance(t, Randomizable) for t in chain.transforms)
    out = chain(dict(case, label=1))
    assert out["image"].dtype == torch.float32 and tuple(out["image"].shape) == (1, 8, 8)
    assert out["label"].dtype == torch.long and int(out["label"]) == 1
    train = [build_transforms(NONE, AugmentConfig.preset("strong"), train=True, seed=7)(case) for _ in range(2)]
    torch.testing.assert_close(train[0]["image"].as_tensor(), train[1]["image"].as_tensor())


def test_datasets_cache_modes_match_uncached(tmp_path):
    cases = []
    for n in range(2):
        img = (np.arange(100).reshape(10, 10) * (n + 1)) % 256
        cases.append(
            dict(
                _case(_png(tmp_path / f"i{n}.png", img), _png(tmp_path / f"i{n}_m.png", (img > 120) * 255)),
                case_id=f"c{n}",
            )
        )
    chain = build_transforms(PreprocessConfig(normalize="minmax", spatial_size=(6, 6)))
    plain = make_dataset(cases, chain, cache="none")
    memory = make_dataset(cases, chain, cache="memory")
    disk = make_dataset(cases, chain, cache="disk", cache_dir=tmp_path / "cache")
    assert type(plain) is Dataset and isinstance(memory, CacheDataset) and isinstance(disk, PersistentDataset)
    for n in range(2):
        for other in (memory[n], disk[n], disk[n]):  # the second disk read comes from the cache files
            for key in ("image", "mask"):
                torch.testing.assert_close(torch.as_tensor(other[key]), torch.as_tensor(plain[n][key]))
    assert any((tmp_path / "cache").iterdir())
    with pytest.raises(ValueError, match="cache_dir"):
        make_dataset(cases, chain, cache="disk")
    # a changed preprocessing chain must not read the first chain's cache files
    raw = build_transforms(PreprocessConfig(normalize="none", spatial_size=(6, 6)))
    raw_disk = make_dataset(cases, raw, cache="disk", cache_dir=tmp_path / "cache")
    torch.testing.assert_close(torch.as_tensor(raw_disk[1]["image"]), torch.as_tensor(Dataset(cases, raw)[1]["image"]))


def test_memory_cache_fills_from_a_shared_disk_cache(tmp_path, monkeypatch):
    cases = []
    for n in range(3):
        img = (np.arange(144).reshape(12, 12) * (n + 2)) % 256
        image, mask = _png(tmp_path / f"d{n}.png", img), _png(tmp_path / f"d{n}_m.png", (img > 100) * 255)
        cases.append(dict(_case(image, mask), case_id=f"d{n}", label=n % 2))
    chain = build_transforms(PreprocessConfig(normalize="zscore", spatial_size=(8, 8)))
    plain = [Dataset(cases, chain)[n] for n in range(3)]
    first = make_dataset(cases[:2], chain, cache="memory", cache_dir=tmp_path / "cache")  # fold 1: decodes
    assert isinstance(first, CacheDataset) and len(list((tmp_path / "cache").iterdir())) == 2
    for path in (tmp_path / "d0.png", tmp_path / "d0_m.png"):
        path.unlink()  # a later fold or trial reads case 0 from the disk cache, not the image files
    later = make_dataset(cases[::-1], chain, cache="memory", cache_dir=tmp_path / "cache")
    for n, item in zip((2, 1, 0), later):
        for key in ("image", "mask"):
            torch.testing.assert_close(torch.as_tensor(item[key]), torch.as_tensor(plain[n][key]))
        # read back or decoded now: the same types, and the resized pixdim (HD95 in mm) kept
        assert type(item["image"]) is type(plain[n]["image"]) and type(item["label"]) is type(plain[n]["label"])
        torch.testing.assert_close(item["image"].pixdim, plain[n]["image"].pixdim)
    # case 2 decoded now, cases 1 and 0 read back: one batch (a mix failed to collate in a 5,700-image study)
    batch = next(iter(torch.utils.data.DataLoader(later, batch_size=3)))
    assert batch["image"].shape == (3, 1, 8, 8) and batch["label"].tolist() == [0, 1, 0]
    # a disk that cannot take a file only costs the decode
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    full = make_dataset(cases[1:], chain, cache="memory", cache_dir=tmp_path / "full")
    torch.testing.assert_close(torch.as_tensor(full[1]["image"]), torch.as_tensor(plain[2]["image"]))
    assert not any((tmp_path / "full").iterdir())


def test_disk_cache_file_is_written_in_its_folder_and_renamed_whole(tmp_path, monkeypatch):
    # MONAI writes under /tmp and moves: a copy onto a shared disk that a trial side by side can read half-done
    img = (np.arange(144).reshape(12, 12) * 3) % 256
    case = dict(_case(_png(tmp_path / "a.png", img), _png(tmp_path / "a_m.png", (img > 100) * 255)), label=1)
    chain = build_transforms(PreprocessConfig(normalize="zscore", spatial_size=(8, 8)))
    cache, real_save, writes = tmp_path / "cache", torch.save, []

    def save(obj, f, **kwargs):
        writes.append((Path(f).parent, sorted(p.name for p in cache.glob("*.pt"))))
        real_save(obj, f, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    decoded = make_dataset([case], chain, cache="disk", cache_dir=cache)[0]
    assert writes == [(cache, [])]  # in the cache folder, and nothing under the final name while writing
    assert [p.suffix for p in cache.iterdir()] == [".pt"]  # renamed into place, no temporary file left
    again = make_dataset([case], chain, cache="disk", cache_dir=cache)[0]
    assert len(writes) == 1  # read back, not written again
    torch.testing.assert_close(again["image"], decoded["image"])
    assert again["label"] == 1 and type(again["image"]) is type(decoded["image"])


def test_cases_from_catalog_maps_labels_and_missing_values():
    frame = pd.DataFrame(
        {
            "case_id": ["a", "b", "c"],
            "patient_id": ["p1", "p1", "p2"],
            "image": [("x/a1.nii.gz", "x/a2.nii.gz"), "x/b.png", ["x/c.png"]],
            "mask": ["x/a_seg.nii.gz", np.nan, None],
            "label": ["yes", None, "no"],
            "enhancing_label": [4, np.nan, 3],
        }
    )
    cases = cases_from_catalog(frame, class_names=["no", "yes"])
    assert [c["image"] for c in cases] == [["x/a1.nii.gz", "x/a2.nii.gz"], ["x/b.png"], ["x/c.png"]]
    assert [c["mask"] for c in cases] == ["x/a_seg.nii.gz", None, None]
    assert [c["label"] for c in cases] == [1, None, 0]
    assert cases[0]["enhancing_label"] == 4 and "enhancing_label" not in cases[1]
    assert [c["label"] for c in cases_from_catalog(frame)] == [1, None, 0]  # sorted names by default
    with pytest.raises(DataError, match="maybe"):
        cases_from_catalog(frame.assign(label=["maybe", None, "no"]), class_names=["no", "yes"])


@pytest.mark.realdata
def test_lgg_slice_loads_as_rgb_with_binary_mask(lgg_root):
    patient = sorted(p for p in lgg_root.iterdir() if p.is_dir())[0]
    masks = sorted(patient.glob(f"{patient.name}_*_mask.png"))
    mask = next(m for m in masks if np.asarray(Image.open(m)).max() > 0)
    image = mask.with_name(mask.name.replace("_mask", ""))
    out = build_transforms(PreprocessConfig())(_case(str(image), str(mask)))
    assert tuple(out["image"].shape) == (3, 256, 256) and tuple(out["mask"].shape) == (1, 256, 256)
    expected = (np.asarray(Image.open(mask)) >= 128).astype(np.float32)
    np.testing.assert_array_equal(out["mask"].numpy()[0], expected)
    assert set(np.unique(out["mask"].numpy())) == {0.0, 1.0}


def test_validation_and_outer_sets_fill_from_the_study_disk_cache(tmp_path):
    from tumorbench.training.config import TrainConfig
    from tumorbench.training.data import FoldCases, val_dataset
    from tumorbench.training.validation import NATIVE_MASK

    cases = []
    for n in range(3):
        img = (np.arange(144).reshape(12, 12) * (n + 2)) % 256
        image, mask = _png(tmp_path / f"v{n}.png", img), _png(tmp_path / f"v{n}_m.png", (img > 100) * 255)
        cases.append(dict(_case(image, mask), case_id=f"v{n}", patient_id=f"p{n}"))
    fold = FoldCases(cases[:1], cases[1:2], None, 2, "image-folder", "c", "s", test=cases[2:])
    config = TrainConfig(
        task="segmentation",
        model="unet",
        data=str(tmp_path),
        out=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
        preprocess=PreprocessConfig(normalize="zscore", spatial_size=(8, 8)),
    )
    chain = build_transforms(config.preprocess, None, spatial_dims=2, with_mask=True, train=False)
    plain = [Dataset([cases[n]], chain)[0] for n in (1, 2)]
    first = [val_dataset(config, fold, 0, 1)[0], val_dataset(config, fold, 0, 1, outer=True)[0]]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # one file per case, none for training yet
    alone = val_dataset(config.replace(cache_dir=None), fold, 0, 1)  # no study cache: memory only
    assert isinstance(alone, CacheDataset) and not hasattr(alone, "disk")
    for n in (1, 2):
        Path(cases[n]["image"][0]).unlink()  # a later fold or trial reads them back, not the image files
    again = [val_dataset(config, fold, 0, 1)[0], val_dataset(config, fold, 0, 1, outer=True)[0]]
    for n, before, item, ref in zip((1, 2), first, again, plain):
        torch.testing.assert_close(torch.as_tensor(item["image"]), torch.as_tensor(ref["image"]))
        torch.testing.assert_close(item["image"].pixdim, ref["image"].pixdim)  # the scoring's spacing
        assert item["patient_id"] == f"p{n}" and type(item["image"]) is type(before["image"])
    assert again[1][NATIVE_MASK] == cases[2]["mask"]  # the outer case still scores on its mask file
