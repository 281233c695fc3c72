"""The job worker and the periodic garbage collector.

``dicomhub serve`` runs one worker thread by default; ``dicomhub worker`` runs workers alone.
Jobs survive restarts because they live in the index database: a job claimed by a process that
died is claimed again once its lease (``DICOMHUB_JOB_LEASE_S``) has expired, and a running job's
lease is extended by a heartbeat while it runs.

Internal jobs are retried until they succeed. A tenant's job (an SCU operation of the JSON API)
is retried after a *transient* failure (no association: refused, rejected, aborted, timed out;
the peer out of resources), with exponential backoff ``DICOMHUB_JOB_RETRY_BASE_S * 2**(n-1)``
capped at ``DICOMHUB_JOB_RETRY_MAX_S``, up to ``DICOMHUB_JOB_MAX_ATTEMPTS`` attempts; a
*permanent* failure (unknown AE, nothing stored under a UID, a failure status of the peer)
fails it at once.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback

from dicomhub.config import Settings
from dicomhub.errors import DicomhubError, Unavailable
from dicomhub.jobs.scu_tasks import TENANT_TASKS
from dicomhub.jobs.tasks import TASKS, JobContext, JobFailure, LeaseLost, Outcome
from dicomhub.services import gc
from dicomhub.services.archive import Archive
from dicomhub.storage.index import jobs

log = logging.getLogger(__name__)


def backoff_s(settings: Settings, attempts: int) -> float:
    """The delay before attempt ``attempts + 1`` of a tenant's job (exponential, capped)."""
    return float(min(settings.job_retry_max_s, settings.job_retry_base_s * 2 ** (attempts - 1)))


def run_one(archive: Archive) -> bool:
    """Claim and run one due job; return whether there was one."""
    with archive.db.write() as conn:
        job = jobs.claim(conn, lease_s=archive.settings.job_lease_s)
    if job is None:
        return False
    if job.tenant_id is None:
        _run_internal(archive, job)
    else:
        _run_tenant(archive, job)
    return True


def _run_internal(archive: Archive, job: jobs.Job) -> None:
    task = TASKS.get(job.kind)
    try:
        if task is None:
            raise RuntimeError(f"unknown job kind {job.kind!r}")
        task(archive, job.payload)
    except Exception as exc:
        log.warning("job %s (%s) failed, attempt %d: %s", job.id, job.kind, job.attempts, exc)
        with archive.db.write() as conn:
            jobs.fail(conn, job, f"{type(exc).__name__}: {exc}")
        return
    with archive.db.write() as conn:
        jobs.complete(conn, job.id)


def _where(exc: BaseException) -> str:
    """File and line an unexpected error came from (its message may quote data: not logged)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def _run_tenant(archive: Archive, job: jobs.Job) -> None:
    """Run a tenant's job under a lease heartbeat and record its outcome."""
    settings = archive.settings
    ctx = JobContext(archive, job)
    done = threading.Event()

    def beat() -> None:
        while not done.wait(settings.job_lease_s / 3):
            try:
                ctx.heartbeat()
            except Exception:
                log.warning("job %s: heartbeat failed", job.id, exc_info=True)

    heart = threading.Thread(target=beat, name=f"dicomhub-job-{job.id}", daemon=True)
    heart.start()
    outcome: Outcome | None = None
    failure: JobFailure | None = None
    try:
        task = TENANT_TASKS.get(job.kind)
        if task is None:
            raise JobFailure(f"unknown job kind {job.kind!r}", transient=False)
        outcome = task(ctx)
    except LeaseLost:
        log.warning("job %s (%s): taken over by another worker; abandoned", job.id, job.kind)
        return
    except JobFailure as exc:
        failure = exc
    except Unavailable as exc:
        failure = JobFailure(exc.reason, transient=True)
    except DicomhubError as exc:
        failure = JobFailure(exc.reason, transient=False)
    except Exception as exc:
        log.error(
            "job %s (%s): unexpected %s at %s", job.id, job.kind, type(exc).__name__, _where(exc)
        )
        failure = JobFailure(f"internal error ({type(exc).__name__})", transient=True)
    finally:
        done.set()
        heart.join(timeout=settings.job_lease_s)
    with archive.db.write() as conn:
        if failure is None:
            assert outcome is not None
            ours = jobs.finish(
                conn, job, jobs.SUCCEEDED, result=outcome.result, progress=outcome.progress
            )
            log.info("job %s (%s) succeeded, attempt %d", job.id, job.kind, job.attempts)
        elif failure.transient and job.attempts < settings.job_max_attempts:
            delay = backoff_s(settings, job.attempts)
            ours = jobs.retry(conn, job, delay, failure.reason, failure.progress)
            log.warning(
                "job %s (%s) attempt %d failed (transient), retry in %.1f s: %s",
                job.id,
                job.kind,
                job.attempts,
                delay,
                failure.reason,
            )
        else:
            what = "transient, attempts exhausted" if failure.transient else "permanent"
            ours = jobs.finish(
                conn,
                job,
                jobs.FAILED,
                error=failure.reason,
                progress=failure.progress,
                result=failure.result,
            )
            log.warning(
                "job %s (%s) failed (%s), attempt %d: %s",
                job.id,
                job.kind,
                what,
                job.attempts,
                failure.reason,
            )
    if not ours:
        log.warning("job %s (%s): taken over by another worker; outcome dropped", job.id, job.kind)


def drain(archive: Archive, max_jobs: int = 100000) -> int:
    """Run due jobs until none is left (or ``max_jobs``); return how many ran."""
    n = 0
    while n < max_jobs and run_one(archive):
        n += 1
    return n


def housekeeping(archive: Archive) -> None:
    """Collect stale pending blobs and purge tenants' jobs past their retention."""
    gc.collect_stale_pending(archive)
    before = time.time() - archive.settings.job_retention_s
    with archive.db.write() as conn:
        purged = jobs.purge_finished(conn, before)
    if purged:
        log.info("purged %d finished job(s)", purged)


class WorkerThread:
    """A daemon thread that drains jobs and does the housekeeping periodically."""

    def __init__(self, archive: Archive, gc_interval_s: float = 300.0) -> None:
        self.archive = archive
        self.gc_interval_s = gc_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dicomhub-worker", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop and wait for it (bounded).

        A job still running then is abandoned: a worker claims it again once its lease expires.
        """
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        poll = self.archive.settings.worker_poll_s
        next_gc = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_gc:
                    housekeeping(self.archive)
                    next_gc = time.monotonic() + self.gc_interval_s
                while not self._stop.is_set() and run_one(self.archive):
                    pass
            except Exception:
                log.exception("worker loop error")
            self._stop.wait(poll)
