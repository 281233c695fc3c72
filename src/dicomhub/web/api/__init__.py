"""The JSON API under ``/api``: the AE registry and SCU operations as durable jobs."""

from __future__ import annotations

from starlette.routing import BaseRoute

from dicomhub.web.api import aes, jobs

#: Where the JSON API is mounted (DICOMweb has its own root, ``settings.base_path``).
API_ROOT = "/api"


def routes() -> list[BaseRoute]:
    """Every JSON API route, relative to :data:`API_ROOT`."""
    return [*aes.routes(), *jobs.routes()]
