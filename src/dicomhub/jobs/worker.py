"""The in-process job worker and the periodic garbage collector.

``dicomhub serve`` runs one worker thread by default; ``dicomhub worker`` (later) runs workers
alone. Jobs survive restarts because they live in the index database.
"""

from __future__ import annotations

import logging
import threading
import time

from dicomhub.jobs.tasks import TASKS
from dicomhub.services import gc
from dicomhub.services.archive import Archive
from dicomhub.storage.index import jobs

log = logging.getLogger(__name__)


def run_one(archive: Archive) -> bool:
    """Claim and run one due job; return whether there was one."""
    with archive.db.write() as conn:
        job = jobs.claim(conn)
    if job is None:
        return False
    task = TASKS.get(job.kind)
    try:
        if task is None:
            raise RuntimeError(f"unknown job kind {job.kind!r}")
        task(archive, job.payload)
    except Exception as exc:
        log.warning("job %s (%s) failed, attempt %d: %s", job.id, job.kind, job.attempts, exc)
        with archive.db.write() as conn:
            jobs.fail(conn, job, f"{type(exc).__name__}: {exc}")
        return True
    with archive.db.write() as conn:
        jobs.complete(conn, job.id)
    return True


def drain(archive: Archive, max_jobs: int = 100000) -> int:
    """Run due jobs until none is left (or ``max_jobs``); return how many ran."""
    n = 0
    while n < max_jobs and run_one(archive):
        n += 1
    return n


class WorkerThread:
    """A daemon thread that drains jobs and collects stale pending blobs periodically."""

    def __init__(self, archive: Archive, gc_interval_s: float = 300.0) -> None:
        self.archive = archive
        self.gc_interval_s = gc_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dicomhub-worker", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop and wait for it (bounded)."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        poll = self.archive.settings.worker_poll_s
        next_gc = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_gc:
                    gc.collect_stale_pending(self.archive)
                    next_gc = time.monotonic() + self.gc_interval_s
                while not self._stop.is_set() and run_one(self.archive):
                    pass
            except Exception:
                log.exception("worker loop error")
            self._stop.wait(poll)
