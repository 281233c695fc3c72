"""SCU operations as durable jobs: submit, inspect, list and cancel (the JSON API's service).

``POST /api/aes/{title}/send|query|retrieve`` validate the request here and enqueue a job in one
index transaction (the job table, :mod:`dicomhub.storage.index.jobs`); a worker runs it with
the same operation code as ``dicomhub send|query|retrieve`` (:mod:`dicomhub.dimse.scu`, via
:mod:`dicomhub.jobs.scu_tasks`). Jobs belong to the tenant that submitted them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Final

from dicomhub.dimse import scu
from dicomhub.errors import Conflict, InvalidInput, NotFound
from dicomhub.services import peers
from dicomhub.services.archive import Archive
from dicomhub.storage.index import jobs
from dicomhub.storage.index import store as index

#: Job kinds by operation (``jobs.tasks.TASKS`` names).
KINDS: Final = {"send": "scu_send", "query": "scu_query", "retrieve": "scu_retrieve"}
OPERATIONS: Final = {kind: op for op, kind in KINDS.items()}
#: Longest value of one C-FIND key in a request (characters).
MAX_KEY_VALUE: Final = 1024


def _registered(archive: Archive, tenant: int, ae_title: str) -> peers.RemoteAE:
    title = peers.validate_ae_title(ae_title)
    ae = peers.get(archive, tenant, title)
    if ae is None:
        raise NotFound(f"no AE {title!r} is registered")
    return ae


def _bounded(archive: Archive, refs: Sequence[scu.Ref]) -> None:
    limit = archive.settings.api_max_items
    if not refs:
        raise InvalidInput("name at least one study, series or instance")
    if len(refs) > limit:
        raise InvalidInput(f"at most {limit} items per request (DICOMHUB_API_MAX_ITEMS)")


def submit_send(archive: Archive, tenant: int, ae_title: str, refs: Sequence[scu.Ref]) -> int:
    """Enqueue a C-STORE of stored ``refs`` to a registered AE (PS3.4 B.2); the job id.

    Raises:
        InvalidInput: no or too many references.
        NotFound: the AE is not registered, or a reference names nothing stored.
    """
    _bounded(archive, refs)
    ae = _registered(archive, tenant, ae_title)
    with archive.db.write() as conn:
        for ref in refs:
            if not index.instances(conn, tenant, ref.study, ref.series, ref.instance):
                raise NotFound(f"no such {ref.level.lower().replace('image', 'instance')}")
        payload = {"ae_title": ae.ae_title, "items": [_ref_json(r) for r in refs]}
        return jobs.enqueue(conn, KINDS["send"], payload, tenant_id=tenant)


def submit_query(
    archive: Archive,
    tenant: int,
    ae_title: str,
    *,
    level: str,
    keys: Mapping[str, str],
    model: str = "study",
    limit: int | None = None,
) -> int:
    """Enqueue a C-FIND at a registered AE (PS3.4 C.4.1); the job id.

    Args:
        archive: The archive.
        tenant: The submitting tenant.
        ae_title: The remote AE.
        level: Query/Retrieve Level: PATIENT, STUDY, SERIES or IMAGE.
        keys: Matching and return keys: keyword or tag -> value ('' for a return key).
        model: ``study`` (Study Root) or ``patient`` (Patient Root).
        limit: Keep at most this many matches (default and cap:
            ``DICOMHUB_SCU_MAX_QUERY_RESULTS``).

    Raises:
        InvalidInput: bad level, model, key or value, too many keys, bad limit.
        NotFound: the AE is not registered.
    """
    settings = archive.settings
    if model not in scu.MODELS:
        raise InvalidInput("the model is 'study' or 'patient'")
    if len(keys) > settings.api_max_query_keys:
        raise InvalidInput(
            f"at most {settings.api_max_query_keys} keys (DICOMHUB_API_MAX_QUERY_KEYS)"
        )
    if any(len(v) > MAX_KEY_VALUE for v in keys.values()):
        raise InvalidInput(f"a key value has at most {MAX_KEY_VALUE} characters")
    cap = settings.scu_max_query_results
    if limit is not None and not 1 <= limit <= cap:
        raise InvalidInput(f"the limit is between 1 and {cap} (DICOMHUB_SCU_MAX_QUERY_RESULTS)")
    texts = [f"{k}={v}" for k, v in keys.items()]
    scu.identifier_from_keys(level, texts)  # refuse unknown keys now, not in the worker
    ae = _registered(archive, tenant, ae_title)
    payload = {
        "ae_title": ae.ae_title,
        "level": level,
        "model": model,
        "keys": dict(keys),
        "limit": limit or cap,
    }
    with archive.db.write() as conn:
        return jobs.enqueue(conn, KINDS["query"], payload, tenant_id=tenant)


def submit_retrieve(
    archive: Archive,
    tenant: int,
    ae_title: str,
    refs: Sequence[scu.Ref],
    *,
    method: str = "get",
    model: str = "study",
) -> int:
    """Enqueue a C-GET or C-MOVE of ``refs`` from a registered AE into this archive; the job id.

    Raises:
        InvalidInput: no or too many references, bad method or model, or C-MOVE while this
            archive's DIMSE server is off.
        NotFound: the AE is not registered.
        Conflict: C-MOVE from an AE that may not store to us (its sub-operations would be
            refused).
    """
    _bounded(archive, refs)
    if method not in scu.METHODS:
        raise InvalidInput("the method is 'get' or 'move'")
    if model not in scu.MODELS:
        raise InvalidInput("the model is 'study' or 'patient'")
    ae = _registered(archive, tenant, ae_title)
    if method == "move":
        if archive.settings.dimse_port == 0:
            raise InvalidInput("C-MOVE needs this archive's DIMSE server (DICOMHUB_DIMSE_PORT)")
        if not ae.may_store:
            raise Conflict(f"AE {ae.ae_title!r} may not store here: C-MOVE cannot deliver")
    payload = {
        "ae_title": ae.ae_title,
        "items": [_ref_json(r) for r in refs],
        "method": method,
        "model": model,
    }
    with archive.db.write() as conn:
        return jobs.enqueue(conn, KINDS["retrieve"], payload, tenant_id=tenant)


def _ref_json(ref: scu.Ref) -> dict[str, str]:
    return {k: v for k, v in asdict(ref).items() if v}


def refs_of(payload: Mapping[str, Any]) -> list[scu.Ref]:
    """The references of a send or retrieve job's payload."""
    return [scu.Ref(**item) for item in payload["items"]]


def get(archive: Archive, tenant: int, job_id: int) -> jobs.JobRow:
    """A job of ``tenant`` (internal jobs are not visible).

    Raises:
        NotFound: no such job in the tenant.
    """
    with archive.db.read() as conn:
        row = jobs.get(conn, tenant, job_id)
    if row is None:
        raise NotFound("no such job")
    return row


def list_page(
    archive: Archive, tenant: int, *, limit: int, offset: int, state: str | None = None
) -> tuple[list[jobs.JobRow], int]:
    """A page of the jobs of ``tenant`` (newest first, without results) and the total count.

    Raises:
        InvalidInput: unknown state, or a limit or offset out of bounds.
    """
    if state is not None and state not in jobs.STATES:
        raise InvalidInput(f"the state is one of {', '.join(jobs.STATES)}")
    if not 1 <= limit <= archive.settings.api_max_page:
        raise InvalidInput(f"the limit is between 1 and {archive.settings.api_max_page}")
    if not 0 <= offset <= 10**9:
        raise InvalidInput("the offset is a non-negative integer")
    with archive.db.read() as conn:
        return jobs.list_jobs(conn, tenant, limit=limit, offset=offset, state=state)


def cancel(archive: Archive, tenant: int, job_id: int) -> jobs.JobRow:
    """Cancel a job that is queued (or waiting to be retried); the cancelled job (idempotent).

    Raises:
        NotFound: no such job in the tenant.
        Conflict: the job is running or already finished.
    """
    with archive.db.write() as conn:
        cancelled = jobs.cancel(conn, tenant, job_id)
    row = get(archive, tenant, job_id)
    if not cancelled and row.state != jobs.CANCELLED:
        raise Conflict(f"job {job_id} is {row.state}: only a queued job can be cancelled")
    return row
