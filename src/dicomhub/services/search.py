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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from dicomhub.dicom.json_model import render_bulk_markers
from dicomhub.dicom.modules import PATIENT_TAGS, SERIES_TAGS, STUDY_TAGS
from dicomhub.domain.attributes import BY_TAG, CONDITIONAL, REQUIRED, Attribute, resolve
from dicomhub.domain.query import INTEGER_VRS, Level, Query
from dicomhub.services.archive import Archive
from dicomhub.storage.index import queries
from dicomhub.storage.index import store as index

__all__ = ["TRUNCATED_WARNING", "SearchResult", "search", "unsupported_warning"]

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
    """Run ``query`` for ``tenant_id`` and build the DICOM JSON results.

    Args:
        archive: The archive.
        tenant_id: The caller's tenant; nothing of another tenant is ever visible.
        query: The query.
        base_url: Absolute DICOMweb root URL, for Retrieve URL and Bulk Data URIs.

    Returns:
        The results, whether they were truncated by ``limit``, and warnings.
    """
    plan = _Plan(query)
    with archive.db.read() as conn:
        rows, truncated = queries.search_rows(conn, query, tenant_id, plan.json_levels)
        metadata: dict[int, str] = {}
        if plan.needs_metadata and rows:
            metadata = index.metadata_json(conn, [int(r["pk"]) for r in rows])
    base = base_url.rstrip("/")
    items = [plan.build(row, base, metadata.get(int(row["pk"]))) for row in rows]
    warnings: list[str] = []
    if query.unsupported:
        warnings.append(unsupported_warning(query.unsupported))
    if truncated:
        warnings.append(TRUNCATED_WARNING)
    return SearchResult(items=items, truncated=truncated, warnings=warnings)


class _Plan:
    """What to select and how to build each result for one query."""

    def __init__(self, query: Query) -> None:
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
        self.tags = required
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

    def build(self, row: Mapping[Any, Any], base: str, metadata_text: str | None) -> dict[str, Any]:
        level = self.query.level
        url = _retrieve_url(level, row, base)
        level_json: dict[Level, dict[str, Any]] = {}
        for json_level in self.json_levels:
            text = row.get(queries.JSON_LABELS[json_level])
            level_json[json_level] = _load_level_json(text)
        instance_json: dict[str, Any] = {}
        if metadata_text is not None:
            instance_json = json.loads(render_bulk_markers(metadata_text, url))

        out: dict[str, Any] = {}
        if self.query.include_all:
            if instance_json:
                out.update(instance_json)
            for lv in self.levels:
                out.update(level_json.get(lv, {}))
        for tag, empty_if_absent in self.tags.items():
            value = self._value(tag, row, level_json, instance_json, url)
            if value is not None:
                out[tag] = value
            elif empty_if_absent and tag not in out:
                out[tag] = {"vr": _vr(tag)}
        return dict(sorted(out.items()))

    def _value(
        self,
        tag: str,
        row: Mapping[Any, Any],
        level_json: dict[Level, dict[str, Any]],
        instance_json: dict[str, Any],
        url: str,
    ) -> dict[str, Any] | None:
        computed = _computed(tag, self.query.level, row, url)
        if computed is not None:
            return computed
        stored = level_json.get(tag_level(tag), {}).get(tag)
        if isinstance(stored, dict):
            return stored
        attr = BY_TAG.get(tag)
        if attr is not None and attr.column is not None:
            column_value = _column_value(attr, row)
            if column_value is not None:
                return column_value
        stored = instance_json.get(tag)
        return stored if isinstance(stored, dict) else None


def _from_columns(tag: str) -> bool:
    attr = BY_TAG.get(tag)
    return attr is not None and (attr.column is not None or attr.computed)


def _vr(tag: str) -> str:
    attr = BY_TAG.get(tag) or resolve(tag)
    return attr.vr if attr is not None else "UN"


def _load_level_json(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text:
        return {}
    data = json.loads(text)
    if not isinstance(data, dict):
        return {}
    if _MARKER_JSON in text:
        # A level JSON is shared by all instances of its entity: a bulk reference into one
        # instance's file has no URL of its own here, so such values are left out.
        data = {k: v for k, v in data.items() if _MARKER_JSON not in json.dumps(v)}
    return data


def _retrieve_url(level: Level, row: Mapping[Any, Any], base: str) -> str:
    if level is Level.PATIENT:
        return ""  # DICOMweb has no patient resource
    url = f"{base}/studies/{row['study_uid']}"
    if level.rank >= Level.SERIES.rank:
        url += f"/series/{row['series_uid']}"
    if level is Level.INSTANCE:
        url += f"/instances/{row['sop_uid']}"
    return url


def _computed(tag: str, level: Level, row: Mapping[Any, Any], url: str) -> dict[str, Any] | None:
    if tag == "00081190":  # Retrieve URL (PS3.18 §10.6.3.3)
        return {"vr": "UR", "Value": [url]} if url else None
    if tag == "00080056":  # Instance Availability: everything stored is on line
        return {"vr": "CS", "Value": [_ONLINE]}
    if tag == "00080061":  # Modalities in Study: sorted distinct modalities of its series
        text = row.get(queries.column_label(BY_TAG[tag]))
        values = [m for m in str(text or "").split("\\") if m]
        return {"vr": "CS", "Value": values} if values else {"vr": "CS"}
    return None


def _column_value(attr: Attribute, row: Mapping[Any, Any]) -> dict[str, Any] | None:
    label = queries.column_label(attr)
    if label not in row:
        return None
    value = row[label]
    if value is None or value == "":
        return None
    if attr.vr == "PN":
        return {"vr": "PN", "Value": [{"Alphabetic": str(value)}]}
    if attr.vr in INTEGER_VRS:
        return {"vr": attr.vr, "Value": [int(value)]}
    if "\\" in str(value):
        return {"vr": attr.vr, "Value": str(value).split("\\")}
    return {"vr": attr.vr, "Value": [str(value)]}
