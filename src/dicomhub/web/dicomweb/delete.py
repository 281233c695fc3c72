"""Delete of studies, series and instances (``DELETE`` on the WADO-RS paths).

Not part of PS3.18's Studies Service, but offered by every archive (dcm4chee, Orthanc, the
cloud APIs). The resources disappear from queries and retrieval at once; their blobs are
removed by a background job that survives restarts.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomhub.domain.uids import validate_uid
from dicomhub.services import delete as delete_service
from dicomhub.web.context import archive_of, tenant_of


async def delete_resource(request: Request) -> Response:
    """DELETE a study, series or instance: 204 on success, 404 when it does not exist."""
    p = request.path_params
    study = validate_uid(p["study"], "Study Instance UID")
    series = validate_uid(p["series"], "Series Instance UID") if "series" in p else None
    sop = validate_uid(p["instance"], "SOP Instance UID") if "instance" in p else None
    await run_in_threadpool(
        delete_service.delete, archive_of(request), tenant_of(request), study, series, sop
    )
    return Response(status_code=204)


def routes() -> list[BaseRoute]:
    """Delete routes, relative to the DICOMweb root."""
    st = "/studies/{study}"
    se = st + "/series/{series}"
    return [
        Route(st, delete_resource, methods=["DELETE"]),
        Route(se, delete_resource, methods=["DELETE"]),
        Route(se + "/instances/{instance}", delete_resource, methods=["DELETE"]),
    ]
