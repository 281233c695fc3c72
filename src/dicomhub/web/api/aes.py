"""``/api/aes``: the registry of known remote AEs, and SCU operations on one of them as jobs.

The registry is :mod:`dicomhub.services.peers` (as ``dicomhub ae``); send, query and retrieve
are submitted through :mod:`dicomhub.services.scu_jobs` and answered ``202 Accepted`` with the
job's URL (``Location``). A client acts for its tenant (:func:`~dicomhub.web.context.tenant_of`):
it sees and manages that tenant's AEs and jobs only.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from dicomhub.dimse import scu
from dicomhub.errors import InvalidInput, NotFound
from dicomhub.services import peers, scu_jobs
from dicomhub.web.api.body import integer, read_object, string, uid
from dicomhub.web.api.jobs import job_response
from dicomhub.web.context import archive_of, tenant_of

#: JSON permission names -> RemoteAE fields (what the remote AE may do with us).
PERMISSIONS: Final = {
    "store": "may_store",
    "query": "may_query",
    "retrieve": "may_retrieve",
    "move-destination": "is_move_destination",
}
_AE_FIELDS: Final = ("ae_title", "host", "port", "tenant", "permissions")
_REF_FIELDS: Final = ("study", "series", "instance")


def ae_json(ae: peers.RemoteAE, tenant_name: str) -> dict[str, Any]:
    """The JSON form of a registered AE."""
    return {
        "ae_title": ae.ae_title,
        "host": ae.host,
        "port": ae.port,
        "tenant": tenant_name,
        "permissions": [name for name, attr in PERMISSIONS.items() if getattr(ae, attr)],
    }


def _title(request: Request) -> str:
    return peers.validate_ae_title(str(request.path_params["title"]))


def _ae_url(request: Request, title: str) -> str:
    """The absolute URL of an AE (a title may hold spaces and other URL-special characters)."""
    return str(request.url_for("list_aes")) + "/" + quote(title, safe="")


def _check_tenant(request: Request, name: str | None) -> int:
    """The caller's tenant; a ``tenant`` member, if given, must name it."""
    tenant = tenant_of(request)
    if name is None:
        return tenant
    try:
        named = peers.tenant_id(archive_of(request), name)
    except NotFound as exc:
        raise InvalidInput(f"no tenant named {name[:64]!r}") from exc
    if named != tenant:
        raise InvalidInput("an AE can be registered in the caller's own tenant only")
    return tenant


def _ae_from(body: dict[str, Any], tenant: int, title: str) -> peers.RemoteAE:
    host = string(body, "host", required=True)
    port = integer(body, "port", required=True)
    assert host is not None and port is not None
    rights = body.get("permissions", list(PERMISSIONS))
    if not isinstance(rights, list) or not all(isinstance(r, str) for r in rights):
        raise InvalidInput("'permissions' must be a list of strings")
    unknown = [r for r in rights if r not in PERMISSIONS]
    if unknown:
        raise InvalidInput(f"unknown permission {unknown[0][:32]!r} ({', '.join(PERMISSIONS)})")
    flags = {attr: name in rights for name, attr in PERMISSIONS.items()}
    return peers.RemoteAE(tenant_id=tenant, ae_title=title, host=host, port=port, **flags)


async def list_aes(request: Request) -> Response:
    """``GET /api/aes``: the caller's tenant's registered AEs."""
    archive, tenant = archive_of(request), tenant_of(request)

    def work() -> list[dict[str, Any]]:
        name = peers.tenant_name(archive, tenant)
        return [ae_json(ae, name) for ae in peers.list_aes(archive, tenant)]

    return JSONResponse(await run_in_threadpool(work))


async def create_ae(request: Request) -> Response:
    """``POST /api/aes``: register an AE; 201 (200 when identical to the registered one)."""
    archive = archive_of(request)
    body = await read_object(request, _AE_FIELDS)
    tenant = _check_tenant(request, string(body, "tenant"))
    title = string(body, "ae_title", required=True)
    assert title is not None
    ae = peers.validate(_ae_from(body, tenant, title))

    def work() -> tuple[bool, dict[str, Any]]:
        new = peers.add(archive, ae)
        return new, ae_json(ae, peers.tenant_name(archive, tenant))

    new, out = await run_in_threadpool(work)
    headers = {"Location": _ae_url(request, ae.ae_title)}
    return JSONResponse(out, status_code=201 if new else 200, headers=headers)


async def ae_resource(request: Request) -> Response:
    """``GET``, ``PUT`` (replace host, port, permissions) and ``DELETE`` one AE."""
    archive, tenant = archive_of(request), tenant_of(request)
    title = _title(request)
    if request.method == "DELETE":
        await run_in_threadpool(peers.remove, archive, tenant, title)
        return Response(status_code=204)
    if request.method == "PUT":
        body = await read_object(request, _AE_FIELDS)
        _check_tenant(request, string(body, "tenant"))
        named = string(body, "ae_title")
        if named is not None and peers.validate_ae_title(named) != title:
            raise InvalidInput("'ae_title' differs from the AE title in the path")
        ae = _ae_from(body, tenant, title)
        await run_in_threadpool(peers.update, archive, ae)

    def work() -> dict[str, Any]:
        found = peers.get(archive, tenant, title)
        if found is None:
            raise NotFound(f"no AE {title!r} is registered")
        return ae_json(found, peers.tenant_name(archive, tenant))

    return JSONResponse(await run_in_threadpool(work))


def _refs(body: dict[str, Any], limit: int) -> list[scu.Ref]:
    """References from ``{"study", "series"?, "instance"?}`` or ``{"items": [...]}``."""
    items = body.get("items")
    if items is None:
        if "study" not in body:
            raise InvalidInput("give 'study' (with 'series', 'instance') or 'items'")
        items = [{k: body[k] for k in _REF_FIELDS if k in body}]
    elif any(k in body for k in _REF_FIELDS):
        raise InvalidInput("give either 'items' or 'study', not both")
    if not isinstance(items, list) or not items:
        raise InvalidInput("'items' must be a non-empty list")
    if len(items) > limit:
        raise InvalidInput(f"at most {limit} items per request (DICOMHUB_API_MAX_ITEMS)")
    refs = []
    for item in items:
        if not isinstance(item, dict) or set(item) - set(_REF_FIELDS) or "study" not in item:
            raise InvalidInput("an item is {'study': UID, 'series'?: UID, 'instance'?: UID}")
        if "instance" in item and "series" not in item:
            raise InvalidInput("an instance is named with its series")
        refs.append(
            scu.Ref(
                uid(item["study"], "'study'"),
                uid(item["series"], "'series'") if "series" in item else None,
                uid(item["instance"], "'instance'") if "instance" in item else None,
            )
        )
    return refs


async def _accepted(request: Request, job_id: int) -> Response:
    archive, tenant = archive_of(request), tenant_of(request)
    row = await run_in_threadpool(scu_jobs.get, archive, tenant, job_id)
    return job_response(request, row, status_code=202)


async def send(request: Request) -> Response:
    """``POST /api/aes/{title}/send``: C-STORE stored instances to the AE, as a job."""
    archive, tenant = archive_of(request), tenant_of(request)
    title = _title(request)
    body = await read_object(request, (*_REF_FIELDS, "items"))
    refs = _refs(body, archive.settings.api_max_items)
    job_id = await run_in_threadpool(scu_jobs.submit_send, archive, tenant, title, refs)
    return await _accepted(request, job_id)


async def query(request: Request) -> Response:
    """``POST /api/aes/{title}/query``: C-FIND the AE, as a job (the matches are its result)."""
    archive, tenant = archive_of(request), tenant_of(request)
    title = _title(request)
    body = await read_object(request, ("level", "model", "keys", "limit"))
    level = string(body, "level") or "STUDY"
    model = string(body, "model") or "study"
    limit = integer(body, "limit")
    keys = body.get("keys", {})
    if not isinstance(keys, dict):
        raise InvalidInput("'keys' must be an object: keyword or tag -> value")
    if len(keys) > archive.settings.api_max_query_keys:
        raise InvalidInput(
            f"at most {archive.settings.api_max_query_keys} keys (DICOMHUB_API_MAX_QUERY_KEYS)"
        )
    texts: dict[str, str] = {}
    for key, value in keys.items():
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise InvalidInput(f"the value of key {key[:64]!r} must be a string or null")
        texts[key] = value

    def work() -> int:
        return scu_jobs.submit_query(
            archive, tenant, title, level=level, keys=texts, model=model, limit=limit
        )

    return await _accepted(request, await run_in_threadpool(work))


async def retrieve(request: Request) -> Response:
    """``POST /api/aes/{title}/retrieve``: C-GET or C-MOVE from the AE into dicomhub, as a job."""
    archive, tenant = archive_of(request), tenant_of(request)
    title = _title(request)
    body = await read_object(request, (*_REF_FIELDS, "items", "method", "model"))
    refs = _refs(body, archive.settings.api_max_items)
    method = string(body, "method") or "get"
    model = string(body, "model") or "study"

    def work() -> int:
        return scu_jobs.submit_retrieve(archive, tenant, title, refs, method=method, model=model)

    return await _accepted(request, await run_in_threadpool(work))


def routes() -> list[BaseRoute]:
    """AE registry routes, relative to the API root."""
    return [
        Route("/aes", list_aes, methods=["GET"], name="list_aes"),
        Route("/aes", create_ae, methods=["POST"]),
        Route("/aes/{title}", ae_resource, methods=["GET", "PUT", "DELETE"], name="ae"),
        Route("/aes/{title}/send", send, methods=["POST"]),
        Route("/aes/{title}/query", query, methods=["POST"]),
        Route("/aes/{title}/retrieve", retrieve, methods=["POST"]),
    ]
