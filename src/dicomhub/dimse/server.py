"""The DIMSE server (SCP): one pynetdicom Application Entity per ``dicomhub serve``.

It listens on ``settings.dimse_port`` (0 = off) as ``settings.ae_title`` and offers (see
``docs/conformance.md``): Verification (PS3.4 Annex A), every Storage SOP Class (PS3.4 Annex B,
unrestricted: private and future classes too), and Query/Retrieve FIND, MOVE and GET in the
Patient Root and Study Root models (PS3.4 Annex C).

Bounds: at most ``dimse_max_associations`` associations at once (more are rejected with
A-ASSOCIATE-RJ transient / local limit exceeded, PS3.8 §7.1.1.2), ``dimse_max_associations_per_ae``
per calling AE, a maximum PDU length (PS3.8 Annex D.1), and ACSE, DIMSE and network (idle)
timeouts. Accepted sockets have TCP_NODELAY set.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Final

from dicomhub.config import Settings
from dicomhub.dimse.handlers import Gateway
from dicomhub.dimse.transfer import configure
from dicomhub.services.archive import Archive

log = logging.getLogger(__name__)

#: Pending TCP connections the listening socket queues (a burst of modalities reconnecting).
LISTEN_BACKLOG: Final = 128

QR_MODELS: Final = (
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root Q/R Information Model - MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root Q/R Information Model - GET
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Q/R Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root Q/R Information Model - MOVE
    "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root Q/R Information Model - GET
)
VERIFICATION: Final = "1.2.840.10008.1.1"


def _server_class() -> type[Any]:
    from pynetdicom.transport import ThreadedAssociationServer

    class Server(ThreadedAssociationServer):
        """pynetdicom's threaded server with TCP_NODELAY, daemon threads and a deeper backlog."""

        daemon_threads = True
        request_queue_size = LISTEN_BACKLOG

        def get_request(self) -> tuple[socket.socket, Any]:
            sock, address = super().get_request()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock, address

    return Server


def build_ae(settings: Settings) -> Any:
    """The Application Entity with our contexts, limits and timeouts."""
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts

    configure()
    ae = AE(ae_title=settings.ae_title)
    # The configured limit counts associations bound to a known AE (handlers.Gateway); this
    # hard cap also counts connections still negotiating or winding down.
    ae.maximum_associations = 2 * settings.dimse_max_associations
    ae.maximum_pdu_size = settings.dimse_max_pdu
    ae.acse_timeout = settings.dimse_acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.dimse_idle_timeout_s
    ae.require_called_aet = True
    ae.add_supported_context(VERIFICATION)
    for model in QR_MODELS:
        ae.add_supported_context(model)
    # Listed for completeness: with the unrestricted storage service pynetdicom accepts every
    # storage-like context (any transfer syntax) whatever is listed here.
    for cx in StoragePresentationContexts:
        ae.add_supported_context(
            str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
        )
    return ae


class DimseServer:
    """A running DIMSE SCP over an archive."""

    def __init__(self, archive: Archive, settings: Settings) -> None:
        self.archive = archive
        self.settings = settings
        self.gateway = Gateway(archive, settings)
        self._ae: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured as an ephemeral one)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in a background thread."""
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        self._ae = build_ae(self.settings)
        host = self.settings.dimse_host or self.settings.host
        self._server = self._ae.make_server(
            (host, self.settings.dimse_port),
            evt_handlers=self.gateway.handlers(),
            server_class=_server_class(),
        )
        self._ae._servers.append(self._server)  # as AE.start_server does; shutdown() removes it
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dimse-server", daemon=True
        )
        self._thread.start()
        log.info("dicomhub serving DIMSE as %s on %s:%d", self.settings.ae_title, host, self.port)

    def stop(self) -> None:
        """Stop accepting, abort open associations and wait for the listener to end."""
        if self._server is None:
            return
        self._server.shutdown()
        for assoc in list(self._server.active_associations):
            assoc.abort()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
