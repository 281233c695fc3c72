"""``/api/jobs``: the durable jobs of the caller's tenant (SCU send, query, retrieve)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from dicomhub.config import Settings
from dicomhub.errors import InvalidInput, NotFound
from dicomhub.services import scu_jobs
from dicomhub.storage.index import jobs as job_table
from dicomhub.web.context import archive_of, tenant_of

DEFAULT_PAGE: Final = 50
#: Job ids are positive 63-bit integers.
MAX_ID: Final = 2**63 - 1


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_json(row: job_table.JobRow, settings: Settings, *, result: bool) -> dict[str, Any]:
    """The JSON form of a job (with its result only when ``result``)."""
    waiting = row.state in (job_table.QUEUED, job_table.RETRYING)
    out: dict[str, Any] = {
        "id": row.id,
        "operation": scu_jobs.OPERATIONS.get(row.kind, row.kind),
        "ae_title": row.payload.get("ae_title"),
        "state": row.state,
        "attempts": row.attempts,
        "max_attempts": settings.job_max_attempts,
        "progress": row.progress or {"completed": 0, "failed": 0, "warning": 0, "remaining": 0},
        "last_error": row.last_error,
        "request": {k: v for k, v in row.payload.items() if k != "ae_title"},
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "next_attempt_at": _iso(row.run_at) if waiting else None,
        "finished_at": _iso(row.finished_at),
    }
    if result:
        out["result"] = row.result
    return out


def job_url(request: Request, job_id: int) -> str:
    """The absolute URL of a job."""
    return str(request.url_for("job", job_id=str(job_id)))


def job_response(request: Request, row: job_table.JobRow, *, status_code: int = 200) -> Response:
    """A job as JSON, with its URL in ``Location`` (answers to POSTs use 202)."""
    settings = archive_of(request).settings
    return JSONResponse(
        job_json(row, settings, result=True),
        status_code=status_code,
        headers={"Location": job_url(request, row.id)},
    )


def _int_param(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 10:
        raise InvalidInput(f"{name} must be a non-negative integer")
    return int(text)


async def list_jobs(request: Request) -> Response:
    """``GET /api/jobs?state=&limit=&offset=``: a page of jobs, newest first (no results)."""
    archive, tenant = archive_of(request), tenant_of(request)
    unknown = sorted(set(request.query_params) - {"state", "limit", "offset"})
    if unknown:
        raise InvalidInput(f"unknown query parameter {unknown[0][:64]!r}")
    limit = _int_param(request, "limit", DEFAULT_PAGE)
    offset = _int_param(request, "offset", 0)
    state = request.query_params.get("state")

    def work() -> tuple[list[job_table.JobRow], int]:
        return scu_jobs.list_page(archive, tenant, limit=limit, offset=offset, state=state)

    rows, total = await run_in_threadpool(work)
    return JSONResponse(
        {
            "jobs": [
                {**job_json(r, archive.settings, result=False), "url": job_url(request, r.id)}
                for r in rows
            ],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


def _job_id(request: Request) -> int:
    job_id = int(request.path_params["job_id"])
    if not 1 <= job_id <= MAX_ID:
        raise NotFound("no such job")
    return job_id


async def job_resource(request: Request) -> Response:
    """``GET`` a job (with its result); ``DELETE`` cancels it while it is queued."""
    archive, tenant = archive_of(request), tenant_of(request)
    job_id = _job_id(request)
    if request.method == "DELETE":
        row = await run_in_threadpool(scu_jobs.cancel, archive, tenant, job_id)
    else:
        row = await run_in_threadpool(scu_jobs.get, archive, tenant, job_id)
    return job_response(request, row)


def routes() -> list[BaseRoute]:
    """Job routes, relative to the API root."""
    return [
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/jobs/{job_id:int}", job_resource, methods=["GET", "DELETE"], name="job"),
    ]
