"""The query model: matchers per PS3.4 C.2.2.2, attribute table, LIKE patterns."""

from __future__ import annotations

import pytest

from dicomhub.domain.attributes import BY_KEYWORD, REQUIRED, matchable_at, resolve
from dicomhub.domain.query import (
    AnyOf,
    Level,
    Match,
    Query,
    Range,
    SingleValue,
    UidList,
    Universal,
    Wildcard,
    parse_matcher,
    time_bounds,
)
from dicomhub.errors import InvalidInput
from dicomhub.storage.index.queries import like_pattern


@pytest.mark.parametrize("vr", ["PN", "LO", "CS", "UI", "DA", "TM", "IS", "SH"])
def test_empty_and_star_values_are_universal(vr: str) -> None:
    assert parse_matcher(vr, "", "X") == Universal()
    assert parse_matcher(vr, "*", "X") == Universal()
    assert parse_matcher(vr, "**", "X") == Universal()


def test_single_value_and_wildcards() -> None:
    assert parse_matcher("PN", "Doe^John", "PatientName") == SingleValue("Doe^John")
    assert parse_matcher("PN", "Doe*", "PatientName") == Wildcard("Doe*")
    assert parse_matcher("LO", "P?1", "PatientID") == Wildcard("P?1")
    assert parse_matcher("LO", "a**b", "PatientID") == Wildcard("a*b")
    # % and _ are ordinary characters in DICOM values
    assert parse_matcher("LO", "50%_x", "PatientID") == SingleValue("50%_x")


def test_wildcard_parts() -> None:
    assert Wildcard("a*b?c").parts() == [
        ("lit", "a"),
        ("any", "*"),
        ("lit", "b"),
        ("one", "?"),
        ("lit", "c"),
    ]


def test_like_pattern_escapes_literals() -> None:
    assert like_pattern(Wildcard("50%*")) == "50\\%%"
    assert like_pattern(Wildcard("a_b?")) == "a\\_b_"
    assert like_pattern(Wildcard("x\\y*")) == "x\\\\y%"


def test_backslash_lists() -> None:
    assert parse_matcher("CS", "CT\\MR", "ModalitiesInStudy") == AnyOf(
        (SingleValue("CT"), SingleValue("MR"))
    )
    assert parse_matcher("CS", "C*\\MR", "Modality") == AnyOf((Wildcard("C*"), SingleValue("MR")))
    assert parse_matcher("CS", "CT\\", "Modality") == SingleValue("CT")


def test_uid_lists() -> None:
    assert parse_matcher("UI", "1.2.3", "StudyInstanceUID") == SingleValue("1.2.3")
    assert parse_matcher("UI", "1.2.3\\1.2.4\\1.2.3", "StudyInstanceUID") == UidList(
        ("1.2.3", "1.2.4")
    )
    with pytest.raises(InvalidInput, match="not a valid UID"):
        parse_matcher("UI", "1.2.x", "StudyInstanceUID")
    with pytest.raises(InvalidInput, match="not a valid UID"):
        parse_matcher("UI", "1.2.3\\", "StudyInstanceUID")
    with pytest.raises(InvalidInput, match="wildcards"):
        parse_matcher("UI", "1.2.*", "StudyInstanceUID")
    with pytest.raises(InvalidInput, match="more than 3 UIDs"):
        parse_matcher("UI", "1\\2\\3\\4", "StudyInstanceUID", max_uids=3)


def test_date_ranges() -> None:
    assert parse_matcher("DA", "20200101", "StudyDate") == SingleValue("20200101")
    assert parse_matcher("DA", "20200101-20201231", "StudyDate") == Range("20200101", "20201231")
    assert parse_matcher("DA", "-20201231", "StudyDate") == Range(None, "20201231")
    assert parse_matcher("DA", "20200101-", "StudyDate") == Range("20200101", None)


@pytest.mark.parametrize(
    "value", ["2020", "20201301", "20200230", "2020-01-01", "-", "20200101-2020", "2020010*", "a"]
)
def test_bad_dates(value: str) -> None:
    with pytest.raises(InvalidInput):
        parse_matcher("DA", value, "StudyDate")


def test_time_ranges_and_bounds() -> None:
    assert parse_matcher("TM", "1015", "StudyTime") == SingleValue("1015")
    assert parse_matcher("TM", "10-113000.5", "StudyTime") == Range("10", "113000.5")
    assert time_bounds("10") == ("100000.000000", "105959.999999")
    assert time_bounds("1015") == ("101500.000000", "101559.999999")
    assert time_bounds("101530") == ("101530.000000", "101530.999999")
    assert time_bounds("101530.12") == ("101530.120000", "101530.129999")


@pytest.mark.parametrize("value", ["25", "1060", "101", "1015.5", "10:15", "1015-99", "1015\\1016"])
def test_bad_times(value: str) -> None:
    with pytest.raises(InvalidInput):
        parse_matcher("TM", value, "StudyTime")


def test_datetime_ranges() -> None:
    assert parse_matcher("DT", "20200101120000", "X") == SingleValue("20200101120000")
    # a negative UTC offset is not a range separator
    assert parse_matcher("DT", "20200101120000-0500", "X") == SingleValue("20200101120000-0500")
    assert parse_matcher("DT", "2020-2021", "X") == Range("2020", "2021")
    assert parse_matcher("DT", "20200101-", "X") == Range("20200101", None)
    assert parse_matcher("DT", "-202001011200+0100", "X") == Range(None, "202001011200+0100")
    with pytest.raises(InvalidInput):
        parse_matcher("DT", "20201301", "X")


def test_integers() -> None:
    assert parse_matcher("IS", " 007", "SeriesNumber") == SingleValue("7")
    assert parse_matcher("IS", "-3", "SeriesNumber") == SingleValue("-3")
    for bad in ("1.5", "x", "1?", "99999999999999999999999"):
        with pytest.raises(InvalidInput):
            parse_matcher("IS", bad, "SeriesNumber")


def test_unmatchable_vr() -> None:
    with pytest.raises(InvalidInput):
        parse_matcher("SQ", "x", "RequestAttributesSequence")


def test_level_rank_and_relational() -> None:
    assert Level.PATIENT.rank < Level.STUDY.rank < Level.SERIES.rank < Level.INSTANCE.rank
    assert Level.INSTANCE.value == "IMAGE"  # Query/Retrieve Level of PS3.4 C.6
    assert not Query(Level.STUDY).relational
    assert Query(Level.SERIES).relational
    assert not Query(Level.SERIES, study_uid="1.2").relational
    assert Query(Level.INSTANCE, study_uid="1.2").relational
    assert not Query(Level.INSTANCE, study_uid="1.2", series_uid="1.3").relational


def test_filters_skip_universal() -> None:
    keep = Match("00100020", "PatientID", "LO", SingleValue("x"))
    query = Query(Level.STUDY, matches=(Match("00100010", "PatientName", "PN", Universal()), keep))
    assert query.filters() == (keep,)


def test_resolve_by_keyword_and_tag() -> None:
    by_kw = resolve("StudyInstanceUID")
    by_tag = resolve("0020000d")
    assert by_kw is not None and by_kw is by_tag
    assert by_kw.column == "study.study_uid"
    other = resolve("AcquisitionDateTime")
    assert other is not None and other.tag == "0008002A" and other.vr == "DT"
    assert not other.matching
    private = resolve("00091010")
    assert private is not None and private.vr == "UN"
    assert resolve("NotAKeyword") is None
    assert resolve("00080000") is None  # group length
    assert resolve("00020010") is None  # file meta
    assert resolve("0008001") is None


def test_matchable_levels() -> None:
    study_key = BY_KEYWORD["StudyDate"]
    series_key = BY_KEYWORD["Modality"]
    instance_key = BY_KEYWORD["SOPClassUID"]
    patient_key = BY_KEYWORD["PatientName"]
    assert matchable_at(patient_key, Level.STUDY)
    assert matchable_at(study_key, Level.STUDY)
    assert not matchable_at(series_key, Level.STUDY)
    assert matchable_at(study_key, Level.SERIES) and matchable_at(series_key, Level.SERIES)
    assert not matchable_at(instance_key, Level.SERIES)
    assert matchable_at(study_key, Level.INSTANCE) and matchable_at(instance_key, Level.INSTANCE)
    assert not matchable_at(BY_KEYWORD["NumberOfStudyRelatedInstances"], Level.STUDY)
    assert not matchable_at(BY_KEYWORD["RequestAttributesSequence"], Level.SERIES)


def test_required_attributes_per_level() -> None:
    names = {
        lv: {a.keyword for a in BY_KEYWORD.values() if a.tag in tags}
        for lv, tags in REQUIRED.items()
    }
    assert names[Level.STUDY] == {
        "SpecificCharacterSet",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceAvailability",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    }
    assert names[Level.SERIES] == {
        "SpecificCharacterSet",
        "Modality",
        "TimezoneOffsetFromUTC",
        "SeriesDescription",
        "RetrieveURL",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "RequestAttributesSequence",
    }
    assert names[Level.INSTANCE] == {
        "SpecificCharacterSet",
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceAvailability",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
    }
    for tags in REQUIRED.values():
        assert list(tags) == sorted(tags)
