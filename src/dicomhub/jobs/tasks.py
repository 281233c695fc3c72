"""Job functions: thin calls into the services. Each must be idempotent (a job may run twice).

Internal jobs (:data:`TASKS`) take the payload and succeed or raise. Jobs of a tenant (the SCU
operations of the JSON API, :mod:`dicomhub.jobs.scu_tasks`) take a :class:`JobContext`, report
progress through it and return an :class:`Outcome`, or raise :class:`JobFailure`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dicomhub.services.archive import Archive
from dicomhub.storage.index import jobs

if TYPE_CHECKING:
    from dicomhub.dimse.scu import Summary

#: Least time between two progress writes of one job (seconds).
PROGRESS_INTERVAL_S = 0.5


def delete_blobs(archive: Archive, payload: dict[str, Any]) -> None:
    """Remove blobs no index row references any more (after DELETE or overwrite)."""
    for key in payload.get("keys", []):
        archive.blobs.delete(str(key))


TASKS: dict[str, Callable[[Archive, dict[str, Any]], None]] = {
    "delete_blobs": delete_blobs,
}


@dataclass
class Outcome:
    """What a tenant's job produced."""

    result: Any = None
    progress: dict[str, Any] | None = None


class JobFailure(Exception):
    """A tenant's job failed: transient (retry with backoff) or permanent (fail now).

    The reason is shown to the client as the job's last error: it must not contain PHI.
    """

    def __init__(
        self,
        reason: str,
        *,
        transient: bool,
        progress: dict[str, Any] | None = None,
        result: Any = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.progress = progress
        self.result = result


class LeaseLost(Exception):
    """Another worker took the job over (this one was presumed dead): stop working on it."""


class JobContext:
    """A running tenant job: its archive and claim, progress reports and the lease heartbeat."""

    def __init__(self, archive: Archive, job: jobs.Job) -> None:
        assert job.tenant_id is not None
        self.archive = archive
        self.job = job
        self.tenant: int = job.tenant_id
        self._lock = threading.Lock()
        self._latest: dict[str, Any] | None = None
        self._written_at = 0.0
        self._lost = False

    def progress(self, counts: dict[str, Any]) -> None:
        """Record progress (written at most every :data:`PROGRESS_INTERVAL_S`).

        Raises:
            LeaseLost: the job is no longer this worker's.
        """
        with self._lock:
            self._latest = counts
            due = time.monotonic() - self._written_at >= PROGRESS_INTERVAL_S
        if due:
            self.heartbeat()
        if self._lost:
            raise LeaseLost(f"job {self.job.id} was taken over")

    def summary_progress(self, summary: Summary) -> None:
        """:meth:`progress` from an SCU operation's running summary."""
        self.progress(summary.counts())

    def heartbeat(self) -> None:
        """Extend the lease and write the latest progress."""
        with self._lock:
            counts = self._latest
            self._written_at = time.monotonic()
        with self.archive.db.write() as conn:
            ours = jobs.heartbeat(conn, self.job, self.archive.settings.job_lease_s, counts)
        if not ours:
            self._lost = True
