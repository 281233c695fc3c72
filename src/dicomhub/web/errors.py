"""THE error -> HTTP table of the web edge.

Only our own errors map to 4xx/503; anything else is a bug, logged with its traceback and
answered 500 without details.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dicomhub import errors
from dicomhub.domain.uids import is_valid_uid

log = logging.getLogger(__name__)

STATUS: dict[type[errors.DicomhubError], int] = {
    errors.InvalidInput: 400,
    errors.StudyMismatch: 409,
    errors.InvalidDicom: 400,
    errors.NotFound: 404,
    errors.NotAcceptable: 406,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.RemoteFailure: 502,
    errors.Unavailable: 503,
    errors.IntegrityError: 500,
}


def status_of(exc: errors.DicomhubError) -> int:
    """The HTTP status for a domain error (most specific class wins)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, reason: str) -> JSONResponse:
    """A small JSON error body: ``{"status": 400, "error": "..."}``."""
    return JSONResponse({"status": status, "error": reason}, status_code=status)


async def domain_error(request: Request, exc: Exception) -> Response:
    """Starlette handler for :class:`DicomhubError`."""
    assert isinstance(exc, errors.DicomhubError)
    status = status_of(exc)
    if status >= 500:
        log.error("internal error on %s %s: %s", request.method, request.url.path, exc.reason)
        return error_response(status, "internal error")
    return error_response(status, exc.reason)


_UID_SEGMENTS = ("studies", "series", "instances")


def _bad_uid_in_path(path: str) -> bool:
    """Whether a path names a study/series/instance with something that is not a UID."""
    segments = path.split("/")
    for i, seg in enumerate(segments[:-1]):
        if seg in _UID_SEGMENTS and not is_valid_uid(segments[i + 1]):
            return True
    return False


async def http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (no route, wrong method) as JSON; a malformed UID in the path is a 400.

    Starlette matches path parameters on the percent-decoded path, so ``..%2Fx`` or a UID with
    a newline never reaches a route: it is reported here as the bad request it is.
    """
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and _bad_uid_in_path(request.scope.get("path", "")):
        return error_response(400, "invalid UID in the request path (PS3.5 §9.1)")
    reason = {404: "no such resource", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    response = error_response(exc.status_code, str(reason))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """Last resort: log the traceback (no PHI: path only, no query string) and answer 500."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")
