"""De-identification (PS3.15 Annex E basic profile) of DICOM trees carrying a fake identity."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from pydicom.dataset import Dataset

from dicom_phi import FAKE_MRN, FAKE_NAME, FAKE_PHI, FAKE_STUDY_DATE, file_has_phi, find_phi, inject_phi
from tumorbench.cli import main
from tumorbench.data.check import check_dataset
from tumorbench.data.deid import DeidConfig, deidentify_tree, identifying_tags
from tumorbench.data.synthetic_lung import LungPhantomConfig, make_lung_study
from tumorbench.errors import DataError

N_FILES = 3 * 16  # three series of 16 slices


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    """Two patients (the first with a follow-up series), fake PHI in every file, one image flagged burned-in."""
    root = make_lung_study(tmp_path / "src", LungPhantomConfig(cases=3, shape=(16, 16, 16), repeat_scan_fraction=0.5))
    files = sorted(root.rglob("*.dcm"))
    for path in files:
        inject_phi(path, patient=path.parts[-3][-1])
    inject_phi(files[-1], burned_in=True, patient=files[-1].parts[-3][-1])
    # A reference from one instance to another, which must follow the remapped UIDs.
    ds = pydicom.dcmread(files[1])
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = pydicom.dcmread(files[0]).SOPInstanceUID
    ds.ReferencedImageSequence = [ref]
    ds.save_as(files[1])
    _set_label_column(root, "patient_id", lambda row: FAKE_MRN + row["patient_id"][-1])  # as the PACS export says
    return root


def _set_label_column(root: Path, column: str, value) -> None:
    with open(root / "labels.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows, columns = list(reader), reader.fieldnames
    for row in rows:
        row[column] = value(row)
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _by_source(src: Path, dst: Path) -> dict[Path, pydicom.Dataset]:
    return {path: pydicom.dcmread(dst / path.relative_to(src)) for path in sorted(src.rglob("*.dcm"))}


def test_deid_removes_every_fake_identifier_and_keeps_pixels_and_geometry(study: Path, tmp_path: Path) -> None:
    before = _digest(study)
    assert all(file_has_phi(p) for p in study.rglob("*.dcm"))  # the scan finds what was injected
    report = deidentify_tree(study, tmp_path / "dst", DeidConfig(date_shift=True, keep_paths=True, seed="test"))
    assert _digest(study) == before  # the source is only read
    pairs = _by_source(study, tmp_path / "dst")
    assert report.written == len(pairs) == N_FILES and not report.skipped
    for src_path, out in pairs.items():
        assert find_phi(out) == [] and file_has_phi(tmp_path / "dst" / src_path.relative_to(study)) == []
        assert out.PixelData == pydicom.dcmread(src_path).PixelData
        assert not any(element.tag.is_private for element in out.iterall())
    flagged = {rel for rel, _ in report.review}
    assert flagged == {sorted(study.rglob("*.dcm"))[-1].relative_to(study).as_posix()}
    for src_path, out in pairs.items():
        # Until someone has looked at its pixels, a flagged image's pseudonyms are not trusted either.
        untrusted = ["PatientID", "PatientIdentityRemoved (not YES)", "PatientName"]
        expected = untrusted if src_path.relative_to(study).as_posix() in flagged else []
        assert identifying_tags(out) == expected
    source_report = check_dataset(study, duplicates=False)
    out_report = check_dataset(tmp_path / "dst", duplicates=False)
    for key in ("cases", "shapes", "spacings", "orientations"):
        assert out_report[key] == source_report[key], key
    text = (tmp_path / "dst" / "deid_changes.csv").read_text()
    assert not any(token.lower() in text.lower() for token in FAKE_PHI)


def test_deid_remaps_uids_consistently_and_shifts_dates_per_patient(study: Path, tmp_path: Path) -> None:
    deidentify_tree(study, tmp_path / "dst", DeidConfig(date_shift=True, keep_paths=True, seed="test"))
    pairs = _by_source(study, tmp_path / "dst")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
        mapping: dict[str, set[str]] = {}
        for src_path, out in pairs.items():
            mapping.setdefault(str(pydicom.dcmread(src_path).get(keyword)), set()).add(str(out.get(keyword)))
        assert all(len(new) == 1 for new in mapping.values()), keyword  # one old UID, one new UID
        news = [next(iter(new)) for new in mapping.values()]
        assert len(set(news)) == len(news) and not set(news) & set(mapping), keyword  # distinct and all new
        assert all(len(uid) <= 64 and uid.replace(".", "").isdigit() for uid in news)
    first, second = sorted(pairs)[:2]
    assert pairs[second].ReferencedImageSequence[0].ReferencedSOPInstanceUID == pairs[first].SOPInstanceUID
    assert pairs[first].file_meta.MediaStorageSOPInstanceUID == pairs[first].SOPInstanceUID
    shifts: dict[str, set[int]] = {}
    original = dt.datetime.strptime(FAKE_STUDY_DATE, "%Y%m%d")
    for src_path, out in pairs.items():
        days = (dt.datetime.strptime(out.StudyDate, "%Y%m%d") - original).days
        shifts.setdefault(src_path.parts[-3], set()).add(days)
        assert out.PatientBirthDate == "" and out.StudyTime == "120000"
    assert all(len(days) == 1 and -730 <= next(iter(days)) <= -62 for days in shifts.values())
    assert len({next(iter(d)) for d in shifts.values()}) == len(shifts)  # patients get their own shift
    patients = {str(out.PatientID) for out in pairs.values()}
    assert len(patients) == len(shifts)  # pseudonyms keep patients apart and together


def test_deid_default_paths_come_from_new_uids_and_dates_are_emptied(study: Path, tmp_path: Path) -> None:
    report = deidentify_tree(study, tmp_path / "dst", DeidConfig())
    outputs = sorted((tmp_path / "dst").rglob("*.dcm"))
    assert len(outputs) == report.written == N_FILES
    for path in outputs:
        ds = pydicom.dcmread(path)
        assert path.relative_to(tmp_path / "dst").parts == (
            ds.PatientID,
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            f"{ds.SOPInstanceUID}.dcm",
        )
        assert ds.StudyDate == "" and ds.StudyTime == "" and ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert not any("SYNTH-LUNG" in p.as_posix() for p in outputs)  # source folder names carry patient IDs
    with open(tmp_path / "dst" / "deid_changes.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == N_FILES and all(r["status"] == "written" for r in rows)
    assert {"PatientName", "PatientID"} <= set(rows[0]["replaced"].split(";"))
    assert {"InstitutionName", "OtherPatientIDsSequence", "DeviceSerialNumber"} <= set(rows[0]["removed"].split(";"))


def test_deid_bad_input(study: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no_dicom"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    with pytest.raises(DataError, match="no DICOM files found"):
        deidentify_tree(empty, tmp_path / "out0")
    with pytest.raises(DataError, match="outside the source"):
        deidentify_tree(study, study / "inside")
    broken = sorted(study.rglob("*.dcm"))[2]
    broken.write_bytes(broken.read_bytes()[:400])  # header cut off mid-element
    result = CliRunner().invoke(main, ["data", "deid", str(study), str(tmp_path / "out1")])
    assert result.exit_code == 1, result.output
    assert f"written {N_FILES - 1} DICOM files, skipped 1" in result.output
    assert broken.relative_to(study).as_posix() in result.output
    assert len(list((tmp_path / "out1").rglob("*.dcm"))) == N_FILES - 1
    assert not any(token.lower() in result.output.lower() for token in FAKE_PHI)
    result = CliRunner().invoke(main, ["data", "deid", str(empty), str(tmp_path / "out2")])
    assert result.exit_code == 2 and "no DICOM files found" in result.output


def test_require_deid_names_the_tags_never_the_values(study: Path, tmp_path: Path, monkeypatch) -> None:
    from tumorbench.data.layouts.dicom import KEEP_IDENTIFIERS_ENV
    from tumorbench.data.splits import SplitError
    from tumorbench.study.runner import prepare
    from tumorbench.study.spec import Candidate, Study

    monkeypatch.delenv(KEEP_IDENTIFIERS_ENV, raising=False)
    catalog, *problems = check_dataset(study, duplicates=False, require_deid=True)["problems"]
    assert "3 of 3 series not marked de-identified" in catalog  # the dicom layout's own, without --require-deid
    assert len(problems) == N_FILES
    assert all(
        "not de-identified: carries" in p and "PatientName" in p and "InstitutionName" in p and "private tags" in p
        for p in problems
    )
    assert not any(token.lower() in " ".join(problems).lower() for token in FAKE_PHI)
    result = CliRunner().invoke(main, ["data", "check", str(study), "--require-deid", "--no-duplicates"])
    assert result.exit_code == 1 and "not de-identified" in result.output
    deidentify_tree(study, tmp_path / "dst", DeidConfig(keep_paths=True))
    left = check_dataset(tmp_path / "dst", duplicates=False, require_deid=True)["problems"]
    assert len(left) == 1 and "PatientIdentityRemoved (not YES)" in left[0]  # the image flagged for review
    flagged = sorted((tmp_path / "dst").rglob("*.dcm"))[-1]
    ds = pydicom.dcmread(flagged)
    ds.PatientIdentityRemoved = "YES"  # what a reviewer does after looking at the pixels
    ds.save_as(flagged)
    assert check_dataset(tmp_path / "dst", duplicates=False, require_deid=True)["problems"] == []
    spec = dict(
        name="deid",
        task="classification",
        candidates=(Candidate("r", {"model": "resnet18_tiny"}),),
        layout="dicom",
        n_folds=2,
        require_deid=True,
        config={"inner_val_fraction": 0},  # two patients: a fold trains on one, too few for an inner split
    )
    with pytest.raises(DataError, match=r"3 of 3 series not marked de-identified"):
        prepare(Study(data=str(study), **spec), tmp_path / "run")
    monkeypatch.setenv(KEEP_IDENTIFIERS_ENV, "1")  # kept for results inside the hospital: --require-deid still refuses
    with pytest.raises(DataError, match=r"de-identified input required; .*carries .*PatientName.*\(and 47 more\)"):
        prepare(Study(data=str(study), **spec), tmp_path / "run")
    monkeypatch.delenv(KEEP_IDENTIFIERS_ENV)
    assert (tmp_path / "dst" / "labels.csv").is_file()  # deid carried labels.csv and the masks
    # past the de-identification gate: the next check is the split's (one patient per class cannot fill 2 folds)
    with pytest.raises(SplitError, match=r"2 folds need at least 2 patients of every class; class '\w+' has 1"):
        prepare(Study(data=str(tmp_path / "dst"), **spec), tmp_path / "run2")


def test_burned_in_review_reasons_and_seeded_runs_repeat(study: Path, tmp_path: Path) -> None:
    from pydicom.uid import SecondaryCaptureImageStorage, UltrasoundImageStorage

    from tumorbench.data.deid import burned_in_reason

    def header(**values) -> Dataset:
        ds = Dataset()
        for key, value in values.items():
            setattr(ds, key, value)
        return ds

    assert burned_in_reason(header(Modality="US", SOPClassUID=UltrasoundImageStorage)) == "modality US"
    assert burned_in_reason(header(Modality="US", BurnedInAnnotation="NO")) is None  # the scanner says there is none
    assert burned_in_reason(header(Modality="OT", SOPClassUID=SecondaryCaptureImageStorage)) == "modality OT"
    assert burned_in_reason(header(Modality="CT", SOPClassUID=SecondaryCaptureImageStorage)) == "secondary capture"
    assert burned_in_reason(header(Modality="CT", BurnedInAnnotation="YES")) == "BurnedInAnnotation=YES"
    assert burned_in_reason(header(Modality="CT")) is None
    runs = {}
    for name, seed in (("a", "k1"), ("b", "k1"), ("c", "k2")):
        deidentify_tree(study, tmp_path / name, DeidConfig(seed=seed, date_shift=True))
        runs[name] = sorted(p.relative_to(tmp_path / name).as_posix() for p in (tmp_path / name).rglob("*.dcm"))
    assert runs["a"] == runs["b"] and not set(runs["a"]) & set(runs["c"])  # same secret, same UIDs and IDs


def test_deid_carries_labels_and_masks_without_identifiers(study: Path, tmp_path: Path) -> None:
    import gzip

    from tumorbench.data.catalog import scan

    (study / "notes.txt").write_text(f"patient {FAKE_NAME}")  # free-form: left behind
    report = deidentify_tree(study, tmp_path / "dst", DeidConfig(seed="test"))
    dst = tmp_path / "dst"
    assert report.masks == 3 and report.ignored == 1 and not (dst / "notes.txt").exists()
    for path in dst.rglob("*"):  # raw bytes of every file, masks unpacked, hold no identifier or source folder
        raw = path.read_bytes() if path.is_file() else b""
        raw = gzip.decompress(raw) + raw if path.name.endswith(".gz") else raw
        assert not any(t.lower().encode() in raw.lower() for t in (*FAKE_PHI, "SYNTH-LUNG")), path.name
    source, out = scan(study, strict=False), scan(dst)  # the source: raw, refused strictly
    assert "case_id" not in (dst / "labels.csv").read_text().splitlines()[0]
    assert len(out) == 3 and out["mask"].notna().all() and out["patient_id"].nunique() == 2
    # Pair the cases through the mask bytes (NIfTI header and voxels unchanged); labels and patients follow.
    old = {gzip.decompress(Path(m).read_bytes()): row for m, row in zip(source["mask"], source.to_dict("records"))}
    assert len(old) == 3
    for row in out.to_dict("records"):
        mask = Path(row["mask"])
        assert mask.name.endswith("_mask.nii.gz") and mask.read_bytes()[3] & 0x08 == 0  # gzip FNAME flag clear
        before = old[gzip.decompress(mask.read_bytes())]
        assert row["label"] == before["label"]
        header = pydicom.dcmread(next(Path(row["image"][0]).glob("*.dcm")))
        assert row["patient_id"] == header.PatientID != before["patient_id"]
        assert Path(row["image"][0]).relative_to(dst).parts[:3] == (
            header.PatientID,
            header.StudyInstanceUID,
            header.SeriesInstanceUID,
        )


def test_deid_refuses_a_labels_file_it_cannot_map(study: Path, tmp_path: Path) -> None:
    _set_label_column(study, "patient_id", lambda row: "Doe^Jane" + row["patient_id"][-1])
    with pytest.raises(DataError, match=r"row 2: patient_id is not the PatientID of any series") as caught:
        deidentify_tree(study, tmp_path / "out0")
    assert "Doe" not in str(caught.value) and not (tmp_path / "out0").exists()  # nothing written
    _set_label_column(study, "patient_id", lambda row: FAKE_MRN + row["patient_id"][-1])
    _set_label_column(study, "malignancy", lambda row: "reviewed for Mr " + FAKE_NAME.split("^")[0].title())
    with pytest.raises(DataError, match="column malignancy: holds an original patient ID or name"):
        deidentify_tree(study, tmp_path / "out1")
