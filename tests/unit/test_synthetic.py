"""Writers and synthetic phantoms, checked against hand geometry, pydicom, nibabel and skimage."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage
from skimage import measure

from tumorbench.data.dicom import read_dicom_series
from tumorbench.data.io import read_nifti
from tumorbench.data.synthetic import BrainPhantomConfig, brain_case, make_brain_study, make_study
from tumorbench.data.synthetic_lung import LungPhantomConfig, lung_case, make_lung_study
from tumorbench.data.writers import write_dicom_series, write_nifti
from tumorbench.errors import DataError

BRAIN = BrainPhantomConfig(cases=3, shape=(40, 40, 32), spacing=(4.5, 4.5, 5.0), seed=3)
LUNG = LungPhantomConfig(cases=4, shape=(40, 40, 24), spacing=(2.4, 2.4, 3.2), seed=5, repeat_scan_fraction=0.0)
COS30, SIN30 = np.sqrt(3) / 2, 0.5


def _oblique_affine() -> np.ndarray:
    """RAS affine: i = 0.8 mm along (cos30, sin30, 0), j = 0.6 mm along (-sin30, cos30, 0), k = 2 mm up."""
    return np.array(
        [[0.8 * COS30, -0.6 * SIN30, 0, 10.0], [0.8 * SIN30, 0.6 * COS30, 0, -20.0], [0, 0, 2.0, 30.0], [0, 0, 0, 1]]
    )


@pytest.fixture(scope="module")
def brain_root(tmp_path_factory) -> Path:
    return make_brain_study(tmp_path_factory.mktemp("brain"), BRAIN)


@pytest.fixture(scope="module")
def lung_root(tmp_path_factory) -> Path:
    return make_lung_study(tmp_path_factory.mktemp("lung"), LUNG)


def _labels(root: Path) -> list[dict]:
    with open(root / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _sphericity(mask: np.ndarray, spacing) -> float:
    """pi^(1/3) (6V)^(2/3) / A, with A from a marching-cubes mesh: 1 for a sphere."""
    verts, faces, _, _ = measure.marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5, spacing=spacing)
    volume = mask.sum() * np.prod(spacing)
    return float(np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / measure.mesh_surface_area(verts, faces))


# ----------------------------------------------------------------------------- writers


def test_dicom_writer_geometry_matches_hand_computation(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.uniform(-1000, 2000, size=(6, 5, 4))
    paths = write_dicom_series(tmp_path, volume, _oblique_affine(), patient_id="P7", uid_seed="s")
    assert [p.name for p in paths] == [f"slice_{k:03d}.dcm" for k in range(4)]
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        # RAS -> LPS negates x and y: i along (-cos30, -sin30, 0), j along (sin30, -cos30, 0).
        np.testing.assert_allclose(
            [float(v) for v in ds.ImageOrientationPatient], [-COS30, -SIN30, 0, SIN30, -COS30, 0], atol=1e-9
        )
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [0.6, 0.8])
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [-10.0, 20.0, 30.0 + 2.0 * k])
        assert float(ds.SliceThickness) == pytest.approx(2.0) and ds.InstanceNumber == k + 1
        assert (ds.Rows, ds.Columns) == (5, 6) and ds.PixelRepresentation == 0 and ds.BitsStored == 16
        assert ds.PatientID == "P7" and ds.PhotometricInterpretation == "MONOCHROME2"
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(hu, np.rint(volume[:, :, k] + 1024).T - 1024)  # pixel[row=j, col=i]
    image = read_dicom_series(tmp_path)
    assert np.abs(image.array - volume).max() <= 0.5
    np.testing.assert_allclose(image.affine, _oblique_affine(), atol=1e-6)


def test_dicom_writer_signed_mr_and_deterministic_uids(tmp_path):
    volume = np.linspace(-300.0, 300.0, 2 * 3 * 2).reshape(2, 3, 2)
    kwargs = dict(patient_id="M", modality="MR", rescale_slope=0.5, rescale_intercept=0.0, uid_seed="x")
    first = write_dicom_series(tmp_path / "a", volume, np.diag([1.0, 1.0, 3.0, 1.0]), **kwargs)
    second = write_dicom_series(tmp_path / "b", volume, np.diag([1.0, 1.0, 3.0, 1.0]), **kwargs)
    ds = pydicom.dcmread(first[0])
    assert ds.SOPClassUID == pydicom.uid.MRImageStorage and ds.PixelRepresentation == 1
    np.testing.assert_array_equal(ds.pixel_array, np.rint(volume[:, :, 0] / 0.5).T)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    other = write_dicom_series(tmp_path / "c", volume, np.eye(4), patient_id="M", uid_seed="y")
    assert pydicom.dcmread(other[0]).SeriesInstanceUID != ds.SeriesInstanceUID


def test_dicom_writer_rejects_bad_input(tmp_path):
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(DataError, match="not perpendicular") as info:
        write_dicom_series(tmp_path / "s", np.zeros((2, 2, 2)), sheared, patient_id="p")
    assert str(tmp_path / "s") in str(info.value)
    with pytest.raises(DataError, match="outside 16 bits"):
        write_dicom_series(tmp_path / "r", np.full((2, 2, 2), 1e6), np.eye(4), patient_id="p")


def test_write_nifti_sets_codes_and_creates_folders(tmp_path):
    affine = _oblique_affine()
    data = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    path = write_nifti(tmp_path / "x" / "y.nii.gz", data, affine, dtype=np.uint8)
    img = nib.load(path)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.arange(24).reshape(2, 3, 4))


# ----------------------------------------------------------------------------- brain


def test_brain_layout_labels_and_lps_affine(brain_root):
    cases = sorted(p.name for p in brain_root.iterdir())
    assert cases == [f"SynthBraTS_{n:05d}" for n in range(3)]
    for case in cases:
        names = sorted(p.name for p in (brain_root / case).iterdir())
        assert names == sorted(f"{case}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair", "seg"))
        seg = nib.load(brain_root / case / f"{case}_seg.nii.gz")
        flair = nib.load(brain_root / case / f"{case}_flair.nii.gz")
        assert nib.aff2axcodes(seg.affine) == ("L", "P", "S") and seg.get_data_dtype() == np.uint8
        assert flair.get_data_dtype() == np.float32 and flair.shape == BRAIN.shape
        np.testing.assert_allclose(np.abs(np.diag(seg.affine))[:3], BRAIN.spacing)
        np.testing.assert_allclose(seg.affine, flair.affine)
        assert set(np.unique(np.asarray(seg.dataobj))) == {0, 1, 2, 4}
        assert read_nifti(brain_root / case / f"{case}_seg.nii.gz", canonical=True).meta["orientation"] == "RAS"


def test_brain_regions_nest_and_show_clinical_contrast(brain_root):
    stats = {k: [] for k in ("enclosed", "flair", "t2", "t1ce", "t1")}
    for case_dir in sorted(brain_root.iterdir()):
        load = {
            m: np.asarray(nib.load(case_dir / f"{case_dir.name}_{m}.nii.gz").dataobj)
            for m in ("t1", "t1ce", "t2", "flair", "seg")
        }
        seg = load["seg"]
        core = np.isin(seg, (1, 4))
        stats["enclosed"].append((seg[ndimage.binary_dilation(core)] > 0).mean())
        # Normal brain: tumor-free voxels of a central ellipsoid well inside the skull.
        grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in seg.shape], indexing="ij")
        normal = (sum(g**2 for g in grid) < 0.5**2) & (seg == 0)
        for m in ("flair", "t2"):
            stats[m].append(load[m][seg == 2].mean() / load[m][normal].mean())
        stats["t1ce"].append(load["t1ce"][seg == 4].mean() / load["t1ce"][seg == 1].mean())
        stats["t1"].append(load["t1"][seg > 0].mean() / load["t1"][normal].mean())
    assert min(stats["enclosed"]) > 0.95
    assert min(stats["flair"]) > 1.3 and min(stats["t2"]) > 1.2
    assert min(stats["t1ce"]) > 1.0 and np.mean(stats["t1ce"]) > 1.2
    assert max(stats["t1"]) < 1.0


def test_brain_is_deterministic_and_tumor_free_fraction(tmp_path):
    one, again = brain_case(BRAIN, 1), brain_case(BRAIN, 1)
    assert all(np.array_equal(one[k], again[k]) for k in one)
    assert not np.array_equal(one["flair"], brain_case(replace(BRAIN, seed=4), 1)["flair"])
    config = replace(BRAIN, tumor_free_fraction=1 / 3, shape=(24, 24, 16))
    free = [int(not brain_case(config, n)["seg"].any()) for n in range(3)]
    assert sum(free) == 1
    make_brain_study(tmp_path / "a", replace(config, cases=1))
    with pytest.raises(DataError, match="not empty"):
        make_brain_study(tmp_path / "a", replace(config, cases=1))


# ----------------------------------------------------------------------------- lung


def test_lung_labels_match_files_and_dicom(lung_root):
    rows = _labels(lung_root)
    assert list(rows[0]) == [
        "case_id",
        "patient_id",
        "series_dir",
        "mask",
        "label",
        "malignancy",
        "nodule_center_ijk",
        "nodule_radius_mm",
    ]
    assert len(rows) == LUNG.cases and len({r["case_id"] for r in rows}) == LUNG.cases
    assert sorted(r["label"] for r in rows) == ["benign", "benign", "malignant", "malignant"]
    for row in rows:
        files = sorted((lung_root / row["series_dir"]).glob("slice_*.dcm"))
        assert len(files) == LUNG.shape[2] and (lung_root / row["mask"]).is_file()
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        assert ds.PatientID == row["patient_id"] and ds.Modality == "CT"
        rating = int(row["malignancy"])
        assert rating <= 2 if row["label"] == "benign" else rating >= 4
        mask = read_nifti(lung_root / row["mask"])
        assert mask.array[tuple(json.loads(row["nodule_center_ijk"]))] == 1
        if row["label"] == "benign":  # a smooth sphere's volume gives back its radius
            radius = (3 * mask.array.sum() * np.prod(mask.spacing) / (4 * np.pi)) ** (1 / 3)
            assert radius == pytest.approx(float(row["nodule_radius_mm"]), rel=0.25)


def test_lung_hounsfield_units_and_mask_alignment(lung_root):
    for row in _labels(lung_root):
        ct = read_dicom_series(lung_root / row["series_dir"])
        mask = read_nifti(lung_root / row["mask"])
        assert ct.array.shape == mask.array.shape == LUNG.shape
        np.testing.assert_allclose(ct.affine, mask.affine, atol=1e-4)
        assert nib.aff2axcodes(ct.affine) == ("L", "P", "S")
        hu = ct.array
        assert np.median(hu[:3, :3, :]) == pytest.approx(-1000, abs=10)  # corners are air
        dark = hu < -500
        labels, _ = ndimage.label(dark)
        outside = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel()]))
        lungs = dark & ~np.isin(labels, outside)  # air pockets enclosed by the body
        assert np.median(hu[ndimage.binary_erosion(lungs)]) == pytest.approx(-850, abs=15)
        assert np.median(hu[(hu > -50) & (hu < 300)]) == pytest.approx(40, abs=10)  # soft tissue, not fat
        assert hu[mask.array > 0].mean() > -200


def test_spiculated_malignant_nodules_are_less_spherical(lung_root):
    spheric = {"benign": [], "malignant": []}
    for row in _labels(lung_root):
        mask = read_nifti(lung_root / row["mask"])
        spheric[row["label"]].append(_sphericity(mask.array > 0, mask.spacing))
    assert min(spheric["benign"]) > 0.85
    assert max(spheric["malignant"]) < min(spheric["benign"]) - 0.05


def test_lung_is_deterministic_and_groups_repeat_scans(tmp_path):
    first, again = lung_case(LUNG, 0, 0, True), lung_case(LUNG, 0, 0, True)
    assert np.array_equal(first["hu"], again["hu"]) and np.array_equal(first["mask"], again["mask"])
    assert not np.array_equal(first["hu"], lung_case(replace(LUNG, seed=6), 0, 0, True)["hu"])
    config = replace(LUNG, cases=3, repeat_scan_fraction=1.0)
    root, again_root = make_lung_study(tmp_path / "a", config), make_lung_study(tmp_path / "b", config)
    rows = _labels(root)
    assert [r["patient_id"] for r in rows] == ["SYNTH-LUNG-0000", "SYNTH-LUNG-0000", "SYNTH-LUNG-0001"]
    assert rows[0]["label"] == rows[1]["label"]
    headers = [pydicom.dcmread(next((root / r["series_dir"]).glob("*.dcm")), stop_before_pixels=True) for r in rows[:2]]
    assert headers[0].PatientID == headers[1].PatientID and headers[0].SeriesInstanceUID != headers[1].SeriesInstanceUID
    digests = [[hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(r.rglob("*.*"))] for r in (root, again_root)]
    assert digests[0] == digests[1] and len(digests[0]) == 3 * (LUNG.shape[2] + 1) + 1


def test_make_study_applies_cases_and_seed(tmp_path):
    root = make_study("brain-mri", tmp_path / "m", cases=1, seed=2)
    seg = read_nifti(root / "SynthBraTS_00000" / "SynthBraTS_00000_seg.nii.gz")
    assert [p.name for p in root.iterdir()] == ["SynthBraTS_00000"]
    assert seg.array.shape == BrainPhantomConfig().shape
    expected = brain_case(BrainPhantomConfig(seed=2), 0)["seg"]
    np.testing.assert_array_equal(seg.array, expected)


def test_configs_validate():
    with pytest.raises(ValueError, match="cases"):
        BrainPhantomConfig(cases=0)
    with pytest.raises(ValueError, match="malignant_fraction"):
        LungPhantomConfig(malignant_fraction=1.5)
    with pytest.raises(ValueError, match="unknown synthetic task"):
        make_study("liver", "/nonexistent")
