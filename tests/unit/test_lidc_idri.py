"""LIDC-IDRI's DICOM series and readers' XML made nodule crops: readings grouped, outlines filled, ratings averaged."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from PIL import Image

from tumorbench.cli import main
from tumorbench.data.catalog import detect_layout, scan
from tumorbench.data.lidc_idri import Options, convert
from tumorbench.data.lidc_outlines import Slices, outline_masks
from tumorbench.data.lidc_volumes import consensus
from tumorbench.data.lidc_xml import Outline, Reading, read_readings
from tumorbench.data.writers import write_dicom_series
from tumorbench.errors import DataError

SIZE, SLICES, NODULE_HU = 40, 12, 40.0
A, C = (20, 22), (8, 8)  # nodule centres (row, column)


def disc(centre: tuple[int, int], radius: float, shape=(SIZE, SIZE)) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def outline(mask: np.ndarray) -> list[tuple[int, int]]:
    """The pixels just outside a (convex) mask, as (x, y) in order around its centre: how LIDC's readers drew."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    rows, cols = np.nonzero(grown & ~mask)
    order = np.argsort(np.arctan2(rows - rows.mean(), cols - cols.mean()))
    return [(int(cols[n]), int(rows[n])) for n in order]


def _roi(points, sop=None, z=None, inclusion=True) -> str:
    where = (f"<imageSOP_UID>{sop}</imageSOP_UID>" if sop else "") + (
        f"<imageZposition>{z}</imageZposition>" if z is not None else ""
    )
    edges = "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>" for x, y in points)
    return f"<roi>{where}<inclusion>{'TRUE' if inclusion else 'FALSE'}</inclusion>{edges}</roi>"


def _nodule(name, rois, malignancy=None, subtlety=3) -> str:
    ratings = "" if malignancy is None else f"<subtlety>{subtlety}</subtlety><malignancy>{malignancy}</malignancy>"
    characteristics = f"<characteristics>{ratings}</characteristics>"
    return f"<unblindedReadNodule><noduleID>{name}</noduleID>{characteristics}{rois}</unblindedReadNodule>"


def _series(folder, patient="LIDC-IDRI-0007", number=3000566, seed=""):
    """A 40 x 40 x 12 CT at 0.7 x 0.7 x 1.25 mm: air, nodule A a cylinder (radius 5, slices 4-8); SOP UIDs, z."""
    volume = np.full((SIZE, SIZE, SLICES), -1000.0)
    for k in range(4, 9):
        volume[:, :, k][disc(A, 5).T] = NODULE_HU  # volume is (i column, j row, k)
    affine = np.diag([-0.7, -0.7, 1.25, 1.0])
    files = write_dicom_series(folder, volume, affine, patient_id=patient, uid_seed=f"{patient}{number}{seed}")
    for path in files:  # TCIA's series number, the crop names' scan
        ds = pydicom.dcmread(path)
        ds.SeriesNumber = number
        ds.save_as(path)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    by_z = sorted(headers, key=lambda h: float(h.ImagePositionPatient[2]))
    return (
        str(headers[0].SeriesInstanceUID),
        [h.SOPInstanceUID for h in by_z],
        [float(h.ImagePositionPatient[2]) for h in by_z],
    )


def _lidc(root):
    folder = root / "LIDC-IDRI" / "LIDC-IDRI-0007" / "01-01-2000-CT" / "3000566.000000-lung"
    uid, sops, z = _series(folder)
    first = _nodule("Nodule 001", "".join(_roi(outline(disc(A, 5)), sop=sops[k]) for k in range(4, 9)), 5, 5)
    small = _nodule("Nodule 002", _roi([(30, 30)], sop=sops[3]))  # under 3 mm: one point, no ratings
    second = _nodule("IL057_1", "".join(_roi(outline(disc(A, 4)), z=z[k]) for k in range(5, 8)), 4, 3)
    third = _nodule("MI014_2", "".join(_roi(outline(disc(C, 2)), sop=sops[k]) for k in (1, 2)), 1, 2)
    non = "<nonNodule><nonNoduleID>x</nonNoduleID><imageZposition>0</imageZposition></nonNodule>"
    sessions = "".join(
        f"<readingSession><annotationVersion>3.12</annotationVersion>{r}</readingSession>"
        for r in (first + small, second + non, third)
    )
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><LidcReadMessage xmlns="http://www.nih.gov">'
        f"<ResponseHeader><SeriesInstanceUid>{uid}</SeriesInstanceUid></ResponseHeader>{sessions}</LidcReadMessage>"
    )
    (folder / "069.xml").write_text(xml)
    return folder


def _rows(out):
    with open(out / "files" / "malignancy.csv", newline="") as handle:
        return list(csv.reader(handle))


def _png(path):
    return np.asarray(Image.open(path))


def test_readings_of_one_nodule_are_grouped_and_their_outlines_filled(tmp_path):
    _lidc(tmp_path)
    out = tmp_path / "out"
    summary = convert(tmp_path / "LIDC-IDRI", out, Options(crop=16))
    assert (summary.series, summary.readings, summary.nodules, summary.patients) == (1, 3, 2, 1)
    assert dict(summary.readers) == {1: 1, 2: 1}
    rows = _rows(out)
    # nodule 1 is C (slices 1-2, above A's 4-8); the mean of the readers' ratings, malignancy last
    assert [r[1:5] for r in rows] == [["7", "3000566", "1", "1"], ["7", "3000566", "2", "2"]]
    assert [float(r[-1]) for r in rows] == [1.0, 4.5]
    assert float(rows[1][10]) == 4.0  # subtlety 5 and 3
    assert [int(v) for v in rows[1][7:9]] == [A[0], A[1]] and int(rows[1][9]) == 6  # centre row, column, slice
    window = slice(A[0] - 8, A[0] + 8), slice(A[1] - 8, A[1] + 8)
    union = _png(out / "LIDC-IDRI-0007_2_3000566_union.png")
    intersection = _png(out / "LIDC-IDRI-0007_2_3000566_intersection.png")
    np.testing.assert_array_equal(union, disc(A, 5)[window] * 255)  # the larger outline, filled
    np.testing.assert_array_equal(intersection, disc(A, 4)[window] * 255)  # found by z (no SOP UID)
    hu_to_8bit = round((NODULE_HU + 1000) / 1400 * 255)
    np.testing.assert_array_equal(_png(out / "LIDC-IDRI-0007_2_3000566.png"), disc(A, 5)[window] * hu_to_8bit)
    # C lies 8 pixels from the edge: the crop beyond the image is air (0), its mask nothing
    c_union = _png(out / "LIDC-IDRI-0007_1_3000566_union.png")
    assert c_union.sum() == disc(C, 2).sum() * 255 and c_union.shape == (16, 16)


def test_the_lidc_layout_reads_the_crops_with_their_classes(tmp_path):
    _lidc(tmp_path)
    convert(tmp_path / "LIDC-IDRI", tmp_path / "out", Options(crop=16))
    frame = scan(tmp_path / "out").set_index("case_id")
    assert detect_layout(tmp_path / "out")[0] == "lidc"
    assert frame[["label", "patient_id"]].to_dict("index") == {
        "LIDC-IDRI-0007_1_3000566": {"label": "benign", "patient_id": "LIDC-IDRI-0007"},
        "LIDC-IDRI-0007_2_3000566": {"label": "malignant", "patient_id": "LIDC-IDRI-0007"},
    }


def test_min_readers_leaves_out_nodules_fewer_outlined(tmp_path):
    _lidc(tmp_path)
    summary = convert(tmp_path / "LIDC-IDRI", tmp_path / "out", Options(min_readers=2, crop=16))
    assert (summary.nodules, summary.too_few_readers) == (1, 1)
    assert [r[3] for r in _rows(tmp_path / "out")] == ["1"]  # A, now nodule 1


def test_a_hole_is_cut_and_the_outlines_drawn_outside_what_they_bound():
    def chain(low, high):  # a square's edge pixels, in order around it
        edge = [(x, low) for x in range(low, high)] + [(high, y) for y in range(low, high)]
        return edge + [(x, high) for x in range(high, low, -1)] + [(low, y) for y in range(high, low, -1)]

    square, hole = chain(2, 11), chain(5, 8)
    point = Outline("s", None, True, np.array([(14, 14)]))  # encloses nothing
    outlines = (Outline("s", None, True, np.array(square)), Outline("s", None, False, np.array(hole)), point)
    slices = Slices([], np.array([0.0]), {"s": 0}, (16, 16), (1.0, 1.0), 1, 1)
    masks, off = outline_masks(Reading(0, {}, outlines), slices)
    expected = np.zeros((16, 16), bool)
    expected[3:11, 3:11] = True  # inside the square's outline, not on it
    expected[6:8, 6:8] = False  # inside the hole's outline; its outline stays nodule
    np.testing.assert_array_equal(masks[0], expected)
    assert off == 0


def test_bad_readings_are_named_and_the_others_written(tmp_path):
    folder = _lidc(tmp_path)
    (folder / "bomb.xml").write_text('<!DOCTYPE a [<!ENTITY x "xx">]><LidcReadMessage>&x;</LidcReadMessage>')
    (folder / "cxr.xml").write_text("<IdriReadMessage><ResponseHeader/></IdriReadMessage>")
    other = tmp_path / "LIDC-IDRI" / "LIDC-IDRI-0008" / "s"
    other.mkdir(parents=True)
    (other / "069.xml").write_text(
        "<LidcReadMessage><ResponseHeader><SeriesInstanceUid>1.2.3</SeriesInstanceUid></ResponseHeader></LidcReadMessage>"
    )
    summary = convert(tmp_path / "LIDC-IDRI", tmp_path / "out", Options(crop=16))
    assert (summary.nodules, summary.not_ct) == (2, 1)
    assert len(summary.skipped) == 2
    assert "bomb.xml: declares a DOCTYPE or entities" in summary.skipped[0]
    assert "LIDC-IDRI-0008/s/069.xml: its series is not in its folder, nor elsewhere" in summary.skipped[1]
    with pytest.raises(DataError, match="no LIDC-IDRI reading XML"):
        convert(tmp_path / "out", tmp_path / "out2")


def test_reading_xml_refuses_malformed_values(tmp_path):
    path = tmp_path / "069.xml"
    header = "<ResponseHeader><SeriesInstanceUid>1.2</SeriesInstanceUid></ResponseHeader>"
    nodule = _nodule("n", _roi([(1, 1), (2, 2), (3, 1)], z="nan"), 3)
    path.write_text(f"<LidcReadMessage>{header}<readingSession>{nodule}</readingSession></LidcReadMessage>")
    with pytest.raises(DataError, match="imageZposition 'nan' is not a number"):
        read_readings(path)
    path.write_text(
        f"<LidcReadMessage>{header}<readingSession>{_nodule('n', _roi([(1, 1), (2, 2)]), 7)}</readingSession>"
        "</LidcReadMessage>"
    )
    with pytest.raises(DataError, match="malignancy rating 7, not in 1..5"):
        read_readings(path)
    path.write_text(
        "<LidcReadMessage><ResponseHeader><SeriesInstanceUID>1.5</SeriesInstanceUID></ResponseHeader></LidcReadMessage>"
    )
    assert read_readings(path) == ("1.5", [])
    far = _nodule("n", _roi([(1, 1), (2, 2), (10**20, 1)], z=1.0), 3)
    path.write_text(f"<LidcReadMessage>{header}<readingSession>{far}</readingSession></LidcReadMessage>")
    with pytest.raises(DataError, match="lies far outside any CT slice"):
        read_readings(path)
    path.write_text("<LidcReadMessage><ResponseHeader/></LidcReadMessage>")
    with pytest.raises(DataError, match="no SeriesInstanceUid in its ResponseHeader"):
        read_readings(path)


def test_cli_writes_the_set_and_says_what_it_left_out(tmp_path):
    _lidc(tmp_path)
    out = tmp_path / "out"
    args = ["data", "lidc-idri", str(tmp_path / "LIDC-IDRI"), "--out", str(out), "--crop", "16", "--workers", "1"]
    result = CliRunner().invoke(main, [*args, "--min-readers", "2", "--volumes", str(tmp_path / "volumes")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "1 nodules (2 reader(s) 1) of 1 patients, from 1 series" in result.output
    assert "1 nodule(s) outlined by fewer than 2 reader(s): left out" in result.output
    assert f"then: python experiments/compare.py --data {out}" in result.output
    assert (
        f"1 CT volume(s) with nodule masks: python experiments/compare.py --data {tmp_path / 'volumes'}"
        in result.output
    )
    result = CliRunner().invoke(main, [*args, "--window", "400,-1000", "--overwrite"])
    assert result.exit_code == 2 and "window low < high" in result.output
    result = CliRunner().invoke(main, [*args, "--window", "-1000", "--overwrite"])
    assert result.exit_code == 2 and "two numbers LOW,HIGH" in result.output


def test_xml_kept_apart_from_its_series_finds_it_under_the_root(tmp_path):
    folder = _lidc(tmp_path)
    apart = tmp_path / "LIDC-IDRI" / "tcia-lidc-xml" / "157"  # TCIA's XML-only download beside the images
    apart.mkdir(parents=True)
    (folder / "069.xml").rename(apart / "158.xml")
    summary = convert(tmp_path / "LIDC-IDRI", tmp_path / "out", Options(crop=16))
    assert (summary.series, summary.nodules, summary.skipped) == (1, 2, [])


def test_volumes_are_the_ct_with_each_nodules_consensus_on_its_grid(tmp_path):
    _lidc(tmp_path)
    volumes = tmp_path / "volumes"
    summary = convert(tmp_path / "LIDC-IDRI", tmp_path / "out", Options(crop=16, volumes=str(volumes)))
    assert summary.volumes == 1
    case = "LIDC-IDRI-0007_3000566.nii.gz"
    ct, mask = nib.load(volumes / "images" / case), nib.load(volumes / "masks" / case)
    np.testing.assert_allclose(ct.affine, mask.affine)
    hu, labels = np.asarray(ct.dataobj), np.asarray(mask.dataobj)
    assert hu.shape == labels.shape == (SIZE, SIZE, SLICES)
    assert (hu[labels == 1] == NODULE_HU).mean() > 0.9  # the masks lie on the nodule, in the volume's (i, j, k)
    for k in range(SLICES):  # A: either of its 2 readers is half of them (slices 4-8, the larger outline); C: 1-2
        expected = (disc(A, 5) if 4 <= k <= 8 else False) | (disc(C, 2) if k in (1, 2) else False)
        np.testing.assert_array_equal(labels[:, :, k].T, expected)
    frame = scan(volumes)
    assert detect_layout(volumes)[0] == "paired" and frame["patient_id"].tolist() == ["LIDC-IDRI-0007"]
    assert not list(volumes.rglob("*.0.nii.gz"))  # the workers' names renamed


def test_consensus_keeps_voxels_at_least_half_the_readers_marked():
    marks = {0: [1, 1, 0, 0], 1: [1, 0, 0, 1], 2: [0, 1, 1, 0]}  # three readers: two needed
    found = consensus({r: {0: np.array(m, bool)} for r, m in marks.items()})
    np.testing.assert_array_equal(found[0], [True, True, False, False])
    assert consensus({0: {3: np.zeros(4, bool)}}) == {}


def test_a_series_missing_a_slice_gets_its_crops_and_no_volume(tmp_path):
    folder = _lidc(tmp_path)
    (folder / "slice_010.dcm").unlink()  # no nodule there
    summary = convert(tmp_path / "LIDC-IDRI", tmp_path / "out", Options(crop=16, volumes=str(tmp_path / "v")))
    assert (summary.nodules, summary.volumes, len(summary.skipped)) == (2, 0, 1)
    assert (
        "non-uniform slice spacing" in summary.skipped[0]
        and "its volume not written; its crops are" in summary.skipped[0]
    )
    assert not list((tmp_path / "v").rglob("*.nii.gz"))


def test_data_check_of_the_download_points_to_the_command(tmp_path):
    from tumorbench.data.check import check_dataset

    _lidc(tmp_path)
    report = check_dataset(tmp_path / "LIDC-IDRI", "auto", duplicates=False, fingerprint=False)
    assert report["layout"] == "dicom" and not report["problems"]
    assert any("reading XML beside it" in n and "tumorbench data lidc-idri" in n for n in report["notes"])


def test_a_second_series_of_a_patient_under_the_same_number_is_refused_and_its_volume_removed(tmp_path):
    _lidc(tmp_path)
    again = tmp_path / "LIDC-IDRI" / "LIDC-IDRI-0007" / "01-01-2001-CT" / "3000566.000000-lung"
    uid, _, _ = _series(again, seed="again")
    header = f"<ResponseHeader><SeriesInstanceUid>{uid}</SeriesInstanceUid></ResponseHeader>"
    (again / "069.xml").write_text(f"<LidcReadMessage>{header}</LidcReadMessage>")
    volumes = tmp_path / "v"
    summary = convert(tmp_path / "LIDC-IDRI", tmp_path / "out", Options(crop=16, volumes=str(volumes)))
    assert (summary.series, summary.volumes, summary.nodules) == (1, 1, 2)
    assert (
        len(summary.skipped) == 1 and "SeriesNumber 3000566 of another series of the same patient" in summary.skipped[0]
    )
    assert sorted(p.name for p in volumes.rglob("*.nii.gz")) == ["LIDC-IDRI-0007_3000566.nii.gz"] * 2


def test_crops_resampled_to_a_pixel_size_keep_the_nodule_at_its_size_in_mm(tmp_path):
    _lidc(tmp_path)
    out = tmp_path / "out"
    convert(tmp_path / "LIDC-IDRI", out, Options(crop=16, pixel_mm=1.4))  # the scan's 0.7 mm pixels, halved
    union = _png(out / "LIDC-IDRI-0007_2_3000566_union.png") > 0
    image = _png(out / "LIDC-IDRI-0007_2_3000566.png")
    assert union.shape == image.shape == (16, 16)
    assert abs(union.sum() - np.pi * 2.5**2) <= 5  # radius 5 pixels of 0.7 mm: 2.5 pixels of 1.4 mm
    assert np.median(image[union]) == round((NODULE_HU + 1000) / 1400 * 255) and image[~union].min() == 0
    assert [int(v) for v in _rows(out)[1][7:10]] == [A[0], A[1], 6]  # the centre as stored in the scan
    with pytest.raises(ValueError, match="pixel_mm in 0.1..5 mm"):
        Options(pixel_mm=0)
