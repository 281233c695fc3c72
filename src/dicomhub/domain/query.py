r"""The transport-neutral query model (PS3.4 C.2.2.2 matching, PS3.18 §10.6 QIDO-RS).

QIDO-RS and C-FIND (PS3.4 C.4.1) both build a :class:`Query` and hand it to the search service.
A query names a level (PS3.4 C.6.1 Study Root hierarchy), an optional scope from the request
path, matching keys and their matchers, return keys, and paging.

Matchers follow PS3.4 C.2.2.2:

* :class:`Universal` — zero-length value: every entity matches; the key is a return key
  (C.2.2.2.3). A value of only ``*`` is the same (C.2.2.2.4).
* :class:`SingleValue` — exact match (C.2.2.2.1).
* :class:`Wildcard` — ``*`` (any run) and ``?`` (one character) (C.2.2.2.4), not for
  UI/DA/TM/DT/numbers; a value of only ``*`` is universal matching for every VR.
* :class:`Range` — ``a-b``, ``-b``, ``a-`` for DA, TM and DT (C.2.2.2.5).
* :class:`UidList` — ``\``-separated UIDs, any may match (C.2.2.2.2).
* :class:`AnyOf` — ``\``-separated values of other string VRs, any may match (multiple value
  matching, C.2.2.2.8), e.g. ``ModalitiesInStudy=CT\MR``.

Sequence matching (C.2.2.2.6) is optional and not supported: the edge ignores such keys and
warns. Everything here is pure: no SQL, no HTTP.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from dicomhub.domain.uids import is_valid_uid
from dicomhub.errors import InvalidInput

__all__ = [
    "DATE_VRS",
    "INTEGER_VRS",
    "MAX_UIDS",
    "AnyOf",
    "Level",
    "Match",
    "Matcher",
    "Query",
    "Range",
    "SingleValue",
    "UidList",
    "Universal",
    "Wildcard",
    "parse_matcher",
    "time_bounds",
]

#: Most UIDs accepted in one UID list (a bound, not a standard limit).
MAX_UIDS: Final = 1000

#: VRs matched by range (PS3.4 C.2.2.2.5).
DATE_VRS: Final = frozenset({"DA", "TM", "DT"})
#: Integer VRs: single value only, compared as numbers.
INTEGER_VRS: Final = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_FLOAT_VRS: Final = frozenset({"DS", "FL", "FD"})
#: VRs without wildcard matching (PS3.4 C.2.2.2.4), besides the date/time and number VRs.
_NO_WILDCARD_VRS: Final = frozenset({"UI", "AS", "AT", "OB", "OW", "UN"})
#: VRs whose values cannot be matched at all here (binary, tags, sequences).
_UNMATCHABLE_VRS: Final = frozenset(
    {"AT", "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UN", "UR", "LT", "ST", "UT"}
)

_DA_RE: Final = re.compile(r"[0-9]{8}")
_TM_RE: Final = re.compile(r"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,6}))?)?)?")
_DT_RE: Final = re.compile(
    r"([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})"
    r"(?:\.([0-9]{1,6}))?)?)?)?)?)?([+-][0-9]{4})?"
)
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class Level(StrEnum):
    """Query/Retrieve levels of the Study Root information model (PS3.4 C.6.2)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "IMAGE"

    @property
    def rank(self) -> int:
        """Depth in the hierarchy: PATIENT 0 ... INSTANCE 3."""
        return _RANK[self]


_RANK: Final = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.INSTANCE: 3}


@dataclass(frozen=True, slots=True)
class Universal:
    """Zero-length value: matches everything, the attribute is only returned (C.2.2.2.3)."""


@dataclass(frozen=True, slots=True)
class SingleValue:
    """Exact match of one value (C.2.2.2.1); for TM, any time within the value's precision."""

    value: str


@dataclass(frozen=True, slots=True)
class Wildcard:
    """``*`` matches any run of characters, ``?`` exactly one (C.2.2.2.4)."""

    pattern: str

    def parts(self) -> list[tuple[str, str]]:
        """Split the pattern into ``("lit", text)``, ``("any", "*")`` and ``("one", "?")``."""
        out: list[tuple[str, str]] = []
        literal: list[str] = []
        for ch in self.pattern:
            if ch in "*?":
                if literal:
                    out.append(("lit", "".join(literal)))
                    literal = []
                out.append(("any", ch) if ch == "*" else ("one", ch))
            else:
                literal.append(ch)
        if literal:
            out.append(("lit", "".join(literal)))
        return out


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive range of DA, TM or DT values; ``None`` is an open end (C.2.2.2.5)."""

    lower: str | None
    upper: str | None


@dataclass(frozen=True, slots=True)
class UidList:
    """Any of several UIDs (C.2.2.2.2)."""

    uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Any of several single-value or wildcard matchers (C.2.2.2.8)."""

    options: tuple[SingleValue | Wildcard, ...]


Matcher = Universal | SingleValue | Wildcard | Range | UidList | AnyOf


@dataclass(frozen=True, slots=True)
class Match:
    """One key of a query: an attribute (by tag) and how its value is matched.

    Attributes:
        tag: 8-digit uppercase hex tag, e.g. ``"00100010"``.
        keyword: The attribute's keyword (for messages), e.g. ``"PatientName"``.
        vr: The attribute's value representation.
        matcher: How the value is matched; :class:`Universal` keys are return keys only.
    """

    tag: str
    keyword: str
    vr: str
    matcher: Matcher


@dataclass(frozen=True, slots=True)
class Query:
    """A search at one level, optionally scoped to a study or series (PS3.18 §10.6.1).

    Attributes:
        level: The level of the entities returned.
        study_uid: Study of the request path (``/studies/{study}/...``), if any.
        series_uid: Series of the request path (``.../series/{series}/instances``), if any.
        matches: Matching and return keys, at most one per tag.
        fuzzy: Fuzzy matching of person names requested (PS3.18 §8.3.4.1).
        include: Extra return attributes (tags) requested with ``includefield``.
        include_all: ``includefield=all``: every stored attribute of the returned levels.
        limit: Most results returned.
        offset: Results skipped before the first returned.
        unsupported: Keywords of keys that are valid attributes but not supported as matching
            keys; they were not used for matching (the edge warns, PS3.18 §10.6.3).
    """

    level: Level
    study_uid: str | None = None
    series_uid: str | None = None
    matches: tuple[Match, ...] = ()
    fuzzy: bool = False
    include: tuple[str, ...] = ()
    include_all: bool = False
    limit: int = 100
    offset: int = 0
    unsupported: tuple[str, ...] = ()

    @property
    def relational(self) -> bool:
        """Whether the query spans levels above its own unscoped (``/series``, ``/instances``)."""
        if self.level is Level.SERIES:
            return self.study_uid is None
        if self.level is Level.INSTANCE:
            return self.series_uid is None
        return False

    def filters(self) -> tuple[Match, ...]:
        """The keys that restrict results (all but universal ones)."""
        return tuple(m for m in self.matches if not isinstance(m.matcher, Universal))


# ---------------------------------------------------------------------------------------------
# parsing of key values


def parse_matcher(vr: str, value: str, keyword: str, *, max_uids: int = MAX_UIDS) -> Matcher:
    """Build the matcher a key value asks for (PS3.4 C.2.2.2).

    Args:
        vr: Value representation of the attribute.
        value: The key value as received (no padding); ``""`` is universal matching.
        keyword: Attribute keyword, for error reasons.
        max_uids: Most UIDs accepted in a UID list.

    Returns:
        The matcher.

    Raises:
        InvalidInput: The value is not valid for the VR (bad UID, date, time, number, wildcard
            where none is allowed, malformed range, too many UIDs). Reasons never quote
            values, which may be PHI.
    """
    if value.strip("*") == "":
        return Universal()
    if vr in _UNMATCHABLE_VRS:
        raise InvalidInput(f"{keyword}: VR {vr} cannot be used as a matching key")
    if vr == "UI":
        return _uids(value, keyword, max_uids)
    if vr in DATE_VRS:
        return _date_like(vr, value, keyword)
    wildcard = "*" in value or "?" in value
    if wildcard and (vr in INTEGER_VRS or vr in _FLOAT_VRS or vr in _NO_WILDCARD_VRS):
        raise InvalidInput(f"{keyword}: wildcards are not allowed for VR {vr} (PS3.4 C.2.2.2.4)")
    if vr in INTEGER_VRS:
        if _INT_RE.fullmatch(value.strip(" ")) is None:
            raise InvalidInput(f"{keyword}: not an integer value (VR {vr})")
        number = int(value.strip(" "))
        if not -(2**63) <= number < 2**63:
            raise InvalidInput(f"{keyword}: integer value out of range (VR {vr})")
        return SingleValue(str(number))
    if vr in _FLOAT_VRS:
        if _FLOAT_RE.fullmatch(value.strip(" ")) is None:
            raise InvalidInput(f"{keyword}: not a decimal value (VR {vr})")
        return SingleValue(value.strip(" "))
    if "\\" in value:
        options = tuple(_string(v) for v in value.split("\\") if v != "")
        if not options:
            return Universal()
        return options[0] if len(options) == 1 else AnyOf(options)
    return _string(value)


def _string(value: str) -> SingleValue | Wildcard:
    if "*" in value or "?" in value:
        return Wildcard(re.sub(r"\*+", "*", value))
    return SingleValue(value)


def _uids(value: str, keyword: str, max_uids: int) -> SingleValue | UidList:
    if "*" in value or "?" in value:
        raise InvalidInput(f"{keyword}: wildcards are not allowed for UIDs (PS3.4 C.2.2.2.4)")
    uids = value.split("\\")
    if len(uids) > max_uids:
        raise InvalidInput(f"{keyword}: more than {max_uids} UIDs in a list")
    for uid in uids:
        if not is_valid_uid(uid):
            shown = uid[:72]
            raise InvalidInput(f"{keyword}: {shown!r} is not a valid UID (PS3.5 §9.1)")
    unique = tuple(dict.fromkeys(uids))
    return SingleValue(unique[0]) if len(unique) == 1 else UidList(unique)


def _date_like(vr: str, value: str, keyword: str) -> SingleValue | Range:
    if "*" in value or "?" in value or "\\" in value:
        raise InvalidInput(f"{keyword}: only a single value or a range is allowed for VR {vr}")
    check = {"DA": _valid_da, "TM": _valid_tm, "DT": _valid_dt}[vr]
    if "-" not in value or (vr == "DT" and check(value)):
        if not check(value):
            raise InvalidInput(f"{keyword}: malformed {vr} value (PS3.5 §6.2)")
        return SingleValue(value)
    for i, ch in enumerate(value):
        if ch != "-":
            continue
        lower, upper = value[:i], value[i + 1 :]
        if (lower or upper) and all(part == "" or check(part) for part in (lower, upper)):
            return Range(lower or None, upper or None)
    raise InvalidInput(f"{keyword}: malformed {vr} range (PS3.4 C.2.2.2.5)")


def _valid_da(value: str) -> bool:
    if _DA_RE.fullmatch(value) is None:
        return False
    try:
        dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return False
    return True


def _valid_tm(value: str) -> bool:
    m = _TM_RE.fullmatch(value)
    if m is None:
        return False
    hh, mm, ss = m.group(1), m.group(2), m.group(3)
    return int(hh) < 24 and (mm is None or int(mm) < 60) and (ss is None or int(ss) < 61)


def _valid_dt(value: str) -> bool:
    m = _DT_RE.fullmatch(value)
    if m is None:
        return False
    _, month, day, hour, minute, second, _, offset = m.groups()
    if month is not None and not 1 <= int(month) <= 12:
        return False
    if day is not None:
        try:
            dt.date(int(value[:4]), int(month), int(day))
        except ValueError:
            return False
    if hour is not None and int(hour) > 23:
        return False
    if minute is not None and int(minute) > 59:
        return False
    if second is not None and int(second) > 60:
        return False
    return offset is None or (int(offset[1:3]) <= 14 and int(offset[3:5]) < 60)


def time_bounds(value: str) -> tuple[str, str]:
    """The first and last instants a TM value denotes, as ``HHMMSS.FFFFFF`` strings.

    A TM value names a time at its precision (PS3.5 §6.2): ``"10"`` is 10:00:00.000000 to
    10:59:59.999999, ``"1015"`` 10:15:00 to 10:15:59.999999. Range bounds use the first instant
    of a lower bound and the last instant of an upper bound, so that ``-1015`` includes
    10:15:30 (PS3.4 C.2.2.2.5: ranges are inclusive).

    Args:
        value: A valid TM value (see :func:`parse_matcher`).

    Returns:
        ``(first, last)`` in the normalised form compared by the index.
    """
    m = _TM_RE.fullmatch(value)
    if m is None:
        raise InvalidInput("malformed TM value (PS3.5 §6.2)")
    hh, mm, ss, frac = m.groups()
    first = hh + (mm or "00") + (ss or "00") + "." + (frac or "").ljust(6, "0")
    last = hh + (mm or "59") + (ss or "59") + "." + (frac or "").ljust(6, "9")
    return first, last
