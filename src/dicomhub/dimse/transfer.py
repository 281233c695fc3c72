"""Moving stored files over DIMSE unchanged, and the pynetdicom process settings it needs.

Stored instances are sent exactly as stored (no decode, no re-encode): pynetdicom sends a file
path raw when ``STORE_SEND_CHUNKED_DATASET`` is on, and looks for an accepted presentation
context with the file's own transfer syntax (PS3.8 §9.3.2.2: one per context). Its C-GET and
C-MOVE SCPs only pass :class:`~pydicom.dataset.Dataset` objects to ``send_c_store``, so the
handlers yield a :class:`StoredRef` stand-in and :func:`configure` wraps ``send_c_store`` to send
the referenced file instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from pydicom.dataset import Dataset

from dicomhub.services.archive import Archive
from dicomhub.storage.index.records import InstanceRecord

#: Most presentation contexts one association may propose (PS3.8 §9.3.2.2: odd IDs 1-255).
MAX_CONTEXTS: Final = 128

_configured = False


class StoredRef(Dataset):
    """A stored instance handed to pynetdicom's C-GET/C-MOVE SCP in place of a data set."""

    def __init__(self, archive: Archive, record: InstanceRecord) -> None:
        super().__init__()
        self.SOPClassUID = record.sop_class_uid
        self.SOPInstanceUID = record.sop_uid
        object.__setattr__(self, "_dicomhub_ref", (archive, record))

    @contextlib.contextmanager
    def path(self) -> Iterator[Path]:
        """A local path to the stored file (a temporary copy when the store is remote)."""
        archive, record = object.__getattribute__(self, "_dicomhub_ref")
        local = archive.blobs.local_path(record.blob_key)
        if local is not None:
            yield Path(local)
            return
        fd, name = tempfile.mkstemp(prefix="send-", dir=archive.settings.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in archive.blobs.open_range(record.blob_key):
                    f.write(chunk)
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)


def contexts_for(records: Iterable[InstanceRecord]) -> list[Any]:
    """Presentation contexts to propose for sending ``records`` as stored.

    One context per (SOP Class, Transfer Syntax) pair, so the acceptor can accept each
    encoding; past :data:`MAX_CONTEXTS` pairs, one context per SOP Class with its syntaxes.
    """
    from pynetdicom import build_context

    pairs = dict.fromkeys((r.sop_class_uid, r.transfer_syntax_uid) for r in records)
    if len(pairs) <= MAX_CONTEXTS:
        return [build_context(sop, [ts]) for sop, ts in pairs]
    by_class: dict[str, list[str]] = {}
    for sop, ts in pairs:
        by_class.setdefault(sop, []).append(ts)
    return [build_context(sop, syntaxes) for sop, syntaxes in list(by_class.items())[:128]]


def configure() -> None:
    """Process-wide pynetdicom settings for dicomhub (idempotent).

    * ``UNRESTRICTED_STORAGE_SERVICE``: accept every storage SOP Class, known or private.
    * ``STORE_SEND_CHUNKED_DATASET``: send files raw, read in chunks.
    * no logging of identifiers or per-message handler chatter (PHI, and cost).
    * TCP_NODELAY on requestor sockets (accepted sockets are set by the server): DIMSE
      messages are written in pieces, and Nagle plus delayed ACKs would add ~40 ms to each.
    * ``send_c_store`` sends the file behind a :class:`StoredRef`.
    """
    global _configured
    if _configured:
        return
    from pynetdicom import _config
    from pynetdicom.association import Association
    from pynetdicom.transport import AssociationSocket

    _config.UNRESTRICTED_STORAGE_SERVICE = True
    _config.STORE_SEND_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    # Identifiers hold patient names and IDs: never log them (and never decode them to log).
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False

    create_socket = AssociationSocket._create_socket

    def _create_socket(self: Any, address: Any) -> socket.socket:
        sock: socket.socket = create_socket(self, address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    AssociationSocket._create_socket = _create_socket  # type: ignore[method-assign]

    send_c_store = Association.send_c_store

    def _send_c_store(self: Any, dataset: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(dataset, StoredRef):
            with dataset.path() as path:
                return send_c_store(self, path, *args, **kwargs)
        return send_c_store(self, dataset, *args, **kwargs)

    Association.send_c_store = _send_c_store  # type: ignore[method-assign]
    _configured = True
