"""Media types and HTTP content negotiation for DICOMweb.

Parses ``Accept`` headers into weighted media ranges (RFC 9110 §12.5.1, §5.6.6 for parameters)
as DICOMweb requires for choosing a response representation (PS3.18 §8.7.3), and provides the
media-type scanner that :mod:`dicomhub.web.multipart` uses for ``Content-Type``.

Parsing is deliberately tolerant where real clients deviate (whitespace around ``;`` and ``=``,
empty list elements, unquoted values containing ``/`` such as ``type=application/dicom``), but
anything that cannot be read unambiguously raises :class:`~dicomhub.errors.InvalidInput`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dicomhub.errors import InvalidInput

__all__ = [
    "MAX_ACCEPT_CHARS",
    "MAX_ACCEPT_RANGES",
    "MediaRange",
    "parse_accept",
    "scan_media_type",
]

MAX_ACCEPT_CHARS = 4096
"""Longest ``Accept`` header we parse; longer ones are rejected, not truncated."""

MAX_ACCEPT_RANGES = 64
"""Most media ranges we accept in one ``Accept`` header."""

# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_OWS = re.compile(r"[ \t]*")
# RFC 9110 §5.6.4: quoted-string with quoted-pairs; control characters (except HTAB) are invalid.
_QUOTED = re.compile(r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*)"')
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# Tolerated unquoted values: anything up to whitespace, ';', a quote (and ',' inside a list).
_LOOSE_VALUE = re.compile(r'[^\s;"\x00-\x1f\x7f]+')
_LOOSE_VALUE_IN_LIST = re.compile(r'[^\s;,"\x00-\x1f\x7f]+')
# RFC 9110 §12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


def scan_media_type(
    text: str, pos: int = 0, *, in_list: bool = False
) -> tuple[str, str, list[tuple[str, str]], int]:
    """Scans one ``type/subtype *(; name=value)`` starting at ``pos`` (RFC 9110 §8.3.1, §5.6.6).

    Args:
        text: The header value.
        pos: Offset at which the media type starts (leading whitespace is skipped).
        in_list: Whether the media type is an element of a comma-separated list (``Accept``);
            if so, scanning stops before a ``,`` that is not inside a quoted string.

    Returns:
        ``(type, subtype, params, end)``: type and subtype lower-cased, parameters in order with
        lower-cased names and unquoted values, and the offset where scanning stopped (the end of
        ``text`` or a list comma).

    Raises:
        InvalidInput: The text is not a media type with well-formed parameters.
    """
    pos = _skip_ows(text, pos)
    type_match = _TOKEN.match(text, pos)
    if type_match is None:
        raise InvalidInput(f"media type expected at offset {pos}")
    pos = type_match.end()
    if not text.startswith("/", pos):
        raise InvalidInput(f"media type {type_match.group()!r} has no '/subtype'")
    subtype_match = _TOKEN.match(text, pos + 1)
    if subtype_match is None:
        raise InvalidInput(f"media subtype expected at offset {pos + 1}")
    pos = subtype_match.end()
    loose = _LOOSE_VALUE_IN_LIST if in_list else _LOOSE_VALUE
    params: list[tuple[str, str]] = []
    while True:
        pos = _skip_ows(text, pos)
        if pos == len(text) or (in_list and text[pos] == ","):
            break
        if text[pos] != ";":
            raise InvalidInput(f"unexpected character {text[pos]!r} at offset {pos} in media type")
        pos = _skip_ows(text, pos + 1)
        if pos == len(text) or text[pos] == ";" or (in_list and text[pos] == ","):
            continue  # Empty parameter: RFC 9110 §5.6.6 allows `*( OWS ";" OWS [ parameter ] )`.
        name_match = _TOKEN.match(text, pos)
        if name_match is None:
            raise InvalidInput(f"parameter name expected at offset {pos} in media type")
        pos = _skip_ows(text, name_match.end())
        if not text.startswith("=", pos):
            raise InvalidInput(f"media type parameter {name_match.group()!r} has no value")
        pos = _skip_ows(text, pos + 1)
        if text.startswith('"', pos):
            quoted = _QUOTED.match(text, pos)
            if quoted is None:
                raise InvalidInput(f"unterminated or invalid quoted string at offset {pos}")
            value = _QUOTED_PAIR.sub(r"\1", quoted.group(1))
            pos = quoted.end()
        else:
            value_match = loose.match(text, pos)
            if value_match is None:
                raise InvalidInput(f"media type parameter {name_match.group()!r} has no value")
            value = value_match.group()
            pos = value_match.end()
        params.append((name_match.group().lower(), value))
    return type_match.group().lower(), subtype_match.group().lower(), params, pos


def _skip_ows(text: str, pos: int) -> int:
    match = _OWS.match(text, pos)
    return pos if match is None else match.end()


@dataclass(frozen=True)
class MediaRange:
    """One element of an ``Accept`` header (RFC 9110 §12.5.1).

    Attributes:
        type: Top-level type, lower-cased; ``*`` for ``*/*``.
        subtype: Subtype, lower-cased; ``*`` for a wildcard.
        params: Parameters other than ``q``: lower-cased names, unquoted values. Values keep
            their case (e.g. ``transfer-syntax``), except the ``type`` parameter of ``multipart/*``
            ranges, which is itself a media type and therefore lower-cased (PS3.18 §8.7.3.5).
        q: Weight, 0.0 to 1.0.
    """

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict, hash=False)
    q: float = 1.0

    @property
    def media_type(self) -> str:
        """``type/subtype`` without parameters."""
        return f"{self.type}/{self.subtype}"

    @property
    def specificity(self) -> tuple[int, int]:
        """Precedence key, larger is more specific (RFC 9110 §12.5.1).

        ``*/*`` < ``type/*`` < ``type/subtype``; ties broken by the number of parameters.
        """
        if self.type == "*":
            level = 0
        elif self.subtype == "*":
            level = 1
        else:
            level = 2
        return level, len(self.params)

    def matches(self, media_type: str) -> bool:
        """Tells whether a concrete media type falls within this range.

        Only ``type/subtype`` is compared (case-insensitively); parameters of either side, such
        as ``transfer-syntax``, are left to the caller's negotiation (PS3.18 §8.7.3).

        Args:
            media_type: A concrete media type, e.g. ``application/dicom``; parameters after ``;``
                are ignored.

        Returns:
            True if the range is ``*/*``, ``type/*`` with the same type, or the same type/subtype.
        """
        base = media_type.split(";", 1)[0].strip().lower()
        type_, sep, subtype = base.partition("/")
        if not sep:
            return False
        if self.type == "*":
            return True
        return self.type == type_ and self.subtype in ("*", subtype)


def parse_accept(header: str | None) -> list[MediaRange]:
    """Parses an ``Accept`` header into media ranges in preference order (RFC 9110 §12.5.1).

    A missing or blank header means ``*/*``. Ranges are sorted by descending ``q``, then by
    descending specificity; equal ranges keep their header order. Ranges with ``q=0`` are dropped,
    so the result can be empty (nothing acceptable): callers should then answer 406
    (PS3.18 §8.7.3).

    Args:
        header: The raw ``Accept`` header value, or None if absent.

    Returns:
        The acceptable media ranges, most preferred first.

    Raises:
        InvalidInput: The header is longer than :data:`MAX_ACCEPT_CHARS`, has more than
            :data:`MAX_ACCEPT_RANGES` ranges, has a malformed or repeated ``q``, a malformed media
            range (including ``*/subtype``), or malformed parameters.
    """
    if header is None or not header.strip(" \t"):
        return [MediaRange("*", "*", {}, 1.0)]
    if len(header) > MAX_ACCEPT_CHARS:
        raise InvalidInput(f"Accept header longer than {MAX_ACCEPT_CHARS} characters")
    ranges: list[MediaRange] = []
    count = 0
    pos = 0
    while True:
        while pos < len(header) and header[pos] in " \t,":
            pos += 1  # RFC 9110 §5.6.1: empty list elements are ignored by recipients.
        if pos == len(header):
            break
        count += 1
        if count > MAX_ACCEPT_RANGES:
            raise InvalidInput(f"Accept header has more than {MAX_ACCEPT_RANGES} media ranges")
        type_, subtype, raw_params, pos = scan_media_type(header, pos, in_list=True)
        media_range = _make_range(type_, subtype, raw_params)
        if media_range.q > 0.0:
            ranges.append(media_range)
    ranges.sort(key=lambda r: (-r.q, -r.specificity[0], -r.specificity[1]))
    return ranges


def _make_range(type_: str, subtype: str, raw_params: list[tuple[str, str]]) -> MediaRange:
    if type_ == "*" and subtype != "*":
        raise InvalidInput(f"invalid media range '*/{subtype}' in Accept header")
    q: float | None = None
    params: dict[str, str] = {}
    for name, value in raw_params:
        if name == "q":
            if q is not None:
                raise InvalidInput(f"media range {type_}/{subtype} has more than one q")
            if _QVALUE.fullmatch(value) is None:
                raise InvalidInput(f"invalid q value {value[:16]!r} in Accept header")
            q = float(value)
            continue
        if name == "type" and type_ == "multipart":
            value = value.lower()
        params[name] = value  # A repeated parameter keeps its last value.
    return MediaRange(type_, subtype, params, 1.0 if q is None else q)
