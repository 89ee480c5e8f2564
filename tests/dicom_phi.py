"""Fake patient identity for DICOM de-identification tests (no real person: invented tokens).

``inject_phi`` writes a fake name, MRN, birth date, institution and more into a DICOM
file: top level, inside sequences and in a private block, so a scan of the output must
walk everything to prove none is left.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

FAKE_NAME = "QWERTYSON^ZELDORINA"
FAKE_MRN = "MRN-7734-ZQX"
FAKE_BIRTH = "19610304"
FAKE_INSTITUTION = "Zyxwick General Hospital"
FAKE_PHYSICIAN = "PLOVEROSKI^HUMBERT"
FAKE_SERIAL = "SN-99ZX-4410"
FAKE_COMMENT = "follow-up for Zeldorina, call 555-0199"
FAKE_STUDY_DATE = "20240115"
# Strings that must appear nowhere in a de-identified file (bytes scanned too).
FAKE_PHI = (
    "QWERTYSON",
    "ZELDORINA",
    FAKE_MRN,
    FAKE_BIRTH,
    "Zyxwick",
    "PLOVEROSKI",
    FAKE_SERIAL,
    "555-0199",
    "Zeldorina",
    FAKE_STUDY_DATE,
)


def inject_phi(path: str | Path, *, burned_in: bool = False, patient: str = "") -> Path:
    """Add the fake identity to a DICOM file in place (``patient`` is appended to name and MRN)."""
    ds = pydicom.dcmread(path)
    for marked in ("PatientIdentityRemoved", "DeidentificationMethod"):  # a PACS export carries neither
        ds.pop(marked, None)
    ds.PatientName = FAKE_NAME + patient
    ds.PatientID = FAKE_MRN + patient
    ds.PatientBirthDate = FAKE_BIRTH
    ds.PatientSex = "F"
    ds.PatientAge = "063Y"
    ds.InstitutionName = FAKE_INSTITUTION
    ds.InstitutionAddress = "1 Zyxwick Road"
    ds.ReferringPhysicianName = FAKE_PHYSICIAN
    ds.OperatorsName = FAKE_PHYSICIAN
    ds.DeviceSerialNumber = FAKE_SERIAL
    ds.StationName = "ZYXWICK-CT1"
    ds.AccessionNumber = "ACC" + FAKE_MRN[4:]
    ds.ImageComments = FAKE_COMMENT
    ds.StudyDescription = "CT chest " + FAKE_NAME
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = FAKE_STUDY_DATE
    other = Dataset()
    other.PatientID = FAKE_MRN + patient
    other.IssuerOfPatientID = FAKE_INSTITUTION
    ds.OtherPatientIDsSequence = [other]
    request = Dataset()
    request.RequestedProcedureID = FAKE_MRN
    request.ScheduledProcedureStepDescription = FAKE_COMMENT
    ds.RequestAttributesSequence = [request]
    performer = Dataset()
    performer.PersonName = FAKE_PHYSICIAN  # a PN nested in a sequence the profile does not name
    performer.InstitutionName = FAKE_INSTITUTION
    ds.ContributingEquipmentSequence = [performer]
    block = ds.private_block(0x0029, "ZYXWICK PRIVATE", create=True)
    block.add_new(0x10, "LO", FAKE_NAME)
    block.add_new(0x11, "LO", FAKE_MRN)
    if burned_in:
        ds.BurnedInAnnotation = "YES"
    ds.save_as(path)
    return Path(path)


def find_phi(ds: Dataset) -> list[str]:
    """Element paths whose value contains any fake identifier (every element, sequences, private blocks)."""
    hits: list[str] = []

    def visit(dataset: Dataset, element: pydicom.DataElement) -> None:
        if element.VR == "SQ":
            return
        text = element.value.decode("latin-1") if isinstance(element.value, bytes) else str(element.value)
        if any(token.lower() in text.lower() for token in FAKE_PHI):
            hits.append(str(element.tag))

    ds.file_meta.walk(visit)
    ds.walk(visit)
    return hits


def file_has_phi(path: str | Path) -> list[str]:
    """Fake identifiers found anywhere in a file's raw bytes."""
    raw = Path(path).read_bytes().lower()
    return [token for token in FAKE_PHI if token.lower().encode() in raw]
