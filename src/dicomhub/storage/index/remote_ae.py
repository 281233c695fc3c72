"""Index access for the registry of known remote application entities (table ``remote_ae``)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from dicomhub.storage.index import tables as t

_T = t.remote_ae
_COLUMNS = (
    _T.c.tenant_id,
    _T.c.ae_title,
    _T.c.host,
    _T.c.port,
    _T.c.may_store,
    _T.c.may_query,
    _T.c.may_retrieve,
    _T.c.is_move_destination,
)


def insert_ae(conn: Connection, values: dict[str, Any]) -> None:
    """Insert one row (``values`` holds every column but ``pk`` and ``created_at``)."""
    conn.execute(insert(_T).values(**values, created_at=time.time()))


def update_ae(conn: Connection, values: dict[str, Any]) -> bool:
    """Replace host, port and rights of the AE ``values`` names; whether it exists."""
    key = (_T.c.tenant_id == values["tenant_id"]) & (_T.c.ae_title == values["ae_title"])
    changes = {k: v for k, v in values.items() if k not in ("tenant_id", "ae_title")}
    return bool(conn.execute(update(_T).where(key).values(**changes)).rowcount)


def delete_ae(conn: Connection, tenant_id: int, ae_title: str) -> bool:
    """Delete the AE ``ae_title`` of ``tenant_id``; whether it existed."""
    res = conn.execute(delete(_T).where(_T.c.tenant_id == tenant_id, _T.c.ae_title == ae_title))
    return bool(res.rowcount)


def select_aes(
    conn: Connection, *, tenant_id: int | None = None, ae_title: str | None = None
) -> list[dict[str, Any]]:
    """Rows (as dicts of :data:`_COLUMNS`), optionally of one tenant and/or one AE title."""
    stmt = select(*_COLUMNS).order_by(_T.c.tenant_id, _T.c.ae_title)
    if tenant_id is not None:
        stmt = stmt.where(_T.c.tenant_id == tenant_id)
    if ae_title is not None:
        stmt = stmt.where(_T.c.ae_title == ae_title)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def tenant_id_by_name(conn: Connection, name: str) -> int | None:
    """The id of the tenant called ``name``, if any."""
    row = conn.execute(select(t.tenant.c.id).where(t.tenant.c.name == name)).first()
    return None if row is None else int(row[0])


def tenant_name(conn: Connection, tenant_id: int) -> str | None:
    """The name of the tenant ``tenant_id``, if any."""
    row = conn.execute(select(t.tenant.c.name).where(t.tenant.c.id == tenant_id)).first()
    return None if row is None else str(row[0])
