"""Behavioural tests for Accept parsing and media-range matching (RFC 9110 §12.5.1)."""

from __future__ import annotations

import pytest

from dicomhub.errors import InvalidInput
from dicomhub.web.media import MediaRange, parse_accept, scan_media_type


def types(header: str | None) -> list[str]:
    return [r.media_type for r in parse_accept(header)]


@pytest.mark.parametrize("header", [None, "", "   ", " \t "])
def test_missing_or_blank_accept_means_anything(header: str | None) -> None:
    assert parse_accept(header) == [MediaRange("*", "*", {}, 1.0)]


def test_single_range_defaults() -> None:
    (only,) = parse_accept("application/dicom+json")
    assert only == MediaRange("application", "dicom+json", {}, 1.0)
    assert only.media_type == "application/dicom+json"


def test_sorted_by_q_descending() -> None:
    header = "text/plain;q=0.2, application/dicom+xml;q=0.5, application/dicom+json, image/*;q=0.9"
    assert types(header) == [
        "application/dicom+json",
        "image/*",
        "application/dicom+xml",
        "text/plain",
    ]
    assert [r.q for r in parse_accept(header)] == [1.0, 0.9, 0.5, 0.2]


def test_equal_q_sorted_by_specificity_then_header_order() -> None:
    header = "*/*, image/*, image/jpeg, application/json, image/png;x=1, image/jpeg"
    assert types(header) == [
        "image/png",
        "image/jpeg",
        "application/json",
        "image/jpeg",
        "image/*",
        "*/*",
    ]


def test_q_dominates_specificity() -> None:
    assert types("image/jpeg;q=0.5, */*") == ["*/*", "image/jpeg"]


def test_q_zero_is_dropped() -> None:
    assert types("image/jpeg;q=0, image/png;q=0.000, image/gif") == ["image/gif"]
    assert parse_accept("image/jpeg;q=0") == []


def test_dicom_multipart_range() -> None:
    (dicom,) = parse_accept('Multipart/Related; Type="Application/DICOM"; Transfer-Syntax=*; q=0.8')
    assert dicom.media_type == "multipart/related"
    assert dicom.params == {"type": "application/dicom", "transfer-syntax": "*"}
    assert dicom.q == 0.8


def test_transfer_syntax_keeps_case_and_type_is_lowered_only_for_multipart() -> None:
    (first, second) = parse_accept(
        'multipart/related; type="Application/Octet-Stream"; '
        "transfer-syntax=1.2.840.10008.1.2.4.50, application/x-custom; type=MiXeD; q=0.5"
    )
    assert first.params == {
        "type": "application/octet-stream",
        "transfer-syntax": "1.2.840.10008.1.2.4.50",
    }
    assert second.params == {"type": "MiXeD"}
    (case_kept,) = parse_accept("multipart/related; type=application/dicom; transfer-syntax=ABC")
    assert case_kept.params["transfer-syntax"] == "ABC"


def test_q_parameter_name_is_case_insensitive_and_may_come_first() -> None:
    (only,) = parse_accept("image/jpeg; Q=0.3; transfer-syntax=1.2.3")
    assert only.q == 0.3
    assert only.params == {"transfer-syntax": "1.2.3"}


def test_tolerates_whitespace_repeated_commas_and_quotes() -> None:
    header = ' ,, image/jpeg ;  q = 0.7 ,,\t, multipart/related ; type = "a,b;c" ,'
    ranges = parse_accept(header)
    assert [r.media_type for r in ranges] == ["multipart/related", "image/jpeg"]
    assert ranges[0].params == {"type": "a,b;c"}
    assert ranges[1].q == 0.7


def test_quoted_pair_in_parameter() -> None:
    (only,) = parse_accept(r'text/plain; x="a\"b\\c"')
    assert only.params == {"x": 'a"b\\c'}


def test_empty_parameters_are_ignored() -> None:
    (only,) = parse_accept("text/plain;;  ; charset=utf-8;")
    assert only.params == {"charset": "utf-8"}


@pytest.mark.parametrize(
    ("q", "expected"),
    [("0.5", 0.5), ("0.123", 0.123), ("0.05", 0.05), ("1", 1.0), ("1.", 1.0), ("1.000", 1.0)],
)
def test_valid_q_values(q: str, expected: float) -> None:
    (only,) = parse_accept(f"text/plain;q={q}")
    assert only.q == expected


@pytest.mark.parametrize("q", ["0", "0.", "0.0", "0.000", '"0"'])
def test_zero_q_spellings_drop_the_range(q: str) -> None:
    assert types(f"text/plain;q={q}, image/png") == ["image/png"]


@pytest.mark.parametrize(
    "q", ["", "abc", "1.5", "2", "-0.5", "0.1234", "1.001", ".5", "0,5", "1e0", "nan", "inf"]
)
def test_malformed_q_is_rejected(q: str) -> None:
    with pytest.raises(InvalidInput):
        parse_accept(f"text/plain;q={q}, image/jpeg")


def test_repeated_q_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="more than one q"):
        parse_accept("text/plain;q=0.5;q=0.6")


@pytest.mark.parametrize(
    "header",
    [
        "text",
        "text/",
        "/plain",
        "*/plain",
        "text/plain junk",
        "text/plain; charset",
        'text/plain; x="unterminated',
        "text/plain; =x",
        "text/plain, \x00/x",
        "te xt/plain",
    ],
)
def test_malformed_ranges_are_rejected(header: str) -> None:
    with pytest.raises(InvalidInput):
        parse_accept(header)


def test_oversize_header_is_rejected() -> None:
    header = "image/jpeg;q=0.5, " + "a" * 4096 + "/b"
    with pytest.raises(InvalidInput, match="4096"):
        parse_accept(header)
    assert types("a/b;x=" + "c" * (4096 - 6)) == ["a/b"]  # Exactly at the limit.
    with pytest.raises(InvalidInput, match="4096"):
        parse_accept("a/b;x=" + "c" * (4096 - 5))


def test_range_count_limit() -> None:
    assert len(parse_accept(", ".join(["a/b"] * 64))) == 64
    with pytest.raises(InvalidInput, match="more than 64"):
        parse_accept(", ".join(["a/b"] * 65))
    # Empty list elements do not count as ranges.
    assert len(parse_accept(",,,".join(["a/b"] * 64))) == 64


def test_matches_wildcards() -> None:
    anything = MediaRange("*", "*")
    image = MediaRange("image", "*")
    jpeg = MediaRange("image", "jpeg")
    assert anything.matches("application/dicom")
    assert image.matches("image/jpeg")
    assert image.matches("IMAGE/PNG")
    assert not image.matches("application/dicom")
    assert jpeg.matches("image/jpeg")
    assert jpeg.matches("Image/JPEG; transfer-syntax=1.2.840.10008.1.2.4.50")
    assert not jpeg.matches("image/png")
    assert not jpeg.matches("image")
    assert not anything.matches("garbage")


def test_matches_with_parsed_ranges() -> None:
    ranges = parse_accept('multipart/related; type="application/dicom", application/*;q=0.1')
    assert [r.matches("multipart/related") for r in ranges] == [True, False]
    assert [r.matches("application/dicom+json") for r in ranges] == [False, True]


def test_specificity() -> None:
    assert MediaRange("*", "*").specificity == (0, 0)
    assert MediaRange("image", "*").specificity == (1, 0)
    assert MediaRange("image", "jpeg", {"a": "b"}).specificity == (2, 1)


def test_media_range_is_hashable_and_frozen() -> None:
    first, second = MediaRange("a", "b", {"x": "1"}), MediaRange("a", "b", {"x": "1"})
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1
    with pytest.raises(AttributeError):
        first.q = 0.5  # type: ignore[misc]


def test_scan_media_type_in_list_stops_at_comma() -> None:
    text = 'a/b; x="1,2"; y=3, c/d'
    type_, subtype, params, end = scan_media_type(text, in_list=True)
    assert (type_, subtype, params) == ("a", "b", [("x", "1,2"), ("y", "3")])
    assert text[end] == ","
    assert scan_media_type(text, end + 1, in_list=True)[:3] == ("c", "d", [])
