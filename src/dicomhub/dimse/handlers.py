"""The DIMSE gateway: association policy, C-STORE, C-FIND, C-MOVE and C-GET services.

Called from the association threads (:mod:`dicomhub.dimse.association`), it uses the same
synchronous services as the web edge (``ingest``, ``search``, ``retrieve``). Every domain
error is translated once, by :mod:`dicomhub.dimse.status`. Each association is bound, when it
is requested, to the remote AE it comes from (:mod:`dicomhub.services.peers`); that AE's tenant
scopes everything it stores or sees, and its rights gate each service (PS3.7 Annex C.5: 0124
Refused: Not Authorized).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from pydicom.dataset import Dataset

from dicomhub.config import Settings
from dicomhub.dimse import status as st
from dicomhub.dimse.limits import AssociationTable
from dicomhub.dimse.query import FindRequest, key_text, parse_identifier, query_level
from dicomhub.dimse.transfer import StoredRef, configure, contexts_for
from dicomhub.domain.query import Level
from dicomhub.errors import InvalidInput
from dicomhub.services import ingest, peers, retrieve
from dicomhub.services.archive import DEFAULT_TENANT, Archive
from dicomhub.services.search import search
from dicomhub.services.spool import Spool
from dicomhub.storage.index.records import InstanceRecord
from dicomhub.web.dicomweb.qido_params import parse_query

log = logging.getLogger(__name__)

#: Most C-STORE sub-operations of one C-MOVE/C-GET: the response counters are US (PS3.4 C.4.2.3).
MAX_SUBOPERATIONS: Final = 65535
_UNIQUE_KEYS: Final = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_LEVEL_KEY: Final = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.INSTANCE: "SOPInstanceUID",
}


class Gateway:
    """The policy and services behind every association of one DIMSE server.

    Transport-free: :mod:`dicomhub.dimse.association` calls it with decoded requests and turns
    its answers into DIMSE messages.
    """

    def __init__(self, archive: Archive, settings: Settings) -> None:
        self.archive = archive
        self.settings = settings
        self.base_url = f"http://{settings.host}:{settings.port}{settings.base_path}"
        self._slots: dict[int, int] = {}
        self._lock = threading.Lock()
        self.table = AssociationTable(table_path(settings), settings.dimse_max_associations)

    # -----------------------------------------------------------------------------------------
    # association policy (PS3.8 §7.1.1.2: A-ASSOCIATE-RJ result/source/diagnostic)

    def admit(self, owner: object, calling: str, address: str) -> peers.RemoteAE | Rejection:
        """The remote AE an association request comes from, or why it is rejected.

        Args:
            owner: The association (its identity keys the count until :meth:`leave`).
            calling: The Calling AE Title.
            address: The peer's IP address.

        Returns:
            The remote AE, or ``(result, source, reason)`` for A-ASSOCIATE-RJ.
        """
        settings = self.settings
        try:
            peer = peers.find_calling(
                self.archive, calling, address, check_host=settings.dimse_check_host
            )
        except Exception:
            log.exception("AE registry unavailable")
            return (2, 1, 1)  # transient, user, no reason given
        if peer is None and settings.dimse_open_ingest:
            peer = peers.RemoteAE(
                DEFAULT_TENANT, calling or "?", address, 0, True, False, False, False
            )
        if peer is None:
            log.warning("association from an unknown AE at %s rejected", address)
            return (1, 1, 3)  # permanent, user, calling AE title not recognised
        slot = self.table.claim(
            peer.tenant_id, peer.ae_title, settings.dimse_max_associations_per_ae
        )
        if slot is None:
            log.warning("association from %s rejected: association limit reached", address)
            return (2, 3, 2)  # transient, presentation, local limit exceeded
        with self._lock:
            self._slots[id(owner)] = slot
        return peer

    def leave(self, owner: object) -> None:
        """Forget an association (it ended): its slot in the association table is freed."""
        with self._lock:
            slot = self._slots.pop(id(owner), None)
        if slot is not None:
            self.table.release(slot)

    def close(self) -> None:
        """Release the association table."""
        self.table.close()

    # -----------------------------------------------------------------------------------------
    # services

    def store(
        self, peer: peers.RemoteAE, spool: Spool, ahead: ingest.Reservations | None = None
    ) -> tuple[int, str | None]:
        """C-STORE (PS3.4 B.2.2): a received Part-10 spool through the ingest service.

        The data set was written as received behind File Meta Information built from the
        command and the presentation context (PS3.10 §7.1), then it is prepared (parsed,
        validated) and committed exactly like a STOW-RS part. The data set's own UIDs are
        authoritative (as for STOW-RS); an Affected SOP Instance UID that differs (a sender
        copying a stale File Meta header) does not refuse the instance.

        ``ahead`` holds the association's blob key reserved for its next instance (one index
        transaction fewer per C-STORE, see :class:`~dicomhub.services.ingest.Reservations`).

        Returns:
            ``(status, error comment)`` for the C-STORE-RSP (PS3.4 B.2.3).
        """
        if not peer.may_store:
            spool.discard()
            return st.NOT_AUTHORIZED, f"AE {peer.ae_title} may not store"
        try:
            sha = spool.finish()
            prepared = ingest.prepare(self.archive, spool, sha)
        except Exception as exc:
            spool.discard()
            return _pair(st.from_error(st.Service.STORE, exc))
        try:
            outcome = ingest.commit(self.archive, peer.tenant_id, [prepared], ahead=ahead)[0]
        except Exception as exc:
            return _pair(st.from_error(st.Service.STORE, exc))
        if isinstance(outcome, Exception):
            return _pair(st.from_error(st.Service.STORE, outcome))
        return st.SUCCESS, None

    def find(
        self, peer: peers.RemoteAE, model: str, identifier: Dataset
    ) -> Dataset | tuple[FindRequest, list[dict[str, Any]]]:
        """C-FIND (PS3.4 C.4.1.3): the parsed request and its matches, or a failure status.

        The matches (DICOM JSON) come from the shared search service, the same query model as
        QIDO-RS; :func:`~dicomhub.dimse.query.encode_result` makes each a pending response.
        """
        if not peer.may_query:
            return st.failure(st.NOT_AUTHORIZED, f"AE {peer.ae_title} may not query")
        try:
            request = parse_identifier(identifier, model, self.settings.dimse_max_find_results)
            result = search(self.archive, peer.tenant_id, request.query, self.base_url)
        except Exception as exc:
            return st.from_error(st.Service.FIND, exc)
        if result.truncated:
            log.info("C-FIND answered with the first %d matches", len(result.items))
        return request, result.items

    def move_destination(self, peer: peers.RemoteAE, title: str) -> peers.RemoteAE | None:
        """The registered move destination ``title`` of the peer's tenant (PS3.4 C.4.2.2.2)."""
        dest = peers.get(self.archive, peer.tenant_id, title) if title else None
        return dest if dest is not None and dest.is_move_destination else None

    @contextlib.contextmanager
    def connect(
        self, dest: peers.RemoteAE, records: list[InstanceRecord], originator: str
    ) -> Iterator[Callable[[InstanceRecord, int], int] | None]:
        """An association with a move destination: yields a C-STORE sender, or None.

        The sender stores one record as stored (no decode, PS3.4 C.4.2.3.1) with the Move
        Originator AE Title and Message ID, and returns the sub-operation's status.
        """
        from pynetdicom import AE

        configure()
        ae = AE(ae_title=self.settings.ae_title)
        ae.acse_timeout = self.settings.dimse_acse_timeout_s
        ae.dimse_timeout = self.settings.dimse_timeout_s
        ae.network_timeout = self.settings.dimse_idle_timeout_s
        assoc = ae.associate(
            dest.host, dest.port, contexts=contexts_for(records), ae_title=dest.ae_title
        )
        if not assoc.is_established:
            yield None
            return

        def send(rec: InstanceRecord, message_id: int) -> int:
            try:
                status = assoc.send_c_store(
                    StoredRef(self.archive, rec),
                    originator_aet=originator or None,
                    originator_id=message_id,
                )
            except Exception:
                log.warning("C-MOVE sub-operation could not be sent", exc_info=True)
                return st.PROCESSING_FAILURE
            return int(status.Status) if "Status" in status else st.PROCESSING_FAILURE

        try:
            yield send
        finally:
            if assoc.is_established:
                assoc.release()

    def matches(self, peer: peers.RemoteAE, model: str, identifier: Dataset) -> list[Any]:
        """The instances a C-MOVE/C-GET identifier names (PS3.4 C.4.2.2.1: unique keys).

        Raises:
            InvalidInput: no unique key at the Query/Retrieve Level, or a malformed one.
        """
        level = query_level(identifier, model)
        params: list[tuple[str, str]] = []
        for keyword in _UNIQUE_KEYS:
            text = key_text(identifier[keyword]) if keyword in identifier else ""
            if text:
                params.append((keyword, text))
        if not any(name == _LEVEL_KEY[level] for name, _ in params):
            raise InvalidInput(f"{_LEVEL_KEY[level]} is required at {level.value} level")
        query = parse_query(
            params,
            level=Level.INSTANCE,
            default_limit=MAX_SUBOPERATIONS,
            max_limit=MAX_SUBOPERATIONS,
        )
        return retrieve.match_instances(self.archive, peer.tenant_id, query)


def table_path(settings: Settings) -> Path:
    """The association table of the DIMSE port (see :mod:`dicomhub.dimse.limits`)."""
    return settings.data_dir / "run" / f"dimse-{settings.dimse_port}.associations"


#: ``(result, source, reason/diagnostic)`` of an A-ASSOCIATE-RJ (PS3.8 Table 9-21).
Rejection = tuple[int, int, int]


def _pair(status: Dataset) -> tuple[int, str | None]:
    return int(status.Status), str(status.get("ErrorComment", "") or "") or None
