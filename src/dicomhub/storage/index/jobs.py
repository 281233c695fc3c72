"""The job table: durable background work (PS: the transactional outbox pattern).

A job is enqueued in the same transaction as the change that needs it, so it exists exactly
when that change is committed. Workers (in ``dicomhub serve`` or ``dicomhub worker``, on any
node) claim a due job by setting ``locked_until`` (a lease) and ``state = 'running'``:
a worker that dies mid-job loses its lease and another worker runs the job again, so job
functions must be idempotent (deleting a blob twice is harmless; sending an instance twice
stores it once). The attempt count is the claim's fencing token: a worker whose lease was
taken over can no longer record progress or an outcome.

Two sorts of jobs share the table:

* internal jobs (``tenant_id`` NULL, e.g. blob removal) are deleted when done and retried
  until they succeed;
* jobs of a tenant (SCU operations started through the JSON API) keep their row with state,
  progress and result; transient failures are retried with exponential backoff up to a
  limit, permanent ones fail at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, delete, func, insert, select, update

from dicomhub.storage.index import tables as t

MAX_ATTEMPTS = 20

QUEUED: Final = "queued"
RUNNING: Final = "running"
RETRYING: Final = "retrying"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
#: States a worker may claim (``running`` only once its lease has expired).
OPEN_STATES: Final = (QUEUED, RETRYING, RUNNING)
FINISHED_STATES: Final = (SUCCEEDED, FAILED, CANCELLED)
STATES: Final = (*OPEN_STATES, *FINISHED_STATES)

_J = t.job


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    tenant_id: int | None = None


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as a client sees it (``GET /api/jobs/{id}``)."""

    id: int
    kind: str
    state: str
    tenant_id: int | None
    payload: dict[str, Any]
    attempts: int
    run_at: float
    locked_until: float
    last_error: str | None
    progress: dict[str, Any] | None
    result: Any
    created_at: float
    updated_at: float | None
    finished_at: float | None


def enqueue(
    conn: Connection,
    kind: str,
    payload: dict[str, Any],
    delay_s: float = 0.0,
    *,
    tenant_id: int | None = None,
) -> int:
    """Add a job in the caller's transaction; its id.

    Args:
        conn: The caller's write transaction.
        kind: The task name (``jobs.tasks.TASKS``).
        payload: JSON-serialisable arguments of the task.
        delay_s: Run no earlier than this many seconds from now.
        tenant_id: The owning tenant for a client-visible job (kept when finished); ``None``
            for an internal job (deleted when done).
    """
    now = time.time()
    res = conn.execute(
        insert(_J)
        .values(
            kind=kind,
            payload=json.dumps(payload, separators=(",", ":")),
            run_at=now + delay_s,
            attempts=0,
            locked_until=0.0,
            created_at=now,
            updated_at=now,
            state=QUEUED,
            tenant_id=tenant_id,
        )
        .returning(_J.c.id)
    )
    return int(res.scalar_one())


def claim(conn: Connection, lease_s: float = 300.0) -> Job | None:
    """Claim the oldest due job in the caller's write transaction, or return None.

    Due: queued, or retrying with its backoff elapsed, or running with an expired lease (the
    worker that claimed it died). SQLite serialises writers, so the select-then-lease is atomic
    there; on PostgreSQL the row is selected ``FOR UPDATE SKIP LOCKED``, so concurrent claimers
    never get the same job.
    """
    now = time.time()
    stmt = (
        select(_J.c.id, _J.c.kind, _J.c.payload, _J.c.attempts, _J.c.tenant_id)
        .where(_J.c.state.in_(OPEN_STATES), _J.c.run_at <= now, _J.c.locked_until <= now)
        .order_by(_J.c.run_at, _J.c.id)
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
        update(_J)
        .where(_J.c.id == row[0])
        .values(
            locked_until=now + lease_s,
            attempts=_J.c.attempts + 1,
            state=RUNNING,
            updated_at=now,
        )
    )
    tenant = None if row[4] is None else int(row[4])
    return Job(int(row[0]), str(row[1]), json.loads(row[2]), int(row[3]) + 1, tenant)


def _mine(job: Job) -> Any:
    """The WHERE clause of a claim still held: same id, same attempt, still running."""
    return (_J.c.id == job.id) & (_J.c.attempts == job.attempts) & (_J.c.state == RUNNING)


def complete(conn: Connection, job_id: int) -> None:
    """Remove a finished internal job."""
    conn.execute(delete(_J).where(_J.c.id == job_id))


def fail(conn: Connection, job: Job, error: str) -> None:
    """Release a failed internal job for a later retry with exponential backoff (capped)."""
    delay = min(3600.0, 2.0 ** min(job.attempts, 12))
    conn.execute(
        update(_J)
        .where(_J.c.id == job.id)
        .values(
            run_at=time.time() + delay,
            locked_until=0.0,
            last_error=error[:2000],
            state=RETRYING,
            updated_at=time.time(),
        )
    )


def heartbeat(
    conn: Connection, job: Job, lease_s: float, progress: dict[str, Any] | None = None
) -> bool:
    """Extend the lease of a running job (and record its progress); whether it is still ours."""
    now = time.time()
    values: dict[str, Any] = {"locked_until": now + lease_s, "updated_at": now}
    if progress is not None:
        values["progress"] = json.dumps(progress, separators=(",", ":"))
    return bool(conn.execute(update(_J).where(_mine(job)).values(**values)).rowcount)


def finish(
    conn: Connection,
    job: Job,
    state: str,
    *,
    result: Any = None,
    progress: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome of a tenant's job (``succeeded`` or ``failed``); whether it was ours."""
    assert state in (SUCCEEDED, FAILED)
    now = time.time()
    values: dict[str, Any] = {
        "state": state,
        "locked_until": 0.0,
        "updated_at": now,
        "finished_at": now,
        "last_error": None if error is None else error[:2000],
    }
    if result is not None:
        values["result"] = json.dumps(result, separators=(",", ":"))
    if progress is not None:
        values["progress"] = json.dumps(progress, separators=(",", ":"))
    return bool(conn.execute(update(_J).where(_mine(job)).values(**values)).rowcount)


def retry(
    conn: Connection,
    job: Job,
    delay_s: float,
    error: str,
    progress: dict[str, Any] | None = None,
) -> bool:
    """Put a tenant's job back for another attempt in ``delay_s``; whether it was ours."""
    now = time.time()
    values: dict[str, Any] = {
        "state": RETRYING,
        "run_at": now + delay_s,
        "locked_until": 0.0,
        "updated_at": now,
        "last_error": error[:2000],
    }
    if progress is not None:
        values["progress"] = json.dumps(progress, separators=(",", ":"))
    return bool(conn.execute(update(_J).where(_mine(job)).values(**values)).rowcount)


def cancel(conn: Connection, tenant_id: int, job_id: int) -> bool:
    """Cancel a queued (or retrying, between attempts) job of ``tenant_id``; whether it was.

    A job a worker is running is not cancelled (the condition is re-checked on the row, so a
    concurrent claim wins or loses cleanly).
    """
    now = time.time()
    res = conn.execute(
        update(_J)
        .where(
            _J.c.id == job_id,
            _J.c.tenant_id == tenant_id,
            _J.c.state.in_((QUEUED, RETRYING)),
            _J.c.locked_until <= now,
        )
        .values(state=CANCELLED, updated_at=now, finished_at=now, locked_until=0.0)
    )
    return bool(res.rowcount)


def _row(r: Mapping[Any, Any]) -> JobRow:
    progress, result, updated, finished = (
        r.get(k) for k in ("progress", "result", "updated_at", "finished_at")
    )
    return JobRow(
        id=int(r["id"]),
        kind=str(r["kind"]),
        state=str(r["state"]),
        tenant_id=None if r["tenant_id"] is None else int(r["tenant_id"]),
        payload=json.loads(r["payload"]),
        attempts=int(r["attempts"]),
        run_at=float(r["run_at"]),
        locked_until=float(r["locked_until"]),
        last_error=r["last_error"],
        progress=None if progress is None else json.loads(progress),
        result=None if result is None else json.loads(result),
        created_at=float(r["created_at"]),
        updated_at=None if updated is None else float(updated),
        finished_at=None if finished is None else float(finished),
    )


def get(conn: Connection, tenant_id: int, job_id: int) -> JobRow | None:
    """The job ``job_id`` of ``tenant_id``, if any."""
    stmt = select(_J).where(_J.c.id == job_id, _J.c.tenant_id == tenant_id)
    r = conn.execute(stmt).mappings().first()
    return None if r is None else _row(r)


def list_jobs(
    conn: Connection,
    tenant_id: int,
    *,
    limit: int,
    offset: int = 0,
    state: str | None = None,
    include_result: bool = False,
) -> tuple[list[JobRow], int]:
    """A page of the jobs of ``tenant_id``, newest first, and how many there are in all."""
    cond = [_J.c.tenant_id == tenant_id]
    if state is not None:
        cond.append(_J.c.state == state)
    cols = [c for c in _J.c if include_result or c.name != "result"]
    stmt = select(*cols).where(*cond).order_by(_J.c.id.desc()).limit(limit).offset(offset)
    rows = conn.execute(stmt).mappings().all()
    total = int(conn.execute(select(func.count()).select_from(_J).where(*cond)).scalar_one())
    return [_row(r) for r in rows], total


def purge_finished(conn: Connection, before: float) -> int:
    """Delete tenants' jobs that finished before ``before``; how many."""
    res = conn.execute(delete(_J).where(_J.c.state.in_(FINISHED_STATES), _J.c.finished_at < before))
    return int(res.rowcount or 0)


def pending_count(conn: Connection) -> int:
    """Number of jobs not yet finished."""
    return int(
        conn.execute(
            select(func.count()).select_from(_J).where(_J.c.state.in_(OPEN_STATES))
        ).scalar_one()
    )
