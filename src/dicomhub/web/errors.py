"""THE error -> HTTP table of the web edge.

Only our own errors map to 4xx/503; anything else is a bug, logged with its traceback and
answered 500 without details.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dicomhub import errors

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


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """Last resort: log the traceback (no PHI: path only, no query string) and answer 500."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")
