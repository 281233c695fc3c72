"""QIDO-RS query parameters -> :class:`~dicomhub.domain.query.Query` (PS3.18 §8.3.4, §10.6.1).

The query string carries (PS3.18 §8.3.4):

* ``{attributeID}={value}`` — a matching key, by keyword (``PatientID``) or tag (``00100020``);
  ``a.b`` paths are sequence matching (optional, PS3.4 C.2.2.2.6: ignored with a warning);
* ``includefield={attributeID}[,...]`` or ``includefield=all`` (§8.3.4.3), repeatable;
* ``fuzzymatching=true|false`` (§8.3.4.1);
* ``limit={n}``, ``offset={n}`` (§8.3.4.4).

Anything else is a 400. Valid attributes that are not supported matching keys at the level are
not used for matching; they are reported in :attr:`Query.unsupported` so the response carries
the Warning of PS3.18 §10.6.3, and returned like ``includefield`` ones. Every count and size is
bounded: 100 parameters, values of 1024 characters, except UID lists (1000 UIDs, which need
more). Reasons never quote values (they may be PHI); UIDs and keywords are fine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from dicomhub.domain.attributes import Attribute, matchable_at, resolve
from dicomhub.domain.query import MAX_UIDS, Level, Match, Query, parse_matcher
from dicomhub.domain.uids import validate_uid
from dicomhub.errors import InvalidInput

__all__ = ["MAX_OFFSET", "MAX_PARAMETERS", "MAX_UID_LIST_CHARS", "MAX_VALUE_CHARS", "parse_query"]

#: Most query parameters accepted in one request.
MAX_PARAMETERS: Final = 100
#: Longest parameter value accepted (characters).
MAX_VALUE_CHARS: Final = 1024
#: Longest UID list value accepted: :data:`MAX_UIDS` UIDs of 64 characters and separators.
MAX_UID_LIST_CHARS: Final = MAX_UIDS * 65
#: Largest ``offset`` accepted.
MAX_OFFSET: Final = 2**31 - 1
#: Deepest sequence path accepted in a key (``a.b.c``...).
_MAX_PATH: Final = 8


def parse_query(
    params: Sequence[tuple[str, str]],
    *,
    level: Level,
    study_uid: str | None = None,
    series_uid: str | None = None,
    default_limit: int = 100,
    max_limit: int = 1000,
) -> Query:
    """Parse QIDO-RS query parameters (``request.query_params.multi_items()``).

    Args:
        params: The ``(name, value)`` pairs in request order.
        level: Level of the target resource (``/studies`` -> STUDY, ...).
        study_uid: Study Instance UID of the request path, if any (validated here).
        series_uid: Series Instance UID of the request path, if any (validated here).
        default_limit: ``limit`` when the request gives none.
        max_limit: Largest ``limit`` honoured; larger requests are capped (PS3.18 §8.3.4.4:
            the response then warns that results are truncated).

    Returns:
        The query.

    Raises:
        InvalidInput: Unknown parameter or attribute, repeated key, malformed value, or a
            bound exceeded.
    """
    if study_uid is not None:
        validate_uid(study_uid, "StudyInstanceUID")
    if series_uid is not None:
        validate_uid(series_uid, "SeriesInstanceUID")
    if len(params) > MAX_PARAMETERS:
        raise InvalidInput(f"more than {MAX_PARAMETERS} query parameters")
    builder = _Builder(level)
    for name, value in params:
        builder.add(name, value)
    limit = default_limit if builder.limit is None else min(builder.limit, max_limit)
    return Query(
        level=level,
        study_uid=study_uid,
        series_uid=series_uid,
        matches=tuple(builder.matches.values()),
        fuzzy=builder.fuzzy,
        include=tuple(dict.fromkeys(builder.include)),
        include_all=builder.include_all,
        limit=limit,
        offset=builder.offset or 0,
        unsupported=tuple(dict.fromkeys(builder.unsupported)),
    )


def _too_long(name: str, limit: int) -> None:
    raise InvalidInput(f"value of query parameter {_shown(name)} longer than {limit} characters")


def _shown(name: str) -> str:
    """A parameter name safe to echo in a reason (bounded, printable)."""
    text = name[:64] + ("..." if len(name) > 64 else "")
    return repr("".join(c if c.isprintable() else "?" for c in text))


class _Builder:
    """Accumulates the parameters of one request."""

    def __init__(self, level: Level) -> None:
        self.level = level
        self.matches: dict[str, Match] = {}
        self.include: list[str] = []
        self.include_all = False
        self.unsupported: list[str] = []
        self.fuzzy = False
        self.limit: int | None = None
        self.offset: int | None = None
        self._seen_control: set[str] = set()
        self._seen_keys: set[str] = set()

    def add(self, name: str, value: str) -> None:
        if len(value) > MAX_UID_LIST_CHARS:
            _too_long(name, MAX_UID_LIST_CHARS)
        control = name.lower()
        if control == "includefield":
            self._include(value)
        elif control in ("fuzzymatching", "limit", "offset"):
            if control in self._seen_control:
                raise InvalidInput(f"query parameter {control!r} given more than once")
            self._seen_control.add(control)
            if len(value) > MAX_VALUE_CHARS:
                _too_long(control, MAX_VALUE_CHARS)
            if control == "fuzzymatching":
                self.fuzzy = _boolean(control, value)
            elif control == "limit":
                self.limit = _count(control, value, MAX_OFFSET)
            else:
                self.offset = _count(control, value, MAX_OFFSET)
        else:
            self._key(name, value)

    def _include(self, value: str) -> None:
        if len(value) > MAX_VALUE_CHARS:
            _too_long("includefield", MAX_VALUE_CHARS)
        for item in value.split(","):
            field = item.strip()
            if not field:
                continue
            if field.lower() == "all":
                self.include_all = True
                continue
            # A sequence path names an attribute inside items: return the whole sequence.
            attr = _path(field)[0]
            self.include.append(attr.tag)

    def _key(self, name: str, value: str) -> None:
        path = _path(name)
        attr = path[0]
        dedup = ".".join(a.tag for a in path)
        if dedup in self._seen_keys:
            raise InvalidInput(
                f"attribute {'.'.join(a.keyword for a in path)} given more than once"
            )
        self._seen_keys.add(dedup)
        uid_list = len(path) == 1 and attr.vr == "UI"
        if not uid_list and len(value) > MAX_VALUE_CHARS:
            _too_long(name, MAX_VALUE_CHARS)
        if len(path) > 1:
            # Sequence matching (PS3.4 C.2.2.2.6) is optional: ignore the key, warn, and
            # return the sequence.
            self.unsupported.append(".".join(a.keyword for a in path))
            self.include.append(attr.tag)
            return
        if not matchable_at(attr, self.level):
            if value.strip("*") != "":
                self.unsupported.append(attr.keyword)
            self.include.append(attr.tag)
            return
        if uid_list:
            # PS3.18 §8.3.4.1: a UID list may be separated by commas or (escaped) backslashes.
            value = value.replace(",", "\\")
        matcher = parse_matcher(attr.vr, value, attr.keyword, max_uids=MAX_UIDS)
        self.matches[attr.tag] = Match(attr.tag, attr.keyword, attr.vr, matcher)


def _path(name: str) -> list[Attribute]:
    """Resolve ``keyword``, ``tag`` or a dotted sequence path of them."""
    parts = name.split(".")
    if len(parts) > _MAX_PATH:
        raise InvalidInput(f"attribute path {_shown(name)} nested more than {_MAX_PATH} deep")
    out: list[Attribute] = []
    for i, part in enumerate(parts):
        attr = resolve(part)
        if attr is None:
            raise InvalidInput(
                f"unknown query parameter or attribute {_shown(name)} (PS3.18 §8.3.4)"
            )
        if i < len(parts) - 1 and attr.vr != "SQ":
            raise InvalidInput(f"attribute path {_shown(name)}: {attr.keyword} is not a sequence")
        out.append(attr)
    return out


def _boolean(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text == "true":
        return True
    if text == "false":
        return False
    raise InvalidInput(f"query parameter {name!r} must be 'true' or 'false'")


def _count(name: str, value: str, maximum: int) -> int:
    text = value.strip()
    if not text.isdigit() or not text.isascii() or len(text) > 12:
        raise InvalidInput(f"query parameter {name!r} must be a non-negative integer")
    number = int(text)
    if number > maximum:
        raise InvalidInput(f"query parameter {name!r} larger than {maximum}")
    return number
