"""pynetdicom event handlers: association policy, C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET.

Handlers run on pynetdicom's association threads and call the same synchronous services as the
web edge (``ingest``, ``search``, ``retrieve``). Every domain error is translated once, by
:mod:`dicomhub.dimse.status`. Each association is bound, when it is requested, to the remote AE
it comes from (:mod:`dicomhub.services.peers`); that AE's tenant scopes everything it stores or
sees, and its rights gate each service (PS3.7 Annex C.5: 0124 Refused: Not Authorized).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Final

from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info

from dicomhub.config import Settings
from dicomhub.dimse import status as st
from dicomhub.dimse.query import key_text, parse_identifier, query_level, result_identifier
from dicomhub.dimse.transfer import StoredRef, contexts_for
from dicomhub.domain.query import Level
from dicomhub.errors import InvalidInput
from dicomhub.services import ingest, peers, retrieve
from dicomhub.services.archive import DEFAULT_TENANT, Archive
from dicomhub.services.search import search
from dicomhub.services.spool import Spool
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
    """The state shared by the handlers of one DIMSE server."""

    def __init__(self, archive: Archive, settings: Settings) -> None:
        self.archive = archive
        self.settings = settings
        self.base_url = f"http://{settings.host}:{settings.port}{settings.base_path}"
        self._peers: weakref.WeakKeyDictionary[Any, peers.RemoteAE] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def handlers(self) -> list[tuple[Any, Any]]:
        """``(event, handler)`` pairs for ``AE.start_server(evt_handlers=...)``."""
        from pynetdicom import evt

        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_CONN_CLOSE, self.on_conn_close),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_C_MOVE, self.on_move),
        ]

    # -----------------------------------------------------------------------------------------
    # association policy (PS3.8 §7.1.1.2: A-ASSOCIATE-RJ result/source/diagnostic)

    def on_requested(self, event: Any) -> None:
        """Accept or reject an association request by calling AE title, host and load."""
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        address = str(assoc.requestor.address)
        try:
            peer = peers.find_calling(
                self.archive, calling, address, check_host=self.settings.dimse_check_host
            )
        except Exception:
            log.exception("AE registry unavailable")
            _reject(assoc, 0x02, 0x01, 0x01)  # transient, user, no reason given
            return
        if peer is None and self.settings.dimse_open_ingest:
            peer = peers.RemoteAE(
                DEFAULT_TENANT, calling or "?", address, 0, True, False, False, False
            )
        if peer is None:
            log.warning("association from unknown AE %r at %s rejected", calling, address)
            _reject(assoc, 0x01, 0x01, 0x03)  # permanent, user, calling AE not recognised
            return
        with self._lock:
            alive = [p for a, p in self._peers.items() if a.is_alive()]
            mine = sum(
                1 for p in alive if (p.tenant_id, p.ae_title) == (peer.tenant_id, peer.ae_title)
            )
            if (
                len(alive) >= self.settings.dimse_max_associations
                or mine >= self.settings.dimse_max_associations_per_ae
            ):
                log.warning("association from %r rejected: association limit reached", calling)
                _reject(assoc, 0x02, 0x03, 0x02)  # transient, presentation, local limit
                return
            self._peers[assoc] = peer

    def on_conn_close(self, event: Any) -> None:
        """End at once an acceptor whose peer hung up before sending A-ASSOCIATE-RQ.

        pynetdicom's reactor would otherwise wait out the whole ACSE timeout for a request
        that cannot come, holding two threads: a flood of bare TCP connections must not pile
        those up. An empty item in the DUL's queue is what its reactor reads as a timeout.
        """
        assoc = event.assoc
        if assoc.is_acceptor and assoc.requestor.primitive is None:
            assoc.dul.to_user_queue.put(None)

    def peer(self, event: Any) -> peers.RemoteAE:
        """The remote AE of the event's association."""
        with self._lock:
            return self._peers[event.assoc]

    # -----------------------------------------------------------------------------------------
    # services

    def on_echo(self, event: Any) -> int:
        """C-ECHO (PS3.4 A.4): success."""
        return st.SUCCESS

    def on_store(self, event: Any) -> int | Dataset:
        """C-STORE (PS3.4 B.2.2): the received data set, as sent, through the ingest service.

        The data set is written without decoding or re-encoding behind File Meta Information
        built from the command and the presentation context (PS3.10 §7.1), then prepared
        (parsed, validated) and committed exactly like a STOW-RS part. The data set's own UIDs
        are authoritative (as for STOW-RS); an Affected SOP Instance UID that differs (a
        sender copying a stale File Meta header) does not refuse the instance.
        """
        peer = self.peer(event)
        if not peer.may_store:
            return st.failure(st.NOT_AUTHORIZED, f"AE {peer.ae_title} may not store")
        spool = Spool(self.settings.tmp_dir, self.settings.max_instance_bytes)
        try:
            spool.write(_part10_head(event))
            spool.write(event.request.DataSet.getbuffer())
            sha = spool.finish()
            prepared = ingest.prepare(self.archive, spool, sha)
        except Exception as exc:
            spool.discard()
            return st.from_error(st.Service.STORE, exc)
        try:
            outcome = ingest.commit(self.archive, peer.tenant_id, [prepared])[0]
        except Exception as exc:
            return st.from_error(st.Service.STORE, exc)
        if isinstance(outcome, Exception):
            return st.from_error(st.Service.STORE, outcome)
        return st.SUCCESS

    def on_find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """C-FIND (PS3.4 C.4.1.3): pending responses from the shared search service."""
        peer = self.peer(event)
        if not peer.may_query:
            yield st.failure(st.NOT_AUTHORIZED, f"AE {peer.ae_title} may not query"), None
            return
        model = str(event.request.AffectedSOPClassUID)
        try:
            request = parse_identifier(
                event.identifier, model, self.settings.dimse_max_find_results
            )
            result = search(self.archive, peer.tenant_id, request.query, self.base_url)
        except Exception as exc:
            yield st.from_error(st.Service.FIND, exc), None
            return
        if result.truncated:
            log.info("C-FIND answered with the first %d matches", len(result.items))
        for item in result.items:
            if event.is_cancelled:
                yield st.CANCEL, None
                return
            yield st.PENDING, result_identifier(item, request, self.settings.ae_title)

    def on_get(self, event: Any) -> Iterator[Any]:
        """C-GET (PS3.4 C.4.3.3): C-STORE sub-operations on the same association."""
        peer = self.peer(event)
        if not peer.may_retrieve:
            yield 1
            yield st.failure(st.NOT_AUTHORIZED, f"AE {peer.ae_title} may not retrieve"), None
            return
        try:
            records = self._matches(peer, event)
        except Exception as exc:
            yield 1
            yield st.from_error(st.Service.GET, exc), None
            return
        yield len(records)
        for rec in records:
            if event.is_cancelled:
                yield st.CANCEL, None
                return
            yield st.PENDING, StoredRef(self.archive, rec)

    def on_move(self, event: Any) -> Iterator[Any]:
        """C-MOVE (PS3.4 C.4.2.3): C-STORE sub-operations to a registered destination."""
        peer = self.peer(event)
        destination = str(event.move_destination or "").strip()
        dest = peers.get(self.archive, peer.tenant_id, destination) if destination else None
        failure: Dataset | None = None
        records: list[Any] = []
        if not peer.may_retrieve:
            failure = st.failure(st.NOT_AUTHORIZED, f"AE {peer.ae_title} may not retrieve")
        elif dest is None or not dest.is_move_destination:
            failure = st.failure(
                st.MOVE_DESTINATION_UNKNOWN, f"Move destination {destination!r} unknown"
            )
        else:
            try:
                records = self._matches(peer, event)
            except Exception as exc:
                failure = st.from_error(st.Service.MOVE, exc)
        if failure is not None or dest is None:
            # pynetdicom answers (None, None) with A801 itself, before any association with
            # a destination; the response is given our status and comment on the way out.
            _override_next_response(event.assoc, failure)
            yield None, None
            return
        yield dest.host, dest.port, {"contexts": contexts_for(records)}
        yield len(records)
        for rec in records:
            if event.is_cancelled:
                yield st.CANCEL, None
                return
            yield st.PENDING, StoredRef(self.archive, rec)

    def _matches(self, peer: peers.RemoteAE, event: Any) -> list[Any]:
        """The instances a C-MOVE/C-GET identifier names (PS3.4 C.4.2.2.1: unique keys)."""
        identifier: Dataset = event.identifier
        model = str(event.request.AffectedSOPClassUID)
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


def _reject(assoc: Any, result: int, source: int, diagnostic: int) -> None:
    """Send A-ASSOCIATE-RJ and end the association, as pynetdicom's own ACSE checks do."""
    from pynetdicom import evt

    assoc.acse.send_reject(result, source, diagnostic)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def _part10_head(event: Any) -> bytes:
    """Preamble, ``DICM`` and File Meta Information for the received data set (PS3.10 §7.1)."""
    from io import BytesIO

    from pydicom.filebase import DicomFileLike

    buf = BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(DicomFileLike(buf), event.file_meta, enforce_standard=True)
    return buf.getvalue()


def _override_next_response(assoc: Any, status: Dataset | None) -> None:
    """Give the next DIMSE response sent on ``assoc`` our Status and Error Comment.

    pynetdicom's C-MOVE SCP builds the response to a ``(None, None)`` destination itself
    (A801, no comment); the DIMSE provider's next ``send_msg`` on this association is that
    response, so it is amended there (PS3.7 §9.1.4.1.4: Error Comment is optional there).
    """
    if status is None:
        return
    dimse = assoc.dimse
    original = dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        dimse.send_msg = original
        primitive.Status = int(status.Status)
        primitive.ErrorComment = str(status.ErrorComment)
        original(primitive, context_id)

    dimse.send_msg = send_msg
