r"""Search queries: :class:`~dicomhub.domain.query.Query` -> SQLAlchemy Core (PS3.4 C.2.2.2).

Every statement starts with the tenant condition and is answered from the index columns and
the level JSON texts; no blob is ever opened. Matching rules:

* single value: equality (integers as numbers; TM as the span of its precision);
* wildcard: ``LIKE`` with ``*`` -> ``%`` and ``?`` -> ``_``, the literal parts escaped with
  ``\`` (``ESCAPE '\'``). SQLite runs with ``PRAGMA case_sensitive_like=ON`` so matching is
  case-sensitive as PS3.4 C.2.2.2.4 requires;
* fuzzy PN (PS3.18 §8.3.4.1): ``LIKE '% ' || fold(value) || '%'`` on the ``*_fuzzy`` column
  (see :func:`~dicomhub.domain.person_name.fuzzy_key`): any name component, by prefix, case-
  and accent-insensitive;
* DA ranges: string comparison of ``YYYYMMDD``; TM ranges: comparison of the stored time
  normalised to ``HHMMSS.FFFFFF`` (``HH`` and ``HHMM`` precision handled);
* UID lists: ``IN``; Modalities in Study: ``EXISTS`` over the study's series.

An empty or NULL column never matches a non-universal key. Results are ordered
deterministically and ``limit + 1`` rows are fetched so the caller knows if more exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Integer,
    RowMapping,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.dialects import postgresql

from dicomhub.domain.attributes import ATTRIBUTES, BY_TAG, Attribute
from dicomhub.domain.person_name import fold
from dicomhub.domain.query import (
    INTEGER_VRS,
    AnyOf,
    Level,
    Match,
    Matcher,
    Query,
    Range,
    SingleValue,
    UidList,
    Universal,
    Wildcard,
    time_bounds,
)
from dicomhub.errors import InvalidInput
from dicomhub.storage.index import tables as t

__all__ = [
    "JSON_LABELS",
    "Layout",
    "joined_tables",
    "like_pattern",
    "search_rows",
    "search_statement",
    "search_tuples",
    "tuple_layout",
]

_TABLES: Final[dict[str, Table]] = {
    "patient": t.patient,
    "study": t.study,
    "series": t.series,
    "instance": t.instance,
}
#: Tables joined for a query at each level.
_JOINED: Final[dict[Level, tuple[str, ...]]] = {
    Level.PATIENT: ("patient",),
    Level.STUDY: ("patient", "study"),
    Level.SERIES: ("patient", "study", "series"),
    Level.INSTANCE: ("patient", "study", "series", "instance"),
}
#: Result label of each level's DICOM JSON text.
JSON_LABELS: Final[dict[Level, str]] = {
    Level.PATIENT: "patient_attrs",
    Level.STUDY: "study_attrs",
    Level.SERIES: "series_attrs",
}
_SEPARATORS: Final = re.compile(r"[\^=,\s]+")  # as in person_name.fuzzy_key


def _column(name: str) -> Any:
    table, column = name.split(".")
    return _TABLES[table].c[column]


def column_label(attr: Attribute) -> str:
    """Result label of the column backing ``attr``."""
    return f"c{attr.tag}"


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each value sits in a row of :func:`search_statement` (tuple indexes).

    Attributes:
        uids: Indexes of ``study_uid``, ``series_uid`` and ``sop_uid`` (-1 when not joined).
        columns: Index of each selected attribute's column, by tag.
        json: Index of each selected level JSON text, by level.
    """

    uids: tuple[int, int, int]
    columns: dict[str, int]
    json: dict[Level, int]


def joined_tables(level: Level) -> tuple[str, ...]:
    """Names of the tables a query at ``level`` joins (its own and the levels above)."""
    return _JOINED[level]


def _selected(
    level: Level, json_levels: Iterable[Level], attributes: Iterable[Attribute] | None
) -> tuple[list[tuple[str, Any]], Layout]:
    joined = _JOINED[level]
    columns: list[tuple[str, Any]] = [("pk", _TABLES[joined[-1]].c.pk)]
    uids = [-1, -1, -1]
    for i, (name, column) in enumerate(
        (("study", t.study.c.study_uid), ("series", t.series.c.series_uid)),
    ):
        if name in joined:
            uids[i] = len(columns)
            columns.append((f"{name}_uid", column))
    if "instance" in joined:
        uids[2] = len(columns)
        columns.append(("sop_uid", t.instance.c.sop_uid))
    by_tag: dict[str, int] = {}
    for attr in ATTRIBUTES if attributes is None else attributes:
        if attr.column is not None and attr.column.split(".")[0] in joined:
            by_tag[attr.tag] = len(columns)
            columns.append((column_label(attr), _column(attr.column)))
    by_level: dict[Level, int] = {}
    for json_level in dict.fromkeys(json_levels):
        label = JSON_LABELS.get(json_level)
        if label is not None and json_level.value.lower() in joined:
            by_level[json_level] = len(columns)
            columns.append((label, _TABLES[json_level.value.lower()].c.attrs))
    return columns, Layout((uids[0], uids[1], uids[2]), by_tag, by_level)


def tuple_layout(
    level: Level, json_levels: Iterable[Level], attributes: Iterable[Attribute] | None = None
) -> Layout:
    """The :class:`Layout` of :func:`search_statement` rows for the same arguments."""
    return _selected(level, json_levels, attributes)[1]


def search_statement(
    query: Query,
    tenant_id: int,
    json_levels: Iterable[Level] = (),
    attributes: Iterable[Attribute] | None = None,
    dialect: str | None = None,
) -> Select[Any]:
    """The SELECT answering ``query`` for ``tenant_id``.

    Args:
        query: The query.
        tenant_id: The caller's tenant; always the first condition.
        json_levels: Levels whose stored DICOM JSON text is selected (labels in
            :data:`JSON_LABELS`); only PATIENT, STUDY and SERIES have one.
        attributes: Attributes whose columns are selected (of the joined tables); ``None``
            selects every column-backed attribute.
        dialect: The database it runs on (``"postgresql"`` adds the word-prefix lookup of
            fuzzy person-name matching, see :func:`_fuzzy`); ``None`` is portable SQL.

    Returns:
        A statement selecting the pk of the result level (``pk``), the UIDs (``study_uid``,
        ``series_uid``, ``sop_uid``) of the joined levels, the attributes' columns (labels from
        :func:`column_label`) and the requested JSON texts, in that order (see
        :func:`tuple_layout`); ordered, with ``LIMIT limit + 1 OFFSET offset``.
    """
    level = query.level
    joined = _JOINED[level]
    base = _TABLES[joined[-1]]
    conditions: list[ColumnElement[bool]] = [base.c.tenant_id == tenant_id]
    constrained: set[str] = set()  # upper-level tables with a condition of their own
    if query.study_uid is not None:
        conditions.append(t.study.c.study_uid == query.study_uid)
        constrained.add("study")
    if query.series_uid is not None and level.rank >= Level.SERIES.rank:
        conditions.append(t.series.c.series_uid == query.series_uid)
        constrained.add("series")
    for match in query.filters():
        conditions.append(_condition(match, query.fuzzy, joined, dialect))
        attr = BY_TAG.get(match.tag)
        if attr is not None and attr.column is not None and attr.exists_column is None:
            constrained.add(attr.column.split(".")[0])
    # The pk joins already stay within the tenant. Repeating the tenant condition on an upper
    # table that has a condition lets the planner start from that table's (tenant_id, ...)
    # index; on the others it would only turn the LEFT joins into inner ones and invite a
    # worse join order.
    conditions += [
        _TABLES[name].c.tenant_id == tenant_id for name in joined[:-1] if name in constrained
    ]
    columns, _ = _selected(level, json_levels, attributes)
    stmt = (
        select(*(column.label(label) for label, column in columns))
        .select_from(_from(level))
        .where(and_(*conditions))
        .order_by(*_order(level))
        # Rendered into the SQL text: a prepared statement's generic plan, blind to a small
        # LIMIT, picks parallel plans for a few dozen rows on PostgreSQL (20 ms at 1M rows
        # for ModalitiesInStudy, against 4 ms planned with the value).
        .limit(literal(query.limit + 1, Integer(), literal_execute=True))
        .offset(literal(query.offset, Integer(), literal_execute=True))
    )
    return stmt


def search_rows(
    conn: Connection, query: Query, tenant_id: int, json_levels: Iterable[Level] = ()
) -> tuple[list[RowMapping], bool]:
    """Run :func:`search_statement`; return at most ``query.limit`` rows and whether more exist."""
    stmt = search_statement(query, tenant_id, json_levels, dialect=conn.dialect.name)
    rows = list(conn.execute(stmt).mappings())
    truncated = len(rows) > query.limit
    return rows[: query.limit], truncated


def search_tuples(
    conn: Connection,
    query: Query,
    tenant_id: int,
    json_levels: Iterable[Level] = (),
    attributes: Iterable[Attribute] | None = None,
) -> tuple[list[Sequence[Any]], bool]:
    """Like :func:`search_rows`, as plain tuples laid out as :func:`tuple_layout` says."""
    stmt = search_statement(query, tenant_id, json_levels, attributes, conn.dialect.name)
    result = conn.execute(stmt)
    rows: list[Sequence[Any]] = [tuple(row) for row in result]
    truncated = len(rows) > query.limit
    return rows[: query.limit], truncated


def _from(level: Level) -> FromClause:
    """The level's table joined to the levels above it.

    The upper levels are LEFT joins (every row has its parent, so the result is the same): the
    planner then starts from the queried level and walks its ordering index, stopping at the
    limit, unless a condition on an upper level makes it an inner join that it may reorder
    (e.g. PatientID: start from the patient index).
    """
    if level is Level.PATIENT:
        return t.patient
    study = t.study.outerjoin(t.patient, t.patient.c.pk == t.study.c.patient_pk)
    if level is Level.STUDY:
        return study
    if level is Level.SERIES:
        return t.series.outerjoin(t.study, t.study.c.pk == t.series.c.study_pk).outerjoin(
            t.patient, t.patient.c.pk == t.study.c.patient_pk
        )
    return (
        t.instance.outerjoin(t.series, t.series.c.pk == t.instance.c.series_pk)
        .outerjoin(t.study, t.study.c.pk == t.instance.c.study_pk)
        .outerjoin(t.patient, t.patient.c.pk == t.study.c.patient_pk)
    )


def _order(level: Level) -> list[Any]:
    if level is Level.PATIENT:
        return [t.patient.c.patient_id, t.patient.c.pk]
    if level is Level.STUDY:
        return [
            t.study.c.study_date.desc().nulls_last(),
            t.study.c.study_time.desc().nulls_last(),
            t.study.c.pk,
        ]
    if level is Level.SERIES:
        return [t.series.c.series_number.asc().nulls_last(), t.series.c.pk]
    return [
        t.series.c.series_number.asc().nulls_last(),
        t.series.c.pk,
        t.instance.c.instance_number.asc().nulls_last(),
        t.instance.c.pk,
    ]


# ---------------------------------------------------------------------------------------------
# matching


def _texts(matcher: Matcher) -> list[str]:
    if isinstance(matcher, SingleValue):
        return [matcher.value]
    if isinstance(matcher, Wildcard):
        return [matcher.pattern]
    if isinstance(matcher, UidList):
        return list(matcher.uids)
    if isinstance(matcher, Range):
        return [v for v in (matcher.lower, matcher.upper) if v is not None]
    if isinstance(matcher, AnyOf):
        return [text for option in matcher.options for text in _texts(option)]
    return []


def _condition(
    match: Match, fuzzy: bool, joined: tuple[str, ...], dialect: str | None = None
) -> ColumnElement[bool]:
    if any("\x00" in text for text in _texts(match.matcher)):
        # No stored value contains NUL (PS3.5 §6.1.2: not part of any text repertoire), and
        # PostgreSQL refuses it in text parameters.
        raise InvalidInput(f"{match.keyword}: NUL is not allowed in a matching value")
    attr = BY_TAG.get(match.tag)
    if attr is None or attr.column is None or attr.column.split(".")[0] not in joined:
        raise InvalidInput(f"{match.keyword} is not supported as a matching key at this level")
    if attr.exists_column is not None:
        return _exists(attr.exists_column, match.matcher)
    if fuzzy and attr.fuzzy_column is not None:
        return _fuzzy(attr.fuzzy_column, match.matcher, dialect)
    return _value(_column(attr.column), attr.vr, match.matcher)


def _exists(column_name: str, matcher: Matcher) -> ColumnElement[bool]:
    """Some series of the study has a matching value (Modalities in Study)."""
    table, column = column_name.split(".")
    if table != "series":
        raise InvalidInput(f"unsupported EXISTS column {column_name}")
    inner = t.series.alias("mis")
    cond = _value(inner.c[column], "CS", matcher)
    return exists(select(literal(1)).where(inner.c.study_pk == t.study.c.pk, cond))


def _value(col: Any, vr: str, matcher: Matcher) -> ColumnElement[bool]:
    if isinstance(matcher, SingleValue):
        if vr in INTEGER_VRS:
            return col == int(matcher.value)  # type: ignore[no-any-return]
        if vr == "TM":
            first, last = time_bounds(matcher.value)
            return _time_between(col, first, last)
        return col == matcher.value  # type: ignore[no-any-return]
    if isinstance(matcher, Wildcard):
        like = col.like(like_pattern(matcher), escape="\\")
        prefix = literal_prefix(matcher)
        if not prefix or ord(prefix[-1]) >= 0x10FFFF:
            return like  # type: ignore[no-any-return]
        # An explicit range on the literal prefix lets any database use the column's index.
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        return and_(col >= prefix, col < upper, like)
    if isinstance(matcher, UidList):
        return col.in_(matcher.uids)  # type: ignore[no-any-return]
    if isinstance(matcher, AnyOf):
        return or_(*(_value(col, vr, option) for option in matcher.options))
    if isinstance(matcher, Range):
        return _range(col, vr, matcher)
    if isinstance(matcher, Universal):
        return true()
    raise InvalidInput(f"unsupported matcher {type(matcher).__name__}")


def _range(col: Any, vr: str, matcher: Range) -> ColumnElement[bool]:
    if vr == "DA":
        conds = [col.isnot(None), col != ""]
        if matcher.lower is not None:
            conds.append(col >= matcher.lower)
        if matcher.upper is not None:
            conds.append(col <= matcher.upper)
        return and_(*conds)
    if vr == "TM":
        first = time_bounds(matcher.lower)[0] if matcher.lower is not None else None
        last = time_bounds(matcher.upper)[1] if matcher.upper is not None else None
        return _time_between(col, first, last)
    if vr == "DT":
        # No DT column is indexed; a DT range can never reach here from the attribute table.
        return false()
    raise InvalidInput(f"range matching is not defined for VR {vr} (PS3.4 C.2.2.2.5)")


def _normalised_time(col: Any) -> Any:
    """SQL for a stored TM as ``HHMMSS.FFFFFF`` (``HH`` -> ``HH0000``, fraction padded)."""
    hms = func.substr(col + literal("0000"), 1, 6)
    frac = case(
        (col.like("%.%"), func.substr(col + literal("000000"), 8, 6)),
        else_=literal("000000"),
    )
    return hms + literal(".") + frac


def _time_between(col: Any, first: str | None, last: str | None) -> ColumnElement[bool]:
    norm = _normalised_time(col)
    conds = [col.isnot(None), col != ""]
    if first is not None:
        conds.append(norm >= first)
    if last is not None:
        conds.append(norm <= last)
    return and_(*conds)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def literal_prefix(wildcard: Wildcard) -> str:
    """The literal text before the first wildcard character."""
    prefix = ""
    for kind, text in wildcard.parts():
        if kind != "lit":
            break
        prefix += text
    return prefix


def like_pattern(wildcard: Wildcard) -> str:
    r"""The LIKE pattern (``ESCAPE '\'``) of a DICOM wildcard value (PS3.4 C.2.2.2.4)."""
    out: list[str] = []
    for kind, text in wildcard.parts():
        if kind == "lit":
            out.append(_escape(text))
        else:
            out.append("%" if kind == "any" else "_")
    return "".join(out)


def _fuzzy_words(value: str) -> list[str]:
    """The LIKE fragments of each folded component of a PN query value (wildcards kept)."""
    words = [w for w in _SEPARATORS.split(fold(value)) if w]
    return [like_pattern(Wildcard(w)) for w in words]


def _fuzzy(column_name: str, matcher: Matcher, dialect: str | None = None) -> ColumnElement[bool]:
    """PN fuzzy matching on the ``fuzzy_key`` column (PS3.18 §8.3.4.1).

    The condition is ``LIKE '% ' || words || '%'``: a name component starts with the first
    word, the next components with the next words. On PostgreSQL, when the words have no
    wildcard, the rows are also restricted to those whose word prefixes contain every word
    (cut to ``tables.NAME_PREFIX_CHARS``), a semi-join on the primary key answered by the GIN
    index of ``dicomhub_name_prefixes(key)`` (see ``tables.py``). That adds no row the ``LIKE``
    rejects and drops none it keeps (a component starting with a word has it as a prefix), so
    the semantics are the ``LIKE``'s; what it changes is the plan: a rare word is one short
    posting list, where the trigram index intersects the long lists of trigrams every name
    shares ("FAM" of FAM421), and the prefix statistics tell the planner how selective the
    word is. As a semi-join, the (costly) prefix function is never evaluated per row of a
    walk along the study order; the cheap ``LIKE`` filters that walk. The words are rendered
    into the SQL text (``literal_execute``): a generic plan of a prepared statement, blind to
    the word, would walk the study order for a rare word too (216 ms at 1M instances).
    """
    col = _column(column_name)
    if isinstance(matcher, AnyOf):
        return or_(*(_fuzzy(column_name, option, dialect) for option in matcher.options))
    if isinstance(matcher, SingleValue):
        value = matcher.value
    elif isinstance(matcher, Wildcard):
        value = matcher.pattern
    else:
        raise InvalidInput("fuzzy matching applies to single values and wildcards only")
    words = _fuzzy_words(value)
    if not words:
        return col.isnot(None)  # type: ignore[no-any-return]
    pattern = "% " + " ".join(words) + "%"
    like: ColumnElement[bool] = col.like(pattern, escape="\\")
    table_name, column = column_name.split(".")
    table = _TABLES[table_name]
    inner = table.alias(f"{table_name}_fz")
    if dialect == "postgresql" and not all(_PREFIX_WORD.fullmatch(w) for w in words):
        return like  # the trigram index serves a LIKE with wildcards
    if dialect != "postgresql":
        # SQLite has no index for a LIKE with a leading '%'. As a semi-join, the LIKE runs
        # once per row of the (small) level table and the matches drive the query; as a
        # filter, a walk along the study order would test it per study and patient lookup
        # (150-350 ms at a million instances, against ~10 ms this way).
        return table.c.pk.in_(select(inner.c.pk).where(inner.c[column].like(pattern, escape="\\")))
    prefixes = func.dicomhub_name_prefixes(inner.c[column], type_=postgresql.ARRAY(Text()))
    wanted = postgresql.array(
        [
            bindparam(None, w, type_=Text(), literal_execute=True)
            for w in dict.fromkeys(w[: t.NAME_PREFIX_CHARS] for w in words)
        ]
    )
    return and_(like, table.c.pk.in_(select(inner.c.pk).where(prefixes.contains(wanted))))


#: A word that can be looked up in the prefix index as is: no LIKE wildcard or escape (those
#: are the LIKE fragments of ``*``, ``?`` and literal ``%``/``_``), no quote.
_PREFIX_WORD: Final = re.compile(r"[^%_\\'\s]+")
