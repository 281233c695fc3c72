"""The job table: durable background work (PS: the transactional outbox pattern).

A job is enqueued in the same transaction as the change that needs it, so it exists exactly
when that change is committed. Workers (in ``dicomhub serve`` or ``dicomhub worker``, on any
node) claim a due job by setting ``locked_until`` (a lease):
a worker that dies mid-job loses its lease and another worker runs the job again, so job
functions must be idempotent (deleting a blob twice is harmless).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from dicomhub.storage.index import tables as t

MAX_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int


def enqueue(conn: Connection, kind: str, payload: dict[str, Any], delay_s: float = 0.0) -> None:
    """Add a job in the caller's transaction."""
    now = time.time()
    conn.execute(
        insert(t.job).values(
            kind=kind,
            payload=json.dumps(payload, separators=(",", ":")),
            run_at=now + delay_s,
            attempts=0,
            locked_until=0.0,
            created_at=now,
        )
    )


def claim(conn: Connection, lease_s: float = 300.0) -> Job | None:
    """Claim the oldest due job in the caller's write transaction, or return None.

    SQLite serialises writers, so the select-then-lease is atomic there; on PostgreSQL the row
    is selected ``FOR UPDATE SKIP LOCKED``, so concurrent claimers never get the same job.
    """
    now = time.time()
    stmt = (
        select(t.job.c.id, t.job.c.kind, t.job.c.payload, t.job.c.attempts)
        .where(t.job.c.run_at <= now, t.job.c.locked_until <= now)
        .order_by(t.job.c.run_at, t.job.c.id)
        .limit(1)
    )
    if conn.dialect.name == "postgresql":
        # Workers on several nodes claim at once: each skips the rows another is claiming
        # instead of waiting for it, and the lease then keeps the job theirs.
        stmt = stmt.with_for_update(skip_locked=True)
    row = conn.execute(stmt).first()
    if row is None:
        return None
    conn.execute(
        update(t.job)
        .where(t.job.c.id == row[0])
        .values(locked_until=now + lease_s, attempts=t.job.c.attempts + 1)
    )
    return Job(int(row[0]), str(row[1]), json.loads(row[2]), int(row[3]) + 1)


def complete(conn: Connection, job_id: int) -> None:
    """Remove a finished job."""
    conn.execute(delete(t.job).where(t.job.c.id == job_id))


def fail(conn: Connection, job: Job, error: str) -> None:
    """Release a failed job for a later retry with exponential backoff (capped)."""
    delay = min(3600.0, 2.0 ** min(job.attempts, 12))
    conn.execute(
        update(t.job)
        .where(t.job.c.id == job.id)
        .values(run_at=time.time() + delay, locked_until=0.0, last_error=error[:2000])
    )


def pending_count(conn: Connection) -> int:
    """Number of jobs not yet completed."""
    return int(conn.execute(select(func.count()).select_from(t.job)).scalar_one())
