"""The attributes we match on and return, and which index column backs each one.

Matching keys are those PS3.18 Table 10.6.1-5 requires (plus a few cheap extras backed by a
column); return attributes per level are those of PS3.18 Tables 10.6.3-3 (study), 10.6.3-4
(series) and 10.6.3-5 (instance). Columns are named ``"table.column"`` of the index schema
(``storage/index/tables.py``); the storage layer maps the names to SQL.

Any other attribute can still be requested with ``includefield`` (PS3.18 §8.3.4.3): it is
resolved through the DICOM data dictionary (PS3.6) and returned when stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dicomhub.domain.query import Level

__all__ = [
    "ATTRIBUTES",
    "BY_KEYWORD",
    "BY_TAG",
    "REQUIRED",
    "Attribute",
    "matchable_at",
    "resolve",
]

_TAG_RE: Final = re.compile(r"[0-9A-Fa-f]{8}")


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute as the query layer knows it.

    Attributes:
        keyword: PS3.6 keyword, e.g. ``"PatientName"``.
        tag: 8-digit uppercase hex tag, e.g. ``"00100010"``.
        vr: Value representation (PS3.5 §6.2).
        level: The level whose entity the attribute describes; ``None`` when it is defined at
            every level (Specific Character Set, Retrieve URL, ...).
        column: Index column holding the value (``"table.column"``), or ``None``.
        fuzzy_column: For PN, the column holding its fuzzy key (:func:`fuzzy_key`).
        exists_column: Matching is "some row of this column matches" (Modalities in Study:
            any series of the study has the modality, PS3.4 C.6.1.1.2).
        matching: Supported as a matching key.
        computed: The value is computed by the archive (counts, availability, URL), not stored.
    """

    keyword: str
    tag: str
    vr: str
    level: Level | None
    column: str | None = None
    fuzzy_column: str | None = None
    exists_column: str | None = None
    matching: bool = False
    computed: bool = False


_P, _ST, _SE, _IN = Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE

ATTRIBUTES: Final[tuple[Attribute, ...]] = (
    # Defined at every level.
    Attribute("SpecificCharacterSet", "00080005", "CS", None, "instance.specific_character_set"),
    Attribute("InstanceAvailability", "00080056", "CS", None, computed=True),
    Attribute("TimezoneOffsetFromUTC", "00080201", "SH", None),
    Attribute("RetrieveURL", "00081190", "UR", None, computed=True),
    # Patient (PS3.4 C.6.1.1.2 keys of the Study Root model, Patient IE).
    Attribute(
        "PatientName",
        "00100010",
        "PN",
        _P,
        "patient.patient_name",
        fuzzy_column="patient.patient_name_fuzzy",
        matching=True,
    ),
    Attribute("PatientID", "00100020", "LO", _P, "patient.patient_id", matching=True),
    Attribute("IssuerOfPatientID", "00100021", "LO", _P, "patient.issuer", matching=True),
    Attribute(
        "PatientBirthDate", "00100030", "DA", _P, "patient.patient_birth_date", matching=True
    ),
    Attribute("PatientSex", "00100040", "CS", _P, "patient.patient_sex", matching=True),
    # Study.
    Attribute("StudyDate", "00080020", "DA", _ST, "study.study_date", matching=True),
    Attribute("StudyTime", "00080030", "TM", _ST, "study.study_time", matching=True),
    Attribute("AccessionNumber", "00080050", "SH", _ST, "study.accession_number", matching=True),
    Attribute(
        "ModalitiesInStudy",
        "00080061",
        "CS",
        _ST,
        "study.modalities",
        exists_column="series.modality",
        matching=True,
        computed=True,
    ),
    Attribute(
        "ReferringPhysicianName",
        "00080090",
        "PN",
        _ST,
        "study.referring_physician_name",
        fuzzy_column="study.referring_physician_fuzzy",
        matching=True,
    ),
    Attribute("StudyDescription", "00081030", "LO", _ST, "study.study_description", matching=True),
    Attribute("StudyInstanceUID", "0020000D", "UI", _ST, "study.study_uid", matching=True),
    Attribute("StudyID", "00200010", "SH", _ST, "study.study_id", matching=True),
    Attribute(
        "NumberOfStudyRelatedSeries", "00201206", "IS", _ST, "study.num_series", computed=True
    ),
    Attribute(
        "NumberOfStudyRelatedInstances", "00201208", "IS", _ST, "study.num_instances", computed=True
    ),
    # Series.
    Attribute("Modality", "00080060", "CS", _SE, "series.modality", matching=True),
    Attribute(
        "SeriesDescription", "0008103E", "LO", _SE, "series.series_description", matching=True
    ),
    Attribute("SeriesInstanceUID", "0020000E", "UI", _SE, "series.series_uid", matching=True),
    Attribute("SeriesNumber", "00200011", "IS", _SE, "series.series_number", matching=True),
    Attribute(
        "NumberOfSeriesRelatedInstances",
        "00201209",
        "IS",
        _SE,
        "series.num_instances",
        computed=True,
    ),
    Attribute(
        "PerformedProcedureStepStartDate",
        "00400244",
        "DA",
        _SE,
        "series.pps_start_date",
        matching=True,
    ),
    Attribute(
        "PerformedProcedureStepStartTime",
        "00400245",
        "TM",
        _SE,
        "series.pps_start_time",
        matching=True,
    ),
    Attribute("RequestAttributesSequence", "00400275", "SQ", _SE),
    # Instance.
    Attribute("SOPClassUID", "00080016", "UI", _IN, "instance.sop_class_uid", matching=True),
    Attribute("SOPInstanceUID", "00080018", "UI", _IN, "instance.sop_uid", matching=True),
    Attribute("InstanceNumber", "00200013", "IS", _IN, "instance.instance_number", matching=True),
    Attribute("NumberOfFrames", "00280008", "IS", _IN, "instance.number_of_frames", matching=True),
    Attribute("Rows", "00280010", "US", _IN, "instance.rows", matching=True),
    Attribute("Columns", "00280011", "US", _IN, "instance.columns", matching=True),
    Attribute("BitsAllocated", "00280100", "US", _IN, "instance.bits_allocated", matching=True),
)

BY_TAG: Final[dict[str, Attribute]] = {a.tag: a for a in ATTRIBUTES}
BY_KEYWORD: Final[dict[str, Attribute]] = {a.keyword: a for a in ATTRIBUTES}

#: Attributes returned for every result of a level (PS3.18 Tables 10.6.3-3, -4, -5), in tag
#: order. Specific Character Set and Timezone Offset From UTC are conditional: returned when
#: known (the JSON itself is always UTF-8, PS3.18 §F.2).
REQUIRED: Final[dict[Level, tuple[str, ...]]] = {
    Level.STUDY: (
        "00080005",  # SpecificCharacterSet
        "00080020",  # StudyDate
        "00080030",  # StudyTime
        "00080050",  # AccessionNumber
        "00080056",  # InstanceAvailability
        "00080061",  # ModalitiesInStudy
        "00080090",  # ReferringPhysicianName
        "00080201",  # TimezoneOffsetFromUTC
        "00081190",  # RetrieveURL
        "00100010",  # PatientName
        "00100020",  # PatientID
        "00100030",  # PatientBirthDate
        "00100040",  # PatientSex
        "0020000D",  # StudyInstanceUID
        "00200010",  # StudyID
        "00201206",  # NumberOfStudyRelatedSeries
        "00201208",  # NumberOfStudyRelatedInstances
    ),
    Level.SERIES: (
        "00080005",  # SpecificCharacterSet
        "00080060",  # Modality
        "00080201",  # TimezoneOffsetFromUTC
        "0008103E",  # SeriesDescription
        "00081190",  # RetrieveURL
        "0020000E",  # SeriesInstanceUID
        "00200011",  # SeriesNumber
        "00201209",  # NumberOfSeriesRelatedInstances
        "00400244",  # PerformedProcedureStepStartDate
        "00400245",  # PerformedProcedureStepStartTime
        "00400275",  # RequestAttributesSequence
    ),
    Level.INSTANCE: (
        "00080005",  # SpecificCharacterSet
        "00080016",  # SOPClassUID
        "00080018",  # SOPInstanceUID
        "00080056",  # InstanceAvailability
        "00080201",  # TimezoneOffsetFromUTC
        "00081190",  # RetrieveURL
        "00200013",  # InstanceNumber
        "00280008",  # NumberOfFrames
        "00280010",  # Rows
        "00280011",  # Columns
        "00280100",  # BitsAllocated
    ),
}

#: Required attributes returned only when a value is known.
CONDITIONAL: Final = frozenset({"00080005", "00080201"})


def matchable_at(attr: Attribute, level: Level) -> bool:
    """Whether ``attr`` is a supported matching key for a query at ``level``.

    Keys of the query's level and of the levels above it apply (PS3.18 Table 10.6.1-5: study
    keys for ``/series``, study and series keys for ``/instances``). A C-FIND at PATIENT
    level matches on patient keys only.
    """
    if not attr.matching or attr.level is None:
        return False
    if level is Level.PATIENT:  # C-FIND PATIENT level (PS3.4 C.6.1.1.2): patient keys only
        return attr.level is Level.PATIENT
    return attr.level.rank <= max(level.rank, Level.STUDY.rank)


def resolve(name: str) -> Attribute | None:
    """Look up an attribute by keyword or by 8-hex-digit tag (PS3.18 §8.3.4.1).

    Attributes of :data:`ATTRIBUTES` come with their columns; any other attribute of the PS3.6
    data dictionary (or a private tag, VR ``UN``) is returned without column or level, usable
    as a return key only.

    Args:
        name: ``"PatientName"`` or ``"00100010"`` (hex digits of either case).

    Returns:
        The attribute, or ``None`` if ``name`` is neither a known keyword nor a tag.
    """
    if _TAG_RE.fullmatch(name):
        tag = name.upper()
        known = BY_TAG.get(tag)
        if known is not None:
            return known
        value = int(tag, 16)
        if value >> 16 in (0x0000, 0x0002, 0xFFFE) or value & 0xFFFF == 0:
            return None  # command, file meta, item delimiters and group lengths are not attributes
        keyword = keyword_for_tag(value) or tag
        return Attribute(keyword, tag, _vr_of(value), None)
    known = BY_KEYWORD.get(name)
    if known is not None:
        return known
    number = tag_for_keyword(name)
    if number is None:
        return None
    return Attribute(name, f"{number:08X}", _vr_of(number), None)


def _vr_of(tag: int) -> str:
    if (tag >> 16) % 2 == 1:
        return "UN"  # private attribute: VR unknown without its creator's dictionary
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return "UN"
    return vr.split(" or ")[0] if " or " in vr else vr
