"""Known remote application entities (DIMSE peers) and the association policy on them.

A remote AE (PS3.7 §7.1.1.1: identified by its AE title, reached at a host and port) belongs to
one tenant and carries what it may do: store (C-STORE to us), query (C-FIND), retrieve (C-MOVE,
C-GET) and whether it may be named as a C-MOVE destination. ``dicomhub ae add|list|remove``
and the JSON API (``/api/aes``) manage the registry through these functions; the DIMSE server
reads it on every association request, so changes apply without a restart.
"""

from __future__ import annotations

import re
import socket
from dataclasses import asdict, dataclass, replace

from sqlalchemy.exc import IntegrityError as DbIntegrityError

from dicomhub.errors import Conflict, InvalidInput, NotFound
from dicomhub.services.archive import DEFAULT_TENANT, Archive
from dicomhub.storage.index import remote_ae as rows

__all__ = [
    "RemoteAE",
    "add",
    "find_calling",
    "get",
    "list_aes",
    "remove",
    "tenant_name",
    "update",
    "validate",
    "validate_ae_title",
]

#: PS3.5 §6.2 (VR AE): at most 16 characters.
AE_TITLE_MAX = 16
#: A host name (RFC 1123 labels), an IPv4 address or an IPv6 address (with an optional zone).
_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?")


@dataclass(frozen=True, slots=True)
class RemoteAE:
    """One known remote application entity."""

    tenant_id: int
    ae_title: str
    host: str
    port: int
    may_store: bool = True
    may_query: bool = True
    may_retrieve: bool = True
    is_move_destination: bool = True

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly dict."""
        return asdict(self)


def validate_ae_title(value: str) -> str:
    """The AE title without insignificant spaces (PS3.5 §6.2, VR AE).

    Raises:
        InvalidInput: empty or only spaces, longer than 16 characters, or with a backslash or
            control character.
    """
    title = value.strip(" ")
    if not title or len(title) > AE_TITLE_MAX:
        raise InvalidInput(f"an AE title has 1 to {AE_TITLE_MAX} characters (PS3.5 §6.2)")
    if "\\" in title or any(not (0x20 <= ord(c) < 0x7F) for c in title):
        raise InvalidInput("an AE title has printable ASCII characters but no backslash")
    return title


def tenant_id(archive: Archive, name: str | None) -> int:
    """The id of the tenant named ``name`` (the default tenant when ``None``)."""
    if name is None:
        return DEFAULT_TENANT
    with archive.db.read() as conn:
        found = rows.tenant_id_by_name(conn, name)
    if found is None:
        raise NotFound(f"no tenant named {name!r}")
    return found


def validate(ae: RemoteAE) -> RemoteAE:
    """``ae`` with its AE title normalised, once its title, host and port are checked.

    Raises:
        InvalidInput: bad AE title (PS3.5 §6.2), host or port (1-65535).
    """
    ae = replace(ae, ae_title=validate_ae_title(ae.ae_title))
    if not ae.host or len(ae.host) > 255 or not _HOST.fullmatch(ae.host):
        raise InvalidInput("the host is a host name or an IP address")
    if isinstance(ae.port, bool) or not 1 <= ae.port <= 65535:
        raise InvalidInput("the port must be between 1 and 65535")
    return ae


def add(archive: Archive, ae: RemoteAE) -> bool:
    """Register ``ae``; whether it is new (an identical registration is a no-op).

    Raises:
        InvalidInput: bad AE title, host or port.
        Conflict: the tenant already has this AE title with other settings.
    """
    ae = validate(ae)
    existing = get(archive, ae.tenant_id, ae.ae_title)
    if existing is not None:
        if existing == ae:
            return False
        raise Conflict(f"AE {ae.ae_title!r} is already registered with other settings")
    try:
        with archive.db.write() as conn:
            rows.insert_ae(conn, ae.to_dict())
    except DbIntegrityError as exc:  # a concurrent add of the same title
        raise Conflict(f"AE {ae.ae_title!r} is already registered") from exc
    return True


def update(archive: Archive, ae: RemoteAE) -> RemoteAE:
    """Replace the host, port and rights of a registered AE (of ``ae.tenant_id``).

    Raises:
        InvalidInput: bad AE title, host or port.
        NotFound: no such AE in the tenant.
    """
    ae = validate(ae)
    values = ae.to_dict()
    with archive.db.write() as conn:
        found = rows.update_ae(conn, values)
    if not found:
        raise NotFound(f"no AE {ae.ae_title!r} is registered")
    return ae


def remove(archive: Archive, tenant: int, ae_title: str) -> None:
    """Forget an AE of ``tenant``.

    Raises:
        NotFound: no such AE in the tenant.
    """
    with archive.db.write() as conn:
        found = rows.delete_ae(conn, tenant, ae_title.strip(" "))
    if not found:
        raise NotFound(f"no AE {ae_title.strip()!r} is registered")


def tenant_name(archive: Archive, tenant: int) -> str:
    """The name of tenant ``tenant``."""
    with archive.db.read() as conn:
        name = rows.tenant_name(conn, tenant)
    if name is None:
        raise NotFound(f"no tenant {tenant}")
    return name


def list_aes(archive: Archive, tenant: int | None = None) -> list[RemoteAE]:
    """Every registered AE (of one tenant, or of all)."""
    with archive.db.read() as conn:
        return [RemoteAE(**r) for r in rows.select_aes(conn, tenant_id=tenant)]


def get(archive: Archive, tenant: int, ae_title: str) -> RemoteAE | None:
    """The AE ``ae_title`` of ``tenant``, if registered."""
    with archive.db.read() as conn:
        found = rows.select_aes(conn, tenant_id=tenant, ae_title=ae_title.strip(" "))
    return RemoteAE(**found[0]) if found else None


def find_calling(
    archive: Archive, ae_title: str, address: str, *, check_host: bool
) -> RemoteAE | None:
    """The registered AE an association request comes from, or ``None`` (reject it).

    The calling AE title (PS3.8 §9.3.2) selects the candidates; with host checking, only those
    whose host is (or resolves to) the peer's IP address remain. Exactly one must remain: an AE
    title registered in two tenants is told apart by host, never guessed.
    """
    with archive.db.read() as conn:
        candidates = [RemoteAE(**r) for r in rows.select_aes(conn, ae_title=ae_title.strip(" "))]
    if check_host:
        candidates = [c for c in candidates if host_matches(c.host, address)]
    return candidates[0] if len(candidates) == 1 else None


def host_matches(host: str, address: str) -> bool:
    """Whether the registered ``host`` (name or address) is the peer IP ``address``."""
    if host == address:
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return any(info[4][0] == address for info in infos)
