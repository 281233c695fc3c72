"""QIDO-RS: the Search transaction (PS3.18 §10.6).

Resources (PS3.18 Table 10.6.1-1; paths relative to the DICOMweb root)::

    GET /studies                                  all studies
    GET /series                                   all series (relational)
    GET /instances                                all instances (relational)
    GET /studies/{study}/series                   series of a study
    GET /studies/{study}/instances                instances of a study
    GET /studies/{study}/series/{series}/instances  instances of a series

Responses are ``application/dicom+json`` arrays (PS3.18 §10.6.3.2, §F.2); ``application/json``
is served when only that is acceptable, and the XML representation is not offered (406).

Empty results follow PS3.18 §8.3.4.4.1 as published: ``204 No Content`` without a body.
CP-2473 (WG-27, in progress) proposes ``200 OK`` instead; :data:`EMPTY_RESULT_STATUS` is the
single switch if it is adopted.

Warnings use the ``Warning`` header (``299 <host>: "<text>"``, PS3.18 §10.6.3 and RFC 7234
§5.5): results cut at ``limit``, and attributes ignored as matching keys. Query strings are
never logged (they carry PHI).
"""

from __future__ import annotations

import re
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomhub.domain.query import Level
from dicomhub.errors import NotAcceptable
from dicomhub.services.search import search_json
from dicomhub.web.context import archive_of, base_url, tenant_of
from dicomhub.web.dicomweb.qido_params import parse_query
from dicomhub.web.media import parse_accept

__all__ = ["DICOM_JSON", "EMPTY_RESULT_STATUS", "routes"]

DICOM_JSON: Final = "application/dicom+json"
PLAIN_JSON: Final = "application/json"
#: Status of a search without results (PS3.18 §8.3.4.4.1; see the module docstring).
EMPTY_RESULT_STATUS: Final = 204

_AGENT_UNSAFE: Final = re.compile(r"[^A-Za-z0-9.:\-\[\]]")


def _media_type(request: Request) -> str:
    """The JSON media type to answer with (PS3.18 §8.7.3; QIDO-RS offers JSON or XML)."""
    for media_range in parse_accept(request.headers.get("accept")):
        if media_range.matches(DICOM_JSON):
            return DICOM_JSON
        if media_range.matches(PLAIN_JSON):
            return PLAIN_JSON
    raise NotAcceptable(
        f"search results are available as {DICOM_JSON} (or {PLAIN_JSON}) only; "
        "the XML representation is not supported"
    )


def _warn_agent(request: Request) -> str:
    """``warn-agent`` of a Warning header: the host (and port) the client addressed."""
    agent = _AGENT_UNSAFE.sub("", request.url.netloc.rpartition("@")[2])[:255]
    return agent or "dicomhub"


async def _search(
    request: Request, level: Level, study: str | None = None, series: str | None = None
) -> Response:
    media_type = _media_type(request)
    archive = archive_of(request)
    settings = archive.settings
    query = parse_query(
        request.query_params.multi_items(),
        level=level,
        study_uid=study,
        series_uid=series,
        default_limit=min(settings.qido_default_limit, settings.qido_max_limit),
        max_limit=settings.qido_max_limit,
    )
    result = await run_in_threadpool(
        search_json, archive, tenant_of(request), query, base_url(request)
    )
    if result.texts:
        # The results are spliced from stored DICOM JSON text (services.search): no per-result
        # dict is built or serialised here.
        response = Response(result.body(), status_code=200, media_type=media_type)
    elif EMPTY_RESULT_STATUS == 204:
        response = Response(status_code=204)
    else:
        response = Response(b"[]", status_code=EMPTY_RESULT_STATUS, media_type=media_type)
    agent = _warn_agent(request)
    for text in result.warnings:
        response.headers.append("Warning", f'299 {agent}: "{_quoted(text)}"')
    return response


def _quoted(text: str) -> str:
    """Text as the content of an HTTP quoted-string (RFC 9110 §5.6.4), ASCII only."""
    safe = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in text)
    return safe.replace("\\", "\\\\").replace('"', '\\"')


async def all_studies(request: Request) -> Response:
    """``GET /studies`` (PS3.18 §10.6.1)."""
    return await _search(request, Level.STUDY)


async def all_series(request: Request) -> Response:
    """``GET /series`` (PS3.18 §10.6.1)."""
    return await _search(request, Level.SERIES)


async def all_instances(request: Request) -> Response:
    """``GET /instances`` (PS3.18 §10.6.1)."""
    return await _search(request, Level.INSTANCE)


async def study_series(request: Request) -> Response:
    """``GET /studies/{study}/series`` (PS3.18 §10.6.1)."""
    return await _search(request, Level.SERIES, request.path_params["study"])


async def study_instances(request: Request) -> Response:
    """``GET /studies/{study}/instances`` (PS3.18 §10.6.1)."""
    return await _search(request, Level.INSTANCE, request.path_params["study"])


async def series_instances(request: Request) -> Response:
    """``GET /studies/{study}/series/{series}/instances`` (PS3.18 §10.6.1)."""
    return await _search(
        request, Level.INSTANCE, request.path_params["study"], request.path_params["series"]
    )


def routes() -> list[BaseRoute]:
    """The QIDO-RS routes, relative to the DICOMweb root."""
    return [
        Route("/studies", all_studies, methods=["GET"]),
        Route("/series", all_series, methods=["GET"]),
        Route("/instances", all_instances, methods=["GET"]),
        Route("/studies/{study}/series", study_series, methods=["GET"]),
        Route("/studies/{study}/instances", study_instances, methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances", series_instances, methods=["GET"]),
    ]
