"""QIDO-RS query string parsing (PS3.18 §8.3.4, §10.6.1)."""

from __future__ import annotations

import pytest

from dicomhub.domain.query import Level, Query, Range, SingleValue, UidList, Universal, Wildcard
from dicomhub.errors import InvalidInput
from dicomhub.web.dicomweb.qido_params import (
    MAX_PARAMETERS,
    MAX_UID_LIST_CHARS,
    MAX_VALUE_CHARS,
    parse_query,
)


def q(
    params: list[tuple[str, str]],
    level: Level = Level.STUDY,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> Query:
    return parse_query(
        params,
        level=level,
        study_uid=study_uid,
        series_uid=series_uid,
        default_limit=100,
        max_limit=1000,
    )


def test_keyword_and_tag_keys() -> None:
    query = q([("PatientID", "P1"), ("00100010", "Doe*"), ("0020000d", "1.2.3")])
    by_tag = {m.tag: m for m in query.matches}
    assert by_tag["00100020"].matcher == SingleValue("P1")
    assert by_tag["00100010"].matcher == Wildcard("Doe*")
    assert by_tag["00100010"].keyword == "PatientName"
    assert by_tag["0020000D"].matcher == SingleValue("1.2.3")
    assert query.unsupported == ()


def test_defaults() -> None:
    query = q([])
    assert (query.limit, query.offset, query.fuzzy, query.include_all) == (100, 0, False, False)
    assert query.matches == () and query.include == ()


def test_empty_value_is_return_key() -> None:
    query = q([("StudyDescription", "")])
    assert [(m.keyword, m.matcher) for m in query.matches] == [("StudyDescription", Universal())]


def test_uid_list_commas_and_backslashes() -> None:
    query = q([("StudyInstanceUID", "1.2.3,1.2.4\\1.2.5")])
    assert query.matches[0].matcher == UidList(("1.2.3", "1.2.4", "1.2.5"))


def test_includefield() -> None:
    query = q(
        [
            ("includefield", "StudyDescription,00081030"),
            ("includefield", "00100021"),
            ("includefield", "ReferencedSOPSequence.ReferencedSOPClassUID"),
        ]
    )
    assert query.include == ("00081030", "00100021", "00081199")
    assert not query.include_all
    assert q([("includefield", "all")]).include_all
    assert q([("includefield", "ALL,PatientAge")]).include == ("00101010",)


def test_fuzzy_limit_offset() -> None:
    query = q([("fuzzymatching", "true"), ("limit", "5"), ("offset", "10")])
    assert (query.fuzzy, query.limit, query.offset) == (True, 5, 10)
    assert not q([("fuzzymatching", "false")]).fuzzy
    assert q([("limit", "5000")]).limit == 1000  # capped by settings.qido_max_limit
    assert q([("limit", "0")]).limit == 0


def test_ranges_are_parsed() -> None:
    query = q([("StudyDate", "20200101-"), ("StudyTime", "-1200")])
    assert {m.keyword: m.matcher for m in query.matches} == {
        "StudyDate": Range("20200101", None),
        "StudyTime": Range(None, "1200"),
    }


def test_unsupported_keys_are_ignored_with_warning() -> None:
    query = q([("Modality", "CT"), ("AcquisitionDateTime", "2020"), ("StudyDate", "20200101")])
    assert [m.keyword for m in query.matches] == ["StudyDate"]
    assert query.unsupported == ("Modality", "AcquisitionDateTime")
    assert "00080060" in query.include and "0008002A" in query.include
    # an empty value is a plain return key: no warning
    assert q([("Modality", "")]).unsupported == ()


def test_sequence_matching_is_ignored_with_warning() -> None:
    query = q(
        [("RequestAttributesSequence.AccessionNumber", "A1")],
        level=Level.SERIES,
    )
    assert query.matches == ()
    assert query.unsupported == ("RequestAttributesSequence.AccessionNumber",)
    assert query.include == ("00400275",)


def test_levels_accept_upper_level_keys() -> None:
    series = q([("StudyDate", "20200101"), ("Modality", "CT")], level=Level.SERIES)
    assert {m.keyword for m in series.matches} == {"StudyDate", "Modality"}
    inst = q([("PatientID", "x"), ("Modality", "CT"), ("SOPClassUID", "1.2")], level=Level.INSTANCE)
    assert len(inst.matches) == 3 and inst.unsupported == ()
    assert q([("SOPClassUID", "1.2")], level=Level.SERIES).unsupported == ("SOPClassUID",)


def test_path_scope_is_validated() -> None:
    query = q([], level=Level.INSTANCE, study_uid="1.2", series_uid="1.2.3")
    assert (query.study_uid, query.series_uid) == ("1.2", "1.2.3")
    with pytest.raises(InvalidInput, match="StudyInstanceUID"):
        q([], level=Level.SERIES, study_uid="abc")
    with pytest.raises(InvalidInput, match="SeriesInstanceUID"):
        q([], level=Level.INSTANCE, study_uid="1.2", series_uid="1..2")


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ([("Foo", "1")], "unknown query parameter"),
        ([("PatientNam", "x")], "unknown query parameter"),
        ([("includefield", "Nope")], "unknown"),
        ([("includefield", "0010001")], "unknown"),
        ([("PatientID", "a"), ("PatientID", "b")], "more than once"),
        ([("limit", "-1")], "non-negative integer"),
        ([("limit", "ten")], "non-negative integer"),
        ([("offset", "1.5")], "non-negative integer"),
        ([("offset", "99999999999")], "larger than"),
        ([("limit", "1"), ("limit", "2")], "more than once"),
        ([("fuzzymatching", "yes")], "'true' or 'false'"),
        ([("StudyDate", "2020-01-01")], "StudyDate"),
        ([("StudyTime", "2500")], "StudyTime"),
        ([("StudyInstanceUID", "1.2.abc")], "not a valid UID"),
        ([("StudyInstanceUID", "1.2*")], "wildcards"),
        ([("StudyInstanceUID", ",".join(["1.2"] * 1001))], "more than 1000 UIDs"),
        ([("StudyInstanceUID", "1" * (MAX_UID_LIST_CHARS + 1))], "longer than"),
        ([("StudyDescription", "x" * (MAX_VALUE_CHARS + 1))], "longer than"),
        ([("includefield", "x" * (MAX_VALUE_CHARS + 1))], "longer than"),
        ([("PatientID", "x" * (MAX_VALUE_CHARS + 1))], "longer than"),
        ([("PatientID", "")] * (MAX_PARAMETERS + 1), "more than 100"),
        ([("PatientName.PatientID", "x")], "not a sequence"),
    ],
)
def test_bad_parameters(params: list[tuple[str, str]], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        q(params)


def test_reasons_do_not_echo_values() -> None:
    with pytest.raises(InvalidInput) as err:
        q([("StudyDate", "Smith^John")])
    assert "Smith" not in err.value.reason
