"""Job functions of the SCU operations (send, query, retrieve), run by the worker.

Each calls the one implementation in :mod:`dicomhub.dimse.scu` (as ``dicomhub send|query|
retrieve`` do) and turns its outcome into a job outcome: a result, or a
:class:`~dicomhub.jobs.tasks.JobFailure` that says whether retrying can help. Re-running a job
is safe: a peer stores a re-sent instance once (same SOP Instance UID), and instances retrieved
again are identical duplicates to ingest (an idempotent success).
"""

from __future__ import annotations

from typing import Any

from dicomhub.dimse import scu
from dicomhub.jobs.tasks import JobContext, JobFailure, Outcome
from dicomhub.services.scu_jobs import KINDS, refs_of


def _outcome(summary: scu.Summary, what: str) -> Outcome:
    """The job outcome of a send or retrieve summary."""
    counts = summary.counts()
    result: dict[str, Any] = {
        **counts,
        "failed_instances": [
            {"sop_instance_uid": uid, "status": f"0x{code:04X}"}
            for uid, code in summary.failed_instances
        ],
    }
    if summary.aborted:
        raise JobFailure(f"{what}: the association ended early", transient=True, progress=counts)
    if scu.is_out_of_resources(summary.status):
        raise JobFailure(
            f"{what}: the peer is out of resources (status 0x{summary.status or 0:04X})",
            transient=True,
            progress=counts,
        )
    if summary.failed:
        total = summary.done + summary.remaining
        status = f" (final status 0x{summary.status:04X})" if summary.status is not None else ""
        raise JobFailure(
            f"{what}: {summary.failed} of {total} sub-operations failed{status}",
            transient=False,
            progress=counts,
            result=result,
        )
    return Outcome(result=result, progress=counts)


def send(ctx: JobContext) -> Outcome:
    """C-STORE the job's instances to its AE (PS3.4 B.2)."""
    p = ctx.job.payload
    summary = scu.send(
        ctx.archive, ctx.tenant, p["ae_title"], refs_of(p), on_progress=ctx.summary_progress
    )
    return _outcome(summary, "C-STORE")


def query(ctx: JobContext) -> Outcome:
    """C-FIND the job's AE (PS3.4 C.4.1); the result holds the matches as DICOM JSON."""
    p = ctx.job.payload
    identifier = scu.identifier_from_keys(p["level"], [f"{k}={v}" for k, v in p["keys"].items()])
    limit = int(p["limit"])

    def on_match(n: int) -> None:
        ctx.progress({"completed": n, "failed": 0, "warning": 0, "remaining": 0})

    found = scu.query(
        ctx.archive,
        ctx.tenant,
        p["ae_title"],
        identifier,
        p["model"],
        limit=limit,
        on_match=on_match,
    )
    matches = [ds.to_json_dict() for ds in found[:limit]]
    progress = {"completed": len(matches), "failed": 0, "warning": 0, "remaining": 0}
    return Outcome(
        result={"count": len(matches), "truncated": len(found) >= limit, "matches": matches},
        progress=progress,
    )


def retrieve(ctx: JobContext) -> Outcome:
    """C-GET or C-MOVE the job's references from its AE into this archive (PS3.4 C.4.2-3)."""
    p = ctx.job.payload
    summary = scu.retrieve(
        ctx.archive,
        ctx.tenant,
        p["ae_title"],
        refs_of(p),
        method=p["method"],
        model=p["model"],
        on_progress=ctx.summary_progress,
    )
    return _outcome(summary, "C-GET" if p["method"] == "get" else "C-MOVE")


TENANT_TASKS = {KINDS["send"]: send, KINDS["query"]: query, KINDS["retrieve"]: retrieve}
