"""Deletion of studies, series and instances.

The index rows go in one transaction, which also enqueues the removal of their blobs as a job:
the resources vanish from queries and retrieval at once, and the blobs are removed by the worker,
even across restarts.
"""

from __future__ import annotations

from dicomhub.errors import NotFound
from dicomhub.services.archive import Archive
from dicomhub.storage.index import jobs
from dicomhub.storage.index import store as index

BATCH = 1000


def delete(
    archive: Archive,
    tenant_id: int,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> int:
    """Delete a study, series or instance; return the number of instances removed.

    Raises:
        NotFound: nothing matches (also for resources of other tenants).
    """
    with archive.db.write() as conn:
        records = index.instances(conn, tenant_id, study_uid, series_uid, sop_uid)
        if not records:
            raise NotFound("no such resource")
        keys = index.delete_instances(conn, tenant_id, records)
        for i in range(0, len(keys), BATCH):
            jobs.enqueue(conn, "delete_blobs", {"keys": keys[i : i + BATCH]})
    return len(records)
