"""UID syntax (PS3.5 §9.1)."""

from __future__ import annotations

import pytest

from dicomhub.domain.uids import is_valid_uid, validate_uid
from dicomhub.errors import InvalidInput


@pytest.mark.parametrize(
    "uid",
    [
        "1",
        "0",
        "1.2.840.10008.1.2.1",
        "1.2.840.113619.2.55.3.604688119.969.1268071029.320",
        "1.2.840.0113654.2.70.1",  # leading zero in a component: accepted on purpose
        "1." + "2" * 62,  # 64 characters
    ],
)
def test_valid(uid: str) -> None:
    assert is_valid_uid(uid)
    assert validate_uid(uid, "StudyInstanceUID") == uid


@pytest.mark.parametrize(
    "uid",
    [
        "",
        ".",
        "1.",
        ".1",
        "1..2",
        "1.2.a",
        "1.2 ",
        " 1.2",
        "1.2\x00",
        "1-2",
        "1." + "2" * 63,  # 65 characters
        "１.２",  # non-ASCII digits
    ],
)
def test_invalid(uid: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidInput, match="SeriesInstanceUID"):
        validate_uid(uid, "SeriesInstanceUID")
