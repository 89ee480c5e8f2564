"""MetaImage and NRRD volumes: voxels and RAS geometry against SimpleITK's own NIfTI writer, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from tumorbench.data import itk_io
from tumorbench.data.catalog import scan
from tumorbench.data.integrity import case_grid_problem, volume_grid
from tumorbench.data.io import read_image
from tumorbench.errors import DataError

SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")


def _volume(shape=(12, 10, 7), dtype=np.int16) -> sitk.Image:
    """An oblique, anisotropic volume with an off-centre origin (ITK's (K, J, I) array order)."""
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.integers(-1000, 1000, size=shape[::-1]).astype(dtype))
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    angle = np.deg2rad(20)  # a rotation about the superior axis: not any axis-aligned orientation
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    image.SetDirection(tuple(rotation.ravel()))
    return image


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_voxels_and_affine_equal_the_same_volume_written_as_nifti(tmp_path, suffix):
    image = _volume()
    sitk.WriteImage(image, str(tmp_path / f"v{suffix}"))
    sitk.WriteImage(image, str(tmp_path / "v.nii.gz"))  # ITK's own LPS -> RAS conversion, read by nibabel
    ours, reference = read_image(tmp_path / f"v{suffix}"), read_image(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(ours.array, reference.array)
    np.testing.assert_allclose(ours.affine, reference.affine, atol=1e-5)
    np.testing.assert_allclose(ours.spacing, (0.7, 0.8, 2.5), atol=1e-6)
    # one voxel's world position as SimpleITK computes it (LPS: x and y negated in RAS)
    lps = image.TransformIndexToPhysicalPoint((3, 4, 5))
    np.testing.assert_allclose(ours.affine @ [3, 4, 5, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-5)
    canonical = read_image(tmp_path / f"v{suffix}", canonical=True)
    np.testing.assert_array_equal(canonical.array, read_image(tmp_path / "v.nii.gz", canonical=True).array)
    assert volume_grid(str(tmp_path / f"v{suffix}"))[0] == canonical.array.shape


def test_a_cut_short_raw_data_file_is_found_from_its_header(tmp_path):
    sitk.WriteImage(_volume(), str(tmp_path / "v.mhd"))  # v.raw: 12 * 10 * 7 int16 = 1680 bytes
    raw = tmp_path / "v.raw"
    raw.write_bytes(raw.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"v\.mhd: truncated image data: 680 bytes short"):
        volume_grid(str(tmp_path / "v.mhd"))
    with pytest.raises(DataError, match=r"v\.mhd: corrupt or truncated image data"):
        read_image(tmp_path / "v.mhd")
    sitk.WriteImage(_volume(), str(tmp_path / "w.mha"))
    whole = (tmp_path / "w.mha").read_bytes()
    (tmp_path / "w.mha").write_bytes(whole[:-100])
    with pytest.raises(DataError, match="100 bytes short"):
        volume_grid(str(tmp_path / "w.mha"))


def test_a_detached_header_reads_only_a_data_file_beside_it(tmp_path):
    sitk.WriteImage(_volume(), str(tmp_path / "v.mhd"))
    text = (tmp_path / "v.mhd").read_text()
    for name in ("../v.raw", "/etc/passwd", "LIST", "slice%03d.raw 1 10 1"):
        (tmp_path / "bad.mhd").write_text(text.replace("ElementDataFile = v.raw", f"ElementDataFile = {name}"))
        with pytest.raises(DataError, match=r"bad\.mhd: data file .*only one file beside the header"):
            read_image(tmp_path / "bad.mhd")
    (tmp_path / "gone.mhd").write_text(text.replace("v.raw", "gone.raw"))
    with pytest.raises(DataError, match="its data file gone.raw is not beside it"):
        read_image(tmp_path / "gone.mhd")


def test_headers_that_cannot_be_read_safely_are_refused_before_any_voxel(tmp_path):
    sitk.WriteImage(_volume(), str(tmp_path / "v.mhd"))
    text = (tmp_path / "v.mhd").read_text()
    (tmp_path / "huge.mhd").write_text(text.replace("DimSize = 12 10 7", "DimSize = 4096 4096 4096"))
    (tmp_path / "huge.raw").write_bytes(b"")
    (tmp_path / "huge.mhd").write_text((tmp_path / "huge.mhd").read_text().replace("v.raw", "huge.raw"))
    with pytest.raises(DataError, match=r"huge\.mhd: header declares \(4096, 4096, 4096\)"):
        read_image(tmp_path / "huge.mhd")
    sitk.WriteImage(sitk.Image([8, 8], sitk.sitkUInt8), str(tmp_path / "flat.mha"))
    with pytest.raises(DataError, match="expected a 3D volume"):
        read_image(tmp_path / "flat.mha")
    sitk.WriteImage(sitk.Image([8, 8, 4], sitk.sitkVectorUInt8, 3), str(tmp_path / "rgb.nrrd"))
    with pytest.raises(DataError, match="3 components per voxel"):
        read_image(tmp_path / "rgb.nrrd")
    (tmp_path / "junk.mha").write_bytes(b"not a header at all\n" * 10)
    with pytest.raises(DataError, match=r"junk\.mha: not a readable MetaImage/NRRD header"):
        read_image(tmp_path / "junk.mha")


def test_mha_case_folders_and_an_nnunet_mha_dataset_are_catalogued_and_grid_checked(tmp_path):
    for case in ("case_00000", "case_00001"):
        (tmp_path / "kits" / case).mkdir(parents=True)
        sitk.WriteImage(_volume(), str(tmp_path / "kits" / case / "imaging.mha"))
        mask = sitk.Cast(_volume() > 500, sitk.sitkUInt8)
        sitk.WriteImage(mask, str(tmp_path / "kits" / case / "segmentation.mha"))
    frame = scan(str(tmp_path / "kits"))
    assert len(frame) == 2 and frame["layout"].iloc[0] == "case-folders"
    assert frame["mask"].iloc[0].endswith("segmentation.mha")
    assert case_grid_problem(frame.iloc[0].to_dict()) is None
    shifted = _volume()
    shifted.SetOrigin((12.0, -20.0, 30.0))  # 2 mm off: the mask no longer lies on the image's grid
    sitk.WriteImage(
        sitk.Cast(shifted > 500, sitk.sitkUInt8), str(tmp_path / "kits" / "case_00001" / "segmentation.mha")
    )
    assert "segmentation.mha" in case_grid_problem(frame.iloc[1].to_dict())

    root = tmp_path / "Dataset001_Test"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(2):
        sitk.WriteImage(_volume(), str(root / "imagesTr" / f"c{i}_0000.mha"))
        sitk.WriteImage(sitk.Cast(_volume() > 0, sitk.sitkUInt8), str(root / "labelsTr" / f"c{i}.mha"))
    spec = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "tumor": 1}, "file_ending": ".mha"}
    (root / "dataset.json").write_text(json.dumps(spec | {"numTraining": 2}))
    frame = scan(str(root))
    assert frame["layout"].iloc[0] == "msd" and len(frame) == 2
    np.testing.assert_array_equal(
        read_image(frame["mask"].iloc[0]).array, sitk.GetArrayFromImage(_volume() > 0).transpose(2, 1, 0)
    )
    assert itk_io.header(frame["image"].iloc[0][0])["dtype"] == "int16"


def test_a_detached_headers_content_hash_covers_its_data_file(tmp_path):
    from tumorbench.data.io import image_content_hash

    sitk.WriteImage(_volume(), str(tmp_path / "v.mhd"))
    before = image_content_hash(tmp_path / "v.mhd")
    raw = bytearray((tmp_path / "v.raw").read_bytes())
    raw[100] ^= 0xFF  # one voxel changed, the header untouched
    (tmp_path / "v.raw").write_bytes(bytes(raw))
    assert image_content_hash(tmp_path / "v.mhd") != before


def test_3d_slicer_segmentations_are_masks_by_their_suffix(tmp_path):
    """``Segmentation.seg.nrrd`` beside ``CT.nrrd`` (a case folder) and ``masks/<case>.seg.nrrd`` (paired)."""
    mask = sitk.Cast(_volume() > 500, sitk.sitkUInt8)
    for case in ("p01", "p02"):
        (tmp_path / "slicer" / case).mkdir(parents=True)
        sitk.WriteImage(_volume(), str(tmp_path / "slicer" / case / "CT.nrrd"))
        sitk.WriteImage(mask, str(tmp_path / "slicer" / case / "Segmentation.seg.nrrd"), True)
        for folder, name in (("images", f"{case}.nrrd"), ("masks", f"{case}.seg.nrrd")):
            (tmp_path / "paired" / folder).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(_volume() if folder == "images" else mask, str(tmp_path / "paired" / folder / name))
    for root, layout in (("slicer", "case-folders"), ("paired", "paired")):
        frame = scan(str(tmp_path / root))
        assert layout == frame["layout"].iloc[0] and len(frame) == 2, root
        assert all(m.endswith(".seg.nrrd") for m in frame["mask"]) and all(len(i) == 1 for i in frame["image"])
        np.testing.assert_array_equal(
            read_image(frame["mask"].iloc[0]).array, sitk.GetArrayFromImage(mask).transpose(2, 1, 0)
        )


def test_an_attached_header_naming_a_file_elsewhere_is_refused_too(tmp_path):
    """ITK would follow an .mha's ElementDataFile wherever it points, as an .mhd's."""
    sitk.WriteImage(_volume(), str(tmp_path / "v.mhd"))
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "v.mha").write_text((tmp_path / "v.mhd").read_text().replace("= v.raw", "= ../v.raw"))
    with pytest.raises(DataError, match=r"v\.mha: data file '\.\./v\.raw': only one file beside the header"):
        read_image(tmp_path / "inner" / "v.mha")
