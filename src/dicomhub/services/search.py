"""Search: answer a :class:`~dicomhub.domain.query.Query` with DICOM JSON results.

Shared by QIDO-RS (PS3.18 §10.6) and C-FIND (PS3.4 C.4.1, which adds the PATIENT level).
Each result carries (PS3.18 §10.6.3.3):

* the required attributes of its level (Tables 10.6.3-3/-4/-5) and, for ``/series`` and
  ``/instances`` without a study (or series) in the path, those of the levels above;
* every matching key of the request (universal ones included: they are return keys);
* the ``includefield`` attributes, or with ``includefield=all`` every stored attribute of the
  returned levels.

Values come from the level JSON stored at ingest (``patient.attrs``, ``study.attrs``,
``series.attrs``), from index columns, or are computed (counts, Modalities in Study, Instance
Availability, Retrieve URL). The full instance metadata is read only when ``includefield``
asks for an instance attribute no column holds; its bulk-data markers become URIs below the
instance (PS3.18 §F.2.7). A required attribute without value is returned empty (``{"vr": ..}``,
PS3.18 §F.2.5). No blob is opened.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any, Final

from dicomhub.dicom.json_model import render_bulk_markers
from dicomhub.dicom.modules import PATIENT_TAGS, SERIES_TAGS, STUDY_TAGS
from dicomhub.domain.attributes import (
    ATTRIBUTES,
    BY_TAG,
    CONDITIONAL,
    REQUIRED,
    Attribute,
    resolve,
)
from dicomhub.domain.query import INTEGER_VRS, Level, Query
from dicomhub.services.archive import Archive
from dicomhub.storage.index import level_json, queries
from dicomhub.storage.index import store as index

__all__ = [
    "TRUNCATED_WARNING",
    "JsonSearchResult",
    "SearchResult",
    "search",
    "search_json",
    "unsupported_warning",
]

#: PS3.18 §10.6.3: results were cut at ``limit``.
TRUNCATED_WARNING: Final = (
    "The number of results exceeded the maximum supported by the server. "
    "Additional results can be requested."
)
_ONLINE: Final = "ONLINE"  # Instance Availability (PS3.3 C.4.23.1.1)
_MARKER_JSON: Final = "\\u0000bulk/"  # how json.dumps writes json_model.MARKER


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The answer to a query.

    Attributes:
        items: One DICOM JSON data set (PS3.18 §F.2) per result, in result order.
        truncated: More results exist beyond ``offset + limit``.
        warnings: Human-readable warnings (no PHI) for the transport to report.
    """

    items: list[dict[str, Any]]
    truncated: bool
    warnings: list[str] = field(default_factory=list)


def unsupported_warning(keywords: Iterable[str]) -> str:
    """PS3.18 §10.6.3 warning text for keys ignored for matching."""
    return "The following attributes are not supported as matching keys: " + ", ".join(keywords)


def returned_levels(query: Query) -> tuple[Level, ...]:
    """Levels whose attributes each result carries (PS3.18 §10.6.3.3)."""
    if query.level is Level.PATIENT:  # C-FIND only (PS3.4 C.6.1.1.2)
        return (Level.PATIENT,)
    if query.level is Level.STUDY:
        return (Level.PATIENT, Level.STUDY)
    if query.level is Level.SERIES:
        return (Level.SERIES,) if query.study_uid else (Level.PATIENT, Level.STUDY, Level.SERIES)
    levels = [Level.INSTANCE]
    if query.series_uid is None:
        levels.insert(0, Level.SERIES)
        if query.study_uid is None:
            levels[:0] = [Level.PATIENT, Level.STUDY]
    return tuple(levels)


def tag_level(tag: str) -> Level:
    """The level whose stored JSON holds ``tag`` (instance when no module claims it)."""
    attr = BY_TAG.get(tag)
    if attr is not None and attr.level is not None:
        return attr.level
    if tag in PATIENT_TAGS:
        return Level.PATIENT
    if tag in STUDY_TAGS:
        return Level.STUDY
    if tag in SERIES_TAGS:
        return Level.SERIES
    return Level.INSTANCE


def search(archive: Archive, tenant_id: int, query: Query, base_url: str) -> SearchResult:
    """Run ``query`` for ``tenant_id`` and build the DICOM JSON results (parsed).

    The results are those of :func:`search_json`, parsed: C-FIND and callers that inspect
    values use this; QIDO-RS sends the text of :func:`search_json` as is.

    Args:
        archive: The archive.
        tenant_id: The caller's tenant; nothing of another tenant is ever visible.
        query: The query.
        base_url: Absolute DICOMweb root URL, for Retrieve URL and Bulk Data URIs.

    Returns:
        The results, whether they were truncated by ``limit``, and warnings.
    """
    found = search_json(archive, tenant_id, query, base_url)
    return SearchResult(
        items=[json.loads(text) for text in found.texts],
        truncated=found.truncated,
        warnings=found.warnings,
    )


@dataclass(frozen=True, slots=True)
class JsonSearchResult:
    """The answer to a query as DICOM JSON text.

    Attributes:
        texts: One DICOM JSON object text (PS3.18 §F.2) per result, in result order.
        truncated: More results exist beyond ``offset + limit``.
        warnings: Human-readable warnings (no PHI) for the transport to report.
    """

    texts: list[str]
    truncated: bool
    warnings: list[str] = field(default_factory=list)

    def body(self) -> bytes:
        """The results as one UTF-8 DICOM JSON array (PS3.18 §10.6.3.2)."""
        return ("[" + ",".join(self.texts) + "]").encode("utf-8")


def search_json(archive: Archive, tenant_id: int, query: Query, base_url: str) -> JsonSearchResult:
    """Run ``query`` for ``tenant_id`` and build each result's DICOM JSON text.

    Each result is spliced from stored member texts (:mod:`~dicomhub.storage.index.level_json`)
    and a few computed members; nothing is parsed or re-serialised per result unless the
    full instance metadata is needed (``includefield`` of instance attributes, or ``all``).

    Args:
        archive: The archive.
        tenant_id: The caller's tenant; nothing of another tenant is ever visible.
        query: The query.
        base_url: Absolute DICOMweb root URL, for Retrieve URL and Bulk Data URIs.

    Returns:
        The result texts, whether they were truncated by ``limit``, and warnings.
    """
    plan = _Plan(query, base_url)
    with archive.db.read() as conn:
        rows, truncated = queries.search_tuples(
            conn, query, tenant_id, plan.json_levels, plan.attributes
        )
        metadata: dict[int, str] = {}
        if plan.needs_metadata and rows:
            metadata = index.metadata_json(conn, [int(r[0]) for r in rows])
    build = plan.build
    texts = [build(row, metadata.get(int(row[0])) if metadata else None) for row in rows]
    warnings: list[str] = []
    if query.unsupported:
        warnings.append(unsupported_warning(query.unsupported))
    if truncated:
        warnings.append(TRUNCATED_WARNING)
    return JsonSearchResult(texts=texts, truncated=truncated, warnings=warnings)


# How each returned attribute of a plan gets its member text (see _Plan.build).
_URL, _AVAILABILITY, _MODALITIES, _STORED = range(4)


class _Plan:
    """What to select and how to build each result's text for one query.

    The attribute precedence is the same for every result: a computed value (Retrieve URL,
    Instance Availability, Modalities in Study), else the member stored in the level JSON of
    the attribute's level, else the index column, else the instance metadata; a required
    attribute without any value is returned empty (``{"vr": ..}``, PS3.18 §F.2.5).
    """

    def __init__(self, query: Query, base_url: str) -> None:
        self.query = query
        self.levels = returned_levels(query)
        joinable = {lv for lv in Level if lv.rank <= query.level.rank}
        required: dict[str, bool] = {}  # tag -> returned empty when no value
        for lv in self.levels:
            for tag in REQUIRED.get(lv, ()):
                required[tag] = tag not in CONDITIONAL
        for m in query.matches:
            required[m.tag] = True
        extra = [tag for tag in query.include if tag not in required]
        for tag in extra:
            # includefield: returned (empty if absent) when its level is in the result.
            required[tag] = tag_level(tag) in self.levels
        json_levels = {tag_level(tag) for tag in required} & joinable
        if query.include_all:
            json_levels |= set(self.levels)
        self.json_levels = tuple(
            lv for lv in (Level.PATIENT, Level.STUDY, Level.SERIES) if lv in json_levels
        )
        self.needs_metadata = query.level is Level.INSTANCE and (
            query.include_all
            or any(
                tag_level(tag) is Level.INSTANCE and not _from_columns(tag)
                for tag in (*extra, *(m.tag for m in query.matches))
            )
        )
        # Only the columns some returned attribute may fall back to are selected.
        self.attributes = tuple(
            attr
            for attr in ATTRIBUTES
            if attr.column is not None
            and attr.column.split(".")[0] in queries.joined_tables(query.level)
            and attr.tag in required
        )
        layout = queries.tuple_layout(query.level, self.json_levels, self.attributes)
        self._uid_idx = layout.uids
        self._json_idx = [(lv, layout.json[lv]) for lv in self.json_levels]
        self._level_of_json: dict[Level, int] = {lv: i for i, (lv, _) in enumerate(self._json_idx)}
        self._root = base_url.rstrip("/") + "/studies/"
        self._root_json = encode_basestring(self._root)[:-1]  # '"http://.../studies/'
        self._modalities: dict[Any, str] = {}
        # (tag, kind, json slot, column index and attribute, empty member or None)
        self._steps: list[tuple[str, int, int, int, Attribute | None, str | None]] = []
        for tag in sorted(required):
            empty = level_json.member(tag, {"vr": _vr(tag)}) if required[tag] else None
            attr = BY_TAG.get(tag)
            column = layout.columns.get(tag, -1)
            if tag == "00081190":
                kind = _URL
            elif tag == "00080056":
                kind = _AVAILABILITY
            elif tag == "00080061":
                kind = _MODALITIES
            else:
                kind = _STORED
            slot = self._level_of_json.get(tag_level(tag), -1)
            self._steps.append((tag, kind, slot, column, attr, empty))

    def _url(self, row: Sequence[Any]) -> str:
        level = self.query.level
        if level is Level.PATIENT:
            return ""  # DICOMweb has no patient resource
        study_i, series_i, sop_i = self._uid_idx
        url = f"{self._root}{row[study_i]}"
        if level.rank >= Level.SERIES.rank:
            url += f"/series/{row[series_i]}"
        if level is Level.INSTANCE:
            url += f"/instances/{row[sop_i]}"
        return url

    def _modalities_member(self, text: Any) -> str:
        member = self._modalities.get(text)
        if member is None:
            values = [m for m in str(text or "").split("\\") if m]
            value = {"vr": "CS", "Value": values} if values else {"vr": "CS"}
            member = self._modalities[text] = level_json.member("00080061", value)
        return member

    def build(self, row: Sequence[Any], metadata_text: str | None) -> str:
        """The DICOM JSON text of the result in ``row`` (members in tag order)."""
        url = ""
        stored: list[dict[str, str]] = []
        for _, idx in self._json_idx:
            text = row[idx]
            if text:
                parts = level_json.members(text)
                if _MARKER_JSON in text:
                    # A level JSON is shared by all instances of its entity: a bulk reference
                    # into one instance's file has no URL of its own here, so it is left out.
                    parts = [p for p in parts if _MARKER_JSON not in p]
                stored.append({p[1:9]: p for p in parts})
            else:
                stored.append({})
        instance: dict[str, str] = {}
        if metadata_text is not None:
            url = self._url(row)
            data = json.loads(render_bulk_markers(metadata_text, url))
            if isinstance(data, dict):
                instance = {
                    tag: level_json.member(tag, value)
                    for tag, value in data.items()
                    if isinstance(value, dict)
                }
        out: list[str] | dict[str, str]
        if self.query.include_all:
            merged: dict[str, str] = dict(instance)
            for lv in self.levels:
                slot = self._level_of_json.get(lv)
                if slot is not None:
                    merged.update(stored[slot])
            out = merged
        else:
            out = []
        for tag, kind, slot, column, attr, empty in self._steps:
            member: str | None = None
            if kind == _STORED:
                if slot >= 0:
                    member = stored[slot].get(tag)
                if member is None and column >= 0 and attr is not None:
                    member = _column_member(attr, row[column])
                if member is None:
                    member = instance.get(tag)
            elif kind == _URL:
                if self.query.level is not Level.PATIENT:
                    if not url:
                        url = self._url(row)
                    member = '"00081190":{"vr":"UR","Value":[' + encode_basestring(url) + "]}"
            elif kind == _AVAILABILITY:
                member = _AVAILABLE
            else:
                member = self._modalities_member(row[column] if column >= 0 else None)
            if isinstance(out, list):
                if member is not None:
                    out.append(member)
                elif empty is not None:
                    out.append(empty)
            elif member is not None:
                out[tag] = member
            elif empty is not None and tag not in out:
                out[tag] = empty
        if isinstance(out, dict):
            return "{" + ",".join(member for _, member in sorted(out.items())) + "}"
        return "{" + ",".join(out) + "}"


_AVAILABLE: Final = level_json.member("00080056", {"vr": "CS", "Value": [_ONLINE]})


def _from_columns(tag: str) -> bool:
    attr = BY_TAG.get(tag)
    return attr is not None and (attr.column is not None or attr.computed)


def _vr(tag: str) -> str:
    attr = BY_TAG.get(tag) or resolve(tag)
    return attr.vr if attr is not None else "UN"


def _column_member(attr: Attribute, value: Any) -> str | None:
    """The member text of a column value (a fallback: the level JSON usually has it)."""
    if value is None or value == "":
        return None
    head = f'"{attr.tag}":{{"vr":"{attr.vr}","Value":['
    if attr.vr in INTEGER_VRS:
        return f"{head}{int(value)}]}}"
    text = str(value)
    if attr.vr == "PN":
        return f'{head}{{"Alphabetic":{encode_basestring(text)}}}]}}'
    values = text.split("\\") if "\\" in text else [text]
    return head + ",".join(encode_basestring(v) for v in values) + "]}"
