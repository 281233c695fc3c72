"""Which attributes belong to the Patient, Study and Series levels (PS3.3 modules).

Tags are 8-digit uppercase hex strings, the keys of the DICOM JSON Model (PS3.18 §F.2).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["PATIENT_TAGS", "SERIES_TAGS", "STUDY_TAGS", "select"]

#: Patient Module (PS3.3 C.7.1.1) plus the Patient Study module (C.7.2.2) attributes that
#: describe the patient rather than this visit (medical alerts, allergies).
PATIENT_TAGS: Final = frozenset(
    {
        "00081120",  # Referenced Patient Sequence
        "00100010",  # Patient's Name
        "00100020",  # Patient ID
        "00100021",  # Issuer of Patient ID
        "00100022",  # Type of Patient ID
        "00100024",  # Issuer of Patient ID Qualifiers Sequence
        "00100026",  # Source Patient Group Identification Sequence
        "00100027",  # Group of Patients Identification Sequence
        "00100030",  # Patient's Birth Date
        "00100032",  # Patient's Birth Time
        "00100033",  # Patient's Birth Date in Alternative Calendar
        "00100034",  # Patient's Death Date in Alternative Calendar
        "00100035",  # Patient's Alternative Calendar
        "00100040",  # Patient's Sex
        "00100200",  # Quality Control Subject
        "00100212",  # Strain Description
        "00100213",  # Strain Nomenclature
        "00100214",  # Strain Stock Number
        "00100215",  # Strain Source Registry Code Sequence
        "00100216",  # Strain Stock Sequence
        "00100217",  # Strain Source
        "00100218",  # Strain Additional Information
        "00100219",  # Strain Code Sequence
        "00100221",  # Genetic Modifications Sequence
        "00101000",  # Other Patient IDs (retired)
        "00101001",  # Other Patient Names
        "00101002",  # Other Patient IDs Sequence
        "00101005",  # Patient's Birth Name
        "00101060",  # Patient's Mother's Birth Name
        "00101100",  # Referenced Patient Photo Sequence
        "00102000",  # Medical Alerts (Patient Study)
        "00102110",  # Allergies (Patient Study)
        "00102160",  # Ethnic Group
        "00102201",  # Patient Species Description
        "00102202",  # Patient Species Code Sequence
        "00102203",  # Patient's Sex Neutered
        "00102292",  # Patient Breed Description
        "00102293",  # Patient Breed Code Sequence
        "00102294",  # Breed Registration Sequence
        "00102295",  # Breed Registration Number
        "00102297",  # Responsible Person
        "00102298",  # Responsible Person Role
        "00102299",  # Responsible Organization
        "00104000",  # Patient Comments
        "00120062",  # Patient Identity Removed
        "00120063",  # De-identification Method
        "00120064",  # De-identification Method Code Sequence
    }
)

#: General Study (PS3.3 C.7.2.1) and Patient Study (C.7.2.2) modules.
STUDY_TAGS: Final = frozenset(
    {
        "00080020",  # Study Date
        "00080030",  # Study Time
        "00080050",  # Accession Number
        "00080051",  # Issuer of Accession Number Sequence
        "00080090",  # Referring Physician's Name
        "00080096",  # Referring Physician Identification Sequence
        "0008009C",  # Consulting Physician's Name
        "0008009D",  # Consulting Physician Identification Sequence
        "00081030",  # Study Description
        "00081032",  # Procedure Code Sequence
        "00081048",  # Physician(s) of Record
        "00081049",  # Physician(s) of Record Identification Sequence
        "00081060",  # Name of Physician(s) Reading Study
        "00081062",  # Physician(s) Reading Study Identification Sequence
        "00081080",  # Admitting Diagnoses Description
        "00081084",  # Admitting Diagnoses Code Sequence
        "00081110",  # Referenced Study Sequence
        "00101010",  # Patient's Age
        "00101020",  # Patient's Size
        "00101021",  # Patient's Size Code Sequence
        "00101022",  # Patient's Body Mass Index
        "00101023",  # Measured AP Dimension
        "00101024",  # Measured Lateral Dimension
        "00101030",  # Patient's Weight
        "00102180",  # Occupation
        "001021A0",  # Smoking Status
        "001021B0",  # Additional Patient History
        "001021C0",  # Pregnancy Status
        "001021D0",  # Last Menstrual Date
        "0020000D",  # Study Instance UID
        "00200010",  # Study ID
        "00321034",  # Requesting Service Code Sequence
        "00321066",  # Reason for Visit
        "00321067",  # Reason for Visit Code Sequence
        "00380010",  # Admission ID
        "00380014",  # Issuer of Admission ID Sequence
        "00380060",  # Service Episode ID
        "00380062",  # Service Episode Description
        "00380064",  # Issuer of Service Episode ID Sequence
        "00380500",  # Patient State
        "00401012",  # Reason For Performed Procedure Code Sequence
    }
)

#: General Series (PS3.3 C.7.3.1), Frame of Reference (C.7.4.1) and General Equipment
#: (C.7.5.1) modules.
SERIES_TAGS: Final = frozenset(
    {
        "00080021",  # Series Date
        "00080031",  # Series Time
        "00080060",  # Modality
        "00080070",  # Manufacturer
        "00080080",  # Institution Name
        "00080081",  # Institution Address
        "00081010",  # Station Name
        "0008103E",  # Series Description
        "0008103F",  # Series Description Code Sequence
        "00081040",  # Institutional Department Name
        "00081041",  # Institutional Department Type Code Sequence
        "00081050",  # Performing Physician's Name
        "00081052",  # Performing Physician Identification Sequence
        "00081070",  # Operators' Name
        "00081072",  # Operator Identification Sequence
        "00081090",  # Manufacturer's Model Name
        "00081111",  # Referenced Performed Procedure Step Sequence
        "00081250",  # Related Series Sequence
        "00102210",  # Anatomical Orientation Type
        "00180015",  # Body Part Examined
        "00181000",  # Device Serial Number
        "00181002",  # Device UID
        "00181008",  # Gantry ID
        "0018100A",  # UDI Sequence
        "0018100B",  # Manufacturer's Device Class UID
        "00181020",  # Software Versions
        "00181030",  # Protocol Name
        "00181050",  # Spatial Resolution
        "00181200",  # Date of Last Calibration
        "00181201",  # Time of Last Calibration
        "00185100",  # Patient Position
        "0020000E",  # Series Instance UID
        "00200011",  # Series Number
        "00200052",  # Frame of Reference UID
        "00200060",  # Laterality
        "00201040",  # Position Reference Indicator
        "00280108",  # Smallest Pixel Value in Series
        "00280109",  # Largest Pixel Value in Series
        "00280120",  # Pixel Padding Value
        "00400244",  # Performed Procedure Step Start Date
        "00400245",  # Performed Procedure Step Start Time
        "00400250",  # Performed Procedure Step End Date
        "00400251",  # Performed Procedure Step End Time
        "00400253",  # Performed Procedure Step ID
        "00400254",  # Performed Procedure Step Description
        "00400260",  # Performed Protocol Code Sequence
        "00400275",  # Request Attributes Sequence
        "00400280",  # Comments on the Performed Procedure Step
        "300A0700",  # Treatment Session UID
    }
)


def select(metadata: dict[str, Any], tags: frozenset[str]) -> dict[str, Any]:
    """Return the attributes of ``metadata`` (DICOM JSON) whose tag is in ``tags``."""
    return {tag: value for tag, value in metadata.items() if tag in tags}
