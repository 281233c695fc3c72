"""The stored text of level DICOM JSON (storage.index.level_json): one member per line."""

from __future__ import annotations

import json

import pytest

from dicomhub.domain.attributes import BY_KEYWORD
from dicomhub.services.search import _column_member
from dicomhub.storage.index import level_json

ATTRS = {
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Zoë"}]},
    "00100020": {"vr": "LO", "Value": ['a,\nb},"00100030":{']},  # separators inside a value
    "00101002": {
        "vr": "SQ",
        "Value": [{"00100020": {"vr": "LO", "Value": ["X"]}, "00100021": {"vr": "LO"}}],
    },
}


def test_encoded_text_is_the_same_json() -> None:
    text = level_json.encode(ATTRS)
    assert json.loads(text) == ATTRS
    assert level_json.encode({}) == "{}"


def test_members_are_exact_member_texts_with_their_tag_first() -> None:
    members = level_json.members(level_json.encode(ATTRS))
    assert [m[1:9] for m in members] == list(ATTRS)
    for member, (tag, value) in zip(members, ATTRS.items(), strict=True):
        assert json.loads("{" + member + "}") == {tag: value}
        assert member == level_json.member(tag, value)


def test_compact_text_of_older_rows_gives_the_same_members() -> None:
    compact = json.dumps(ATTRS, separators=(",", ":"), ensure_ascii=False)
    assert level_json.members(compact) == level_json.members(level_json.encode(ATTRS))


def test_nothing_stored_gives_no_members() -> None:
    assert level_json.members(None) == []
    assert level_json.members("") == []
    assert level_json.members("{}") == []


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        (
            "PatientName",
            'Müller^Zoë "Z"\t',
            {"vr": "PN", "Value": [{"Alphabetic": 'Müller^Zoë "Z"\t'}]},
        ),
        ("PatientID", "P\\1", {"vr": "LO", "Value": ["P", "1"]}),
        ("StudyDate", "20200101", {"vr": "DA", "Value": ["20200101"]}),
        ("NumberOfStudyRelatedInstances", 12, {"vr": "IS", "Value": [12]}),
        ("PatientSex", "", None),
        ("PatientSex", None, None),
    ],
)
def test_column_values_become_the_members_json_would_write(
    keyword: str, value: object, expected: dict[str, object] | None
) -> None:
    # Index columns are the fallback when a level JSON lacks a required attribute.
    attr = BY_KEYWORD[keyword]
    member = _column_member(attr, value)
    assert member == (None if expected is None else level_json.member(attr.tag, expected))
