"""The ASGI application: DICOMweb under ``settings.base_path``, the JSON API under ``/api``.

DICOMweb defaults to ``/dicomweb``; the JSON API holds the AE registry and the SCU jobs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from dicomhub import __version__, errors
from dicomhub.config import Settings
from dicomhub.jobs.worker import WorkerThread
from dicomhub.services.archive import Archive
from dicomhub.web import api
from dicomhub.web.dicomweb import delete, qido, rendered, stow, wado
from dicomhub.web.errors import domain_error, http_error, unexpected_error
from dicomhub.web.ui.home import home

log = logging.getLogger(__name__)


async def health(request: Request) -> Response:
    """Liveness: the process answers and the index is reachable."""
    archive: Archive = request.app.state.archive
    with archive.db.read() as conn:
        conn.exec_driver_sql("SELECT 1")
    return JSONResponse({"status": "ok", "version": __version__})


def create_app(
    settings: Settings, archive: Archive | None = None, *, migrate: bool = True
) -> Starlette:
    """Build the application; opens (and by default migrates) the archive unless one is given."""
    owned = archive is None
    arch = archive if archive is not None else Archive.open(settings, migrate=migrate)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        worker = WorkerThread(arch) if settings.run_workers else None
        if worker:
            worker.start()
        try:
            yield
        finally:
            if worker:
                worker.stop()
            if owned:
                arch.close()

    dicomweb = [
        *stow.routes(),
        *qido.routes(),
        *wado.routes(),
        *delete.routes(),
        *rendered.routes(),
    ]
    app = Starlette(
        routes=[
            Route("/", home, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Mount(settings.base_path, routes=dicomweb),
            Mount(api.API_ROOT, routes=api.routes()),
        ],
        exception_handlers={
            HTTPException: http_error,
            errors.DicomhubError: domain_error,
            Exception: unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.archive = arch
    return app
