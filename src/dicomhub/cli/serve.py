"""``dicomhub serve``: the archive's HTTP server (DICOMweb), DIMSE server and background worker."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette

from dicomhub.cli.common import add_storage_args, settings_from, setup_logging
from dicomhub.config import Settings
from dicomhub.dimse.server import DimseServer, reset_shared
from dicomhub.services.archive import Archive
from dicomhub.web.app import create_app

log = logging.getLogger("dicomhub.access")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


class AccessLog:
    """Access log without query strings (they can hold patient names and IDs)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        """Serve the request and log one line when it ends."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            log.info(
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - start) * 1000,
            )


def add_parser(sub: Any) -> None:
    """Register the ``serve`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser("serve", help="run the archive server")
    add_storage_args(p)
    p.add_argument("--host", help="HTTP listen address (DICOMHUB_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (DICOMHUB_PORT, default 8080)")
    p.add_argument("--dimse-port", type=int, help="DIMSE port (DICOMHUB_DIMSE_PORT; 0 = off)")
    p.add_argument("--ae-title", help="our AE title (DICOMHUB_AE_TITLE, default DICOMHUB)")
    p.add_argument("--log-level", help="debug|info|warning|error")
    p.add_argument(
        "--workers",
        type=int,
        help="HTTP server processes (DICOMHUB_WORKERS; default 0 = one per CPU core)",
    )
    p.add_argument("--no-access-log", action="store_true", help="do not log each request")
    p.set_defaults(func=run)


SETTINGS_ENV = "DICOMHUB_SETTINGS_JSON"
ACCESS_LOG_ENV = "DICOMHUB_ACCESS_LOG"


def worker_app() -> Any:
    """The app of one server process (uvicorn factory; settings come from the parent).

    Each process also serves DIMSE on the shared port (unless ``dimse_port`` is 0), started and
    stopped with the app's lifespan.
    """
    settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    setup_logging(settings.log_level)
    starlette = create_app(settings, migrate=False)
    if settings.dimse_port:
        _serve_dimse_with(starlette, settings)
    app: Any = starlette
    if os.environ.get(ACCESS_LOG_ENV) == "1":
        app = AccessLog(app)
    return app


def _serve_dimse_with(app: Starlette, settings: Settings) -> None:
    """Run a DIMSE server over the app's archive for as long as the app's lifespan."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Starlette) -> AsyncIterator[Any]:
        server = DimseServer(app.state.archive, settings, shared=settings.process_count > 1)
        server.start()
        try:
            async with inner(a) as state:
                yield state
        finally:
            server.stop()

    app.router.lifespan_context = lifespan


def run(args: argparse.Namespace) -> int:
    """Start the server and block until interrupted.

    Python runs one thread at a time per process, so the server runs one process per CPU core
    by default (all sharing the index and the blob store, exactly as stateless nodes do);
    ``--workers 1`` keeps a single process. The parent migrates the index first.

    The DIMSE server (``--dimse-port``, 0 = off) runs in every server process, on one port
    shared with ``SO_REUSEPORT`` (the kernel spreads associations over the processes, so C-STORE
    uses every core as STOW-RS does); the association limits are counted across the processes
    in a shared table (:mod:`dicomhub.dimse.limits`), which this parent resets first.
    """
    settings = settings_from(args, **({"workers": args.workers} if args.workers else {}))
    setup_logging(settings.log_level)
    Archive.open(settings).close()  # create and migrate once, before any worker starts
    # The worker processes need the secrets too (model_dump_json masks SecretStr values).
    dumped = settings.model_dump(mode="json")
    if settings.s3_secret_key is not None:
        dumped["s3_secret_key"] = settings.s3_secret_key.get_secret_value()
    os.environ[SETTINGS_ENV] = json.dumps(dumped)
    os.environ[ACCESS_LOG_ENV] = "0" if args.no_access_log else "1"
    log.info(
        "dicomhub serving DICOMweb on http://%s:%d%s with %d process(es)",
        settings.host,
        settings.port,
        settings.base_path,
        settings.process_count,
    )
    if settings.dimse_port:
        try:
            reset_shared(settings)
        except OSError as exc:
            log.error("cannot listen for DIMSE on port %d: %s", settings.dimse_port, exc)
            return 2
    _run_http(settings)
    return 0


def _run_http(settings: Settings) -> None:
    uvicorn.run(
        "dicomhub.cli.serve:worker_app",
        factory=True,
        workers=settings.process_count,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=30,
        limit_concurrency=1000,
    )
