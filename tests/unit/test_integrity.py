"""Header-level checks of 3D cases at planning (data.integrity): truncation and grids, against nibabel."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.filebasedimages import ImageFileError

from tumorbench.data.catalog import scan
from tumorbench.data.fingerprint import FingerprintConfig, compute_fingerprint, unusable_cases
from tumorbench.data.integrity import case_grid_problem, volume_case_problem, volume_grid
from tumorbench.data.synthetic import BrainPhantomConfig, make_brain_study
from tumorbench.errors import DataError
from tumorbench.transforms.custom import LoadCased

SHAPE = (10, 11, 12)


def _write(path, affine=None, shape=SHAPE):
    nib.save(nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.float32).reshape(shape), affine), path)
    return path


def test_a_truncated_nii_names_its_file_and_the_bytes_missing(tmp_path):
    path = _write(tmp_path / "a.nii", np.eye(4))
    declared = 352 + int(np.prod(SHAPE)) * 4  # a single-file NIfTI-1: 348-byte header + 4 extension bytes
    assert path.stat().st_size == declared
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises((OSError, EOFError, ImageFileError)):  # nibabel cannot read it either
        np.asarray(nib.load(path).dataobj)
    with pytest.raises(DataError, match=f"{declared - 100:,} bytes of the {declared:,}") as err:
        volume_grid(path)
    assert str(path) in str(err.value)


def test_a_truncated_nii_gz_is_found_from_its_trailer_and_stream(tmp_path):
    path = _write(tmp_path / "a.nii.gz", np.eye(4))
    assert volume_grid(path)[0] == SHAPE
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises((OSError, EOFError, ImageFileError)):  # nibabel cannot read it either
        np.asarray(nib.load(path).dataobj)
    with pytest.raises(DataError, match="corrupt or truncated gzip stream") as err:
        volume_grid(path)
    assert str(path) in str(err.value)


def test_a_gzip_of_several_members_is_counted_not_refused(tmp_path):
    raw = _write(tmp_path / "a.nii", np.eye(4)).read_bytes()
    path = tmp_path / "multi.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))  # its trailer counts the last member
    assert int.from_bytes(path.read_bytes()[-4:], "little") != len(raw)
    assert np.asarray(nib.load(path).dataobj).shape == SHAPE  # a valid file, as nibabel reads it
    assert volume_grid(path)[0] == SHAPE


def test_grids_are_compared_in_ras_as_the_loader_compares_them(tmp_path):
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    image = str(_write(tmp_path / "t1.nii.gz", affine))
    # the same world grid stored with the first axis flipped (LPS-like): the same case once in RAS
    flipped = affine @ np.array([[-1, 0, 0, SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    mask = str(_write(tmp_path / "seg_flipped.nii.gz", flipped))
    assert case_grid_problem({"image": [image], "mask": mask}) is None
    shifted = affine.copy()
    shifted[:3, 3] += 5.0
    moved = str(_write(tmp_path / "seg_moved.nii.gz", shifted))
    assert "affine differs" in case_grid_problem({"image": [image], "mask": moved})
    small = str(_write(tmp_path / "t2.nii.gz", affine, (10, 11, 13)))
    problem = case_grid_problem({"image": [image, small], "mask": float("nan")})
    assert problem.startswith(small) and "image channel shape (10, 11, 13)" in problem
    # the training loader reads the same three cases and decides as planning did, by the same rule
    load = LoadCased(spatial_dims=3)
    case = {"case_id": "c", "patient_id": "p", "label": float("nan")}
    assert load({**case, "image": [image], "mask": mask})["mask"].shape == (1, *SHAPE)
    with pytest.raises(DataError, match="mask voxel-to-world affine differs from that of .*t1.nii.gz"):
        load({**case, "image": [image], "mask": moved})
    with pytest.raises(DataError, match=r"t2.nii.gz: image channel shape \(10, 11, 13\) does not match"):
        load({**case, "image": [image, small], "mask": mask})


def test_a_sampled_3d_fingerprint_still_finds_a_truncated_volume(tmp_path):
    root = make_brain_study(tmp_path / "brain", BrainPhantomConfig(cases=4, shape=(16, 16, 16)))
    frame = scan(root)
    cut = frame["image"].iloc[2][0]
    with open(cut, "rb+") as handle:
        handle.truncate(handle.seek(0, 2) // 2)
    config = FingerprintConfig(max_volumes=2, hash_duplicates=False)
    in_sample: list[str] = []
    compute_fingerprint(frame, config, unreadable=in_sample)
    named = [p.split(": ")[0] for p in in_sample + unusable_cases(frame, config)]
    assert named == [cut]  # found once, whether the fingerprint's sample read it or the header check did
    assert unusable_cases(frame, FingerprintConfig(max_volumes=10)) == []  # every volume already read whole


def test_dicom_series_are_checked_by_header_as_the_reader_would_refuse_them(tmp_path):
    import shutil

    from tumorbench.data.dicom import read_dicom_series
    from tumorbench.data.synthetic_lung import LungPhantomConfig, make_lung_study

    root = make_lung_study(tmp_path / "lung", LungPhantomConfig(cases=4, shape=(16, 16, 16), repeat_scan_fraction=0))
    frame = scan(root)
    rows = frame.to_dict("records")
    assert frame.attrs["layout"] == "dicom" and [volume_case_problem(r) for r in rows] == [None] * 4
    kept = frame.index.get_loc(frame.sample(n=1, random_state=0).index[0])  # what a 1-volume fingerprint reads
    series = [Path(r["image"][0]) for n, r in enumerate(rows) if n != kept]  # the three others, broken below
    cut = series[0] / "slice_003.dcm"
    with open(cut, "rb+") as handle:  # the last 100 pixel bytes lost
        handle.truncate(handle.seek(0, 2) - 100)
    (series[1] / "slice_004.dcm").unlink()  # a gap in the slice positions
    shutil.copy(series[2] / "slice_002.dcm", series[2] / "copy.dcm")  # the same position twice
    problems = [volume_case_problem(r) for n, r in enumerate(rows) if n != kept]
    assert problems[0].startswith(f"{cut}: truncated: its pixel data ends at byte")
    assert "non-uniform slice spacing" in problems[1] and "duplicate slice position" in problems[2]
    assert volume_case_problem(rows[kept]) is None
    uids = [r["series_uid"] for n, r in enumerate(rows) if n != kept]
    for source, problem, uid in zip(series, problems, uids):  # the reader refuses each of them too
        with pytest.raises(DataError):
            read_dicom_series(source)
        assert len(uid) > 10 and uid not in problem  # no UID in the message
    config = FingerprintConfig(max_volumes=1, hash_duplicates=False)  # one series read whole, three by header
    in_sample: list[str] = []
    compute_fingerprint(frame, config, unreadable=in_sample)
    found = unusable_cases(frame, config)
    assert in_sample == [] and len(found) == 3 and all(sum(str(s) in p for p in found) == 1 for s in series)


def test_a_dicom_series_mask_is_checked_as_the_loader_would_refuse_it(tmp_path):
    """A NIfTI mask off its series' grid, and a SEG whose series is gone: named at planning, refused by the loader."""
    from pydicom.uid import generate_uid

    from tumorbench.data.dicom import dicom_series_headers
    from tumorbench.data.synthetic_lung import LungPhantomConfig, make_lung_study
    from tumorbench.dicomseg import to_dicom_seg

    root = make_lung_study(tmp_path / "lung", LungPhantomConfig(cases=3, shape=(16, 16, 16), repeat_scan_fraction=0))
    rows = scan(root).to_dict("records")
    assert [volume_case_problem(r) for r in rows] == [None] * 3
    moved = nib.load(rows[0]["mask"])
    affine = moved.affine.copy()
    affine[:3, 3] += 4.0  # 4 mm off: not the series' grid
    nib.save(nib.Nifti1Image(np.asarray(moved.dataobj), affine), rows[0]["mask"])
    problem = volume_case_problem(rows[0])
    assert problem.startswith(f"{rows[0]['mask']}: mask voxel-to-world affine differs from that of its series")
    load, case = LoadCased(spatial_dims=3), {"case_id": "c", "patient_id": "p", "label": float("nan")}
    with pytest.raises(DataError, match="mask voxel-to-world affine differs"):
        load({**case, "image": rows[0]["image"], "mask": rows[0]["mask"]})
    assert load({**case, "image": rows[1]["image"], "mask": rows[1]["mask"]})["mask"].shape[1:] == (16, 16, 16)

    series = Path(rows[2]["image"][0])
    mask = nib.load(rows[2]["mask"]).get_fdata().astype(np.uint8)
    seg = to_dicom_seg(mask[None], dicom_series_headers(series), algorithm_name="reader", algorithm_version="1")
    seg.ReferencedSeriesSequence[0].SeriesInstanceUID = generate_uid()  # a series that is not there
    seg.save_as(series.parent / "seg.dcm", enforce_file_format=True)
    problem = volume_case_problem({**rows[2], "mask": str(series.parent / "seg.dcm")})
    assert problem == f"{series.parent / 'seg.dcm'}: the series it references is not in its folder or the two above"
    with pytest.raises(DataError, match="the series it references is not"):
        load({**case, "image": rows[2]["image"], "mask": str(series.parent / "seg.dcm")})
