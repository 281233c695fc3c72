"""``dicomhub worker``: run background job workers without serving HTTP.

Jobs live in the index database, so workers on any node (or several of them) share the work;
on PostgreSQL each job is claimed by exactly one worker (``FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType
from typing import Any

from dicomhub.cli.common import add_storage_args, settings_from, setup_logging
from dicomhub.jobs.worker import WorkerThread, drain, housekeeping
from dicomhub.services.archive import Archive

log = logging.getLogger(__name__)


def _threads(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError("must be an integer between 1 and 64")
    return int(value)


def add_parser(sub: Any) -> None:
    """Register the ``worker`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "worker",
        help="run background job workers (no HTTP)",
        description="Run the job workers (blob removal after delete or overwrite, garbage "
        "collection of stale reservations, the send/query/retrieve jobs of the JSON API) "
        "until SIGINT or SIGTERM.",
    )
    add_storage_args(p)
    p.add_argument("--threads", type=_threads, default=1, help="worker threads (default 1)")
    p.add_argument(
        "--once",
        action="store_true",
        help="run the due jobs and the housekeeping (garbage collection), then exit",
    )
    p.add_argument("--log-level", help="debug|info|warning|error")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run workers until interrupted (or once, with ``--once``)."""
    settings = settings_from(args)
    setup_logging(settings.log_level)
    archive = Archive.open(settings)
    try:
        if args.once:
            housekeeping(archive)
            n = drain(archive)
            log.info("ran %d job(s)", n)
            return 0
        stop = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping workers", signum)
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        workers = [WorkerThread(archive) for _ in range(args.threads)]
        for w in workers:
            w.start()
        log.info("dicomhub worker running %d thread(s)", len(workers))
        stop.wait()
        for w in workers:
            w.stop()
        return 0
    finally:
        archive.close()
