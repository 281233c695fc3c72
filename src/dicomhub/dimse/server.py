"""The DIMSE server (SCP): a listening socket and one thread per association.

It listens on ``settings.dimse_port`` (0 = off) as ``settings.ae_title`` and offers (see
``docs/conformance.md``): Verification (PS3.4 Annex A), every Storage SOP Class (PS3.4 Annex B,
unrestricted: private and future classes too), and Query/Retrieve FIND, MOVE and GET in the
Patient Root and Study Root models (PS3.4 Annex C). Associations are served by
:mod:`dicomhub.dimse.association` (blocking I/O, one thread each; why not pynetdicom's acceptor
is explained there).

Bounds: at most ``dimse_max_associations`` admitted associations at once (more are rejected with
A-ASSOCIATE-RJ transient / local limit exceeded, PS3.8 §7.1.1.2), ``dimse_max_associations_per_ae``
per calling AE, and twice that many connections in all (beyond, a connection is closed at once:
connections that never send a request cannot pile up); a maximum PDU length (PS3.8 Annex D.1);
the ARTIM timeout for the association request, a DIMSE timeout for sub-operation responses and
an idle timeout. Accepted sockets have TCP_NODELAY set.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Final

from dicomhub.config import Settings
from dicomhub.dimse.association import Association
from dicomhub.dimse.handlers import Gateway, table_path
from dicomhub.dimse.limits import AssociationTable
from dicomhub.dimse.transfer import configure
from dicomhub.services.archive import Archive

log = logging.getLogger(__name__)

#: Pending TCP connections the listening socket queues (a burst of modalities reconnecting).
LISTEN_BACKLOG: Final = 128


def storage_syntaxes() -> frozenset[str]:
    """Transfer syntaxes accepted for storage: every one pynetdicom knows (PS3.5 Section 10)."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    return frozenset(str(ts) for ts in ALL_TRANSFER_SYNTAXES)


class DimseServer:
    """A running DIMSE SCP over an archive."""

    def __init__(self, archive: Archive, settings: Settings, *, shared: bool = False) -> None:
        """A server over ``archive``; ``shared``: other processes serve the same port.

        A shared server binds with ``SO_REUSEPORT`` and keeps the association table it finds
        (the process that starts the others resets it, see :func:`reset_shared`); a server of
        its own starts a fresh table.
        """
        self.archive = archive
        self.settings = settings
        self.shared = shared
        if not shared:
            AssociationTable.reset(table_path(settings))
        self.gateway = Gateway(archive, settings)
        self.storage_syntaxes = storage_syntaxes()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: set[Association] = set()
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        """The bound port (useful when configured as an ephemeral one)."""
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    @property
    def active_associations(self) -> int:
        """Open connections (negotiating, established or winding down)."""
        with self._lock:
            return len(self._connections)

    def start(self) -> None:
        """Bind and accept in a background thread."""
        configure()  # pynetdicom as the C-MOVE client: raw sends, TCP_NODELAY, no PHI logs
        host = self.settings.dimse_host or self.settings.host
        self._sock = socket.create_server(
            (host, self.settings.dimse_port), backlog=LISTEN_BACKLOG, reuse_port=self.shared
        )
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept, name="dimse-server", daemon=True)
        self._thread.start()
        log.info("dicomhub serving DIMSE as %s on %s:%d", self.settings.ae_title, host, self.port)

    def _accept(self) -> None:
        sock = self._sock
        assert sock is not None
        limit = 2 * self.settings.dimse_max_associations
        while not self._stopping.is_set():
            try:
                conn, address = sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if len(self._connections) >= limit:
                    conn.close()
                    continue
                assoc = Association(self, conn, address)
                self._connections.add(assoc)
            thread = threading.Thread(
                target=self._serve, args=(assoc,), name="dimse-association", daemon=True
            )
            thread.start()

    def _serve(self, assoc: Association) -> None:
        try:
            assoc.run()
        finally:
            with self._lock:
                self._connections.discard(assoc)

    def stop(self) -> None:
        """Stop accepting, abort open associations and wait for the listener to end."""
        if self._sock is None:
            return
        self._stopping.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        with self._lock:
            open_ = list(self._connections)
        for assoc in open_:
            assoc.abort()
        if self._thread is not None:
            self._thread.join(timeout=10)
        deadline = time.monotonic() + 5
        while self.active_associations and time.monotonic() < deadline:
            time.sleep(0.02)
        self._sock = None
        self.gateway.close()


def reset_shared(settings: Settings) -> None:
    """Before starting the processes that share the DIMSE port: a fresh association table.

    Also binds the port once (and lets it go), so that a port held by another program fails
    here, with one clear error, rather than in every server process.

    Raises:
        OSError: the DIMSE port cannot be bound.
    """
    host = settings.dimse_host or settings.host
    with socket.create_server((host, settings.dimse_port)):
        pass
    AssociationTable.reset(table_path(settings))
