"""Per-request context for the web edge: the archive and the caller's tenant."""

from __future__ import annotations

from starlette.requests import Request

from dicomhub.services.archive import DEFAULT_TENANT, Archive


def archive_of(request: Request) -> Archive:
    """The archive this application serves."""
    archive: Archive = request.app.state.archive
    return archive


def tenant_of(request: Request) -> int:
    """The tenant the request acts for (the single default tenant until accounts exist)."""
    return DEFAULT_TENANT


def base_url(request: Request) -> str:
    """The absolute DICOMweb root URL as seen by the client (for RetrieveURL, BulkDataURI)."""
    archive = archive_of(request)
    root = str(request.base_url).rstrip("/")
    return root + archive.settings.base_path
