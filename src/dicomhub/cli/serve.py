"""``dicomhub serve``: the archive's HTTP server (DICOMweb) with its background worker."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from dicomhub.cli.common import add_storage_args, settings_from, setup_logging
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
    p.add_argument("--no-access-log", action="store_true", help="do not log each request")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the server and block until interrupted."""
    settings = settings_from(args)
    setup_logging(settings.log_level)
    app: Any = create_app(settings)
    if not args.no_access_log:
        app = AccessLog(app)
    log.info(
        "dicomhub serving DICOMweb on http://%s:%d%s",
        settings.host,
        settings.port,
        settings.base_path,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=30,
        limit_concurrency=1000,
    )
    return 0
