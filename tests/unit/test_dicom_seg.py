"""DICOM SEG out: a mask written with highdicom reads back voxel for voxel, over the right instances."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.uid import SegmentationStorage

from model_packages import CT3D, make_package, synthetic_png
from tumorbench.cli import main
from tumorbench.data.dicom import dicom_series_headers
from tumorbench.data.io import read_image
from tumorbench.data.writers import write_dicom_series
from tumorbench.dicomseg import (
    mask_from_dicom_seg,
    package_version,
    result_to_dicom_seg,
    to_bytes,
    to_dicom_seg,
    upload_sources,
)
from tumorbench.inference import Predictor
from tumorbench.results import mask_file
from tumorbench.uploads import UploadError


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CT series whose k axis runs against the slice normal, so the reader reorders its files."""
    rng = np.random.default_rng(1)
    volume = rng.normal(-700, 200, (28, 24, 10)).astype(np.float32)
    volume[8:16, 6:14, 3:7] = 40.0
    affine = np.array([[-0.9, 0, 0, 20.0], [0, -0.8, 0, 10.0], [0, 0, -2.5, 50.0], [0, 0, 0, 1]])
    root = tmp_path_factory.mktemp("ct")
    write_dicom_series(root, volume, affine, patient_id="SEGTEST", uid_seed="seg")
    return root


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_package(tmp_path_factory.mktemp("pkg") / "ct3d", CT3D)


def test_frames_land_on_the_instances_at_their_world_position(series: Path) -> None:
    """Mask voxels set from world coordinates; each instance's frame is checked from its own header."""
    image = read_image(series)
    sources = dicom_series_headers(series)
    ii, jj, kk = np.meshgrid(*(np.arange(n) for n in image.array.shape), indexing="ij")
    world = np.einsum("ab,bijk->aijk", image.affine[:3], np.stack([ii, jj, kk, np.ones_like(ii)]))
    mask = np.stack([(world[0] < 5.0), (world[2] > 40.0) & (world[1] > 0.0)]).astype(np.uint8)  # RAS x, z and y
    seg = hd.seg.segread(
        io.BytesIO(
            to_bytes(
                to_dicom_seg(
                    mask, sources, algorithm_name="test", algorithm_version="1", segment_names=["left", "upper"]
                )
            )
        )
    )
    for ds in sources:
        frame = seg.get_pixels_by_source_instance([str(ds.SOPInstanceUID)], segment_numbers=[1, 2])[0]
        ipp, iop = np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient, float)
        rows, cols = np.mgrid[: ds.Rows, : ds.Columns]
        lps = (
            ipp[:, None, None]
            + iop[:3, None, None] * cols * float(ds.PixelSpacing[1])
            + iop[3:, None, None] * rows * float(ds.PixelSpacing[0])
        )
        assert np.array_equal(frame[..., 0], (-lps[0] < 5.0).astype(np.uint8))  # RAS x = -LPS x
        assert np.array_equal(frame[..., 1], ((lps[2] > 40.0) & (-lps[1] > 0.0)).astype(np.uint8))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["left", "upper"]


def test_prediction_as_dicom_seg_equals_the_nifti_answer(series: Path, package: Path) -> None:
    predictor = Predictor.from_package(package)
    result = predictor.predict_image(read_image(series))
    assert 0 < result.mask.sum() < result.mask.size
    sources = dicom_series_headers(series)
    blob = result_to_dicom_seg(result, sources, predictor.manifest, package_version(package, predictor.manifest))
    with pydicom.config.strict_reading():  # pydicom's validation while reading
        raw = pydicom.dcmread(io.BytesIO(blob))
    assert raw.SOPClassUID == SegmentationStorage and raw.SegmentationType == "BINARY"
    seg = hd.seg.segread(io.BytesIO(blob))
    back = mask_from_dicom_seg(seg, sources)
    nifti = nib.Nifti1Image.from_bytes(gzip.decompress(mask_file(result)[1]))
    assert np.array_equal(back, result.mask) and np.array_equal(back[0], np.asarray(nifti.dataobj))
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == {
        str(ds.SOPInstanceUID) for ds in sources
    }
    segment = seg.SegmentSequence[0]
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert segment.SegmentLabel == "tumor" and segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert algorithm.AlgorithmName == "tumorbench unet_tiny" and algorithm.AlgorithmVersion.startswith("ct3d@")


def test_predict_cli_writes_dicom_seg_and_refuses_other_inputs(series: Path, package: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    seg_out, nii_out = tmp_path / "seg.dcm", tmp_path / "mask.nii.gz"
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(series.glob("*.dcm")):
            handle.write(path, f"study/{path.name}")
    result = runner.invoke(main, ["predict", "--package", str(package), str(archive), "--out", str(seg_out)])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    result = runner.invoke(main, ["predict", "--package", str(package), str(series), "--out", str(nii_out)])
    assert result.exit_code == 0, result.output
    mask = np.asarray(nib.load(nii_out).dataobj)
    back = mask_from_dicom_seg(hd.seg.segread(seg_out), dicom_series_headers(series))[0]
    assert np.array_equal(back, mask) and int(back.sum()) == answer["lesions"][0]["voxels"] + sum(
        lesion["voxels"] for lesion in answer["lesions"][1:]
    )
    result = runner.invoke(main, ["predict", "--package", str(package), str(nii_out), "--out", str(tmp_path / "x.dcm")])
    assert result.exit_code == 2 and "needs a DICOM input" in result.output and "nifti" in result.output


def test_upload_sources_refuses_non_dicom(tmp_path: Path, series: Path) -> None:
    png = synthetic_png(tmp_path / "a.png").read_bytes()
    with pytest.raises(UploadError, match="needs a DICOM input .* got png") as info:
        upload_sources(png)
    assert info.value.status == 422
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        handle.writestr("a.png", png)
    with pytest.raises(UploadError, match="got zip of other files"):
        upload_sources(buffer.getvalue())
    one = sorted(series.glob("*.dcm"))[3]
    assert [str(ds.SOPInstanceUID) for ds in upload_sources(one.read_bytes())] == [pydicom.dcmread(one).SOPInstanceUID]


def test_predict_cli_reads_the_series_as_mha_and_as_mhd_plus_raw_alike(series: Path, package: Path, tmp_path) -> None:
    """The same scan as a DICOM series, a one-file .mha and a local .mhd + .raw pair: the same mask."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    scan = reader.Execute()  # SimpleITK's own DICOM reader: rescaled values, LPS geometry
    sitk.WriteImage(scan, str(tmp_path / "scan.mha"))
    sitk.WriteImage(scan, str(tmp_path / "scan.mhd"))
    runner, masks = CliRunner(), []
    for source in (series, tmp_path / "scan.mha", tmp_path / "scan.mhd"):
        out = tmp_path / f"{source.name}.nii.gz"
        result = runner.invoke(main, ["predict", "--package", str(package), str(source), "--out", str(out)])
        assert result.exit_code == 0, result.output
        masks.append(np.asarray(nib.load(out).dataobj))
    assert masks[0].sum() > 0 and all(np.array_equal(masks[0], m) for m in masks[1:])
