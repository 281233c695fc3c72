"""One DIMSE association, acceptor side (PS3.8 §7, §9; PS3.7 §9): blocking, one thread each.

Why not pynetdicom's acceptor: its reactors poll (each association runs two threads that wake
every millisecond), which costs CPU per idle association and a millisecond or two of latency
per message, and it holds each C-STORE data set in memory before handing it over. Here one
thread per association blocks on its socket: an idle association costs nothing, a message is
handled the moment its last PDU arrives, and a C-STORE data set streams from the socket into its
spool file as its fragments arrive (bounded by the instance size limit). pynetdicom stays the
DIMSE client (C-MOVE sub-operations to the move destination, ``dicomhub send|query|retrieve``).

The state machine is the acceptor's path through PS3.8 §9.2 (Sta2 -> Sta3 -> Sta6 -> Sta13):
an A-ASSOCIATE-RQ within the ARTIM time, then P-DATA, until A-RELEASE-RQ (answered with
A-RELEASE-RP), A-ABORT, an idle timeout or a protocol error (answered with A-ABORT). Operations
run one at a time (no asynchronous operations window is negotiated, PS3.7 D.3.3.3).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Final

from pydicom.dataset import Dataset

from dicomhub.dimse import commands as cmd
from dicomhub.dimse import pdu
from dicomhub.dimse import status as st
from dicomhub.dimse.query import encode_result, result_identifier
from dicomhub.services.ingest import Reservations
from dicomhub.services.spool import Spool

if TYPE_CHECKING:
    from dicomhub.dimse.server import DimseServer
    from dicomhub.services.peers import RemoteAE
    from dicomhub.storage.index.records import InstanceRecord

log = logging.getLogger(__name__)

IMPLICIT_LE: Final = "1.2.840.10008.1.2"
EXPLICIT_LE: Final = "1.2.840.10008.1.2.1"
DEFLATED_LE: Final = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE: Final = "1.2.840.10008.1.2.2"
#: Transfer syntaxes for Verification and Query/Retrieve contexts (identifiers are decoded).
QUERY_SYNTAXES: Final = (IMPLICIT_LE, EXPLICIT_LE, DEFLATED_LE, EXPLICIT_BE)
VERIFICATION: Final = "1.2.840.10008.1.1"
FIND_MODELS: Final = frozenset({"1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1"})
MOVE_MODELS: Final = frozenset({"1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2"})
GET_MODELS: Final = frozenset({"1.2.840.10008.5.1.4.1.2.1.3", "1.2.840.10008.5.1.4.1.2.2.3"})
QR_MODELS: Final = FIND_MODELS | MOVE_MODELS | GET_MODELS
#: Largest C-FIND/C-MOVE/C-GET identifier accepted.
MAX_IDENTIFIER: Final = 1 << 20
#: Read limit when the configured Maximum Length is 0 (unlimited, as announced).
UNLIMITED_PDU_CAP: Final = 64 << 20
#: Bytes of a stored file read per P-DATA-TF PDU when sending it (C-GET).
SEND_CHUNK: Final = 1 << 20
_ELEMENT = struct.Struct("<HH")


class Closed(Exception):
    """The association ended (released, aborted, timed out or the connection broke)."""


@dataclass(slots=True)
class Context:
    """An accepted presentation context."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    #: The requestor may act as SCP for this SOP Class (SCP/SCU Role Selection, PS3.7 D.3.3.4).
    requestor_scp: bool

    @property
    def implicit(self) -> bool:
        """Implicit VR Little Endian."""
        return self.transfer_syntax == IMPLICIT_LE

    @property
    def little_endian(self) -> bool:
        """Little endian byte order."""
        return self.transfer_syntax != EXPLICIT_BE


@dataclass(slots=True)
class Message:
    """A complete DIMSE message: its command, and its data set as bytes or in a spool."""

    context: Context
    command: cmd.Command
    data: bytes | None = None
    spool: Spool | None = None
    #: A data set that could not be kept (beyond the size limit): the reason.
    dropped: BaseException | None = None

    @property
    def field(self) -> int:
        """The Command Field."""
        return int(self.command[cmd.COMMAND_FIELD])

    @property
    def message_id(self) -> int:
        """The Message ID (0 when absent)."""
        return int(self.command.get(cmd.MESSAGE_ID, 0))


class Association:
    """Serves one accepted TCP connection until the association ends."""

    def __init__(self, server: DimseServer, sock: socket.socket, address: tuple[str, int]) -> None:
        self.server = server
        self.settings = server.gateway.settings
        self.sock = sock
        self.address = address
        self.peer: RemoteAE | None = None
        self.calling_ae = ""
        self.contexts: dict[int, Context] = {}
        self.peer_max_pdu = 0
        max_pdu = self.settings.dimse_max_pdu
        self.read_limit = max_pdu if max_pdu else UNLIMITED_PDU_CAP
        self._next_id = 1
        self._closed = False
        #: Blob keys reserved ahead for this association's next C-STORE.
        self.reservations = Reservations()

    # ------------------------------------------------------------------------------------------
    # lifecycle

    def run(self) -> None:
        """Negotiate, serve messages until the end, then clean up (never raises)."""
        try:
            if self._negotiate():
                self._serve()
        except Closed:
            pass
        except pdu.PeerClosed:
            pass
        except pdu.ProtocolError as exc:
            log.warning("DIMSE protocol error from %s: %s", self.address[0], exc)
            self._send_quietly(pdu.encode_abort(2, exc.abort_reason))
        except TimeoutError:
            log.info("DIMSE association from %s timed out; aborted", self.address[0])
            self._send_quietly(pdu.encode_abort(2, 0))
        except OSError as exc:
            log.info("DIMSE association from %s ended: %s", self.address[0], type(exc).__name__)
        except Exception:
            log.exception("DIMSE association failed")
            self._send_quietly(pdu.encode_abort(2, 0))
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection and leave the server's books (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.server.gateway.leave(self)
        self.reservations.release(self.server.gateway.archive)
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        """Abort from another thread (server shutdown): A-ABORT, then the reader thread ends."""
        self._send_quietly(pdu.encode_abort(2, 0))
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send_quietly(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    # ------------------------------------------------------------------------------------------
    # socket reading: exact reads, no read-ahead, so ``select`` tells whether a PDU is waiting

    def _read_exact(self, n: int) -> bytearray:
        out = bytearray(n)
        view = memoryview(out)
        have = 0
        while have < n:
            got = self.sock.recv_into(view[have:], n - have)
            if got == 0:
                raise pdu.PeerClosed("connection closed")
            have += got
        return out

    def _read_pdu(self, limit: int) -> tuple[int, bytes]:
        head = self._read_exact(6)
        kind = head[0]
        (length,) = struct.unpack_from(">L", head, 2)
        if length > limit:
            raise pdu.ProtocolError(f"PDU of {length} bytes exceeds the limit of {limit}", 6)
        return kind, bytes(self._read_exact(length))

    def _waiting(self) -> bool:
        """A PDU (or the end of the connection) is waiting to be read.

        ``poll``, not ``select``: a busy server process has descriptors beyond FD_SETSIZE.
        """
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))

    # ------------------------------------------------------------------------------------------
    # association establishment (PS3.8 §9.3.2-9.3.4, PS3.7 Annex D)

    def _negotiate(self) -> bool:
        self.sock.settimeout(self.settings.dimse_acse_timeout_s)  # ARTIM (PS3.8 §9.1.5)
        kind, body = self._read_pdu(pdu.MAX_ASSOCIATE_RQ)
        if kind != pdu.ASSOCIATE_RQ:
            raise pdu.ProtocolError("expected A-ASSOCIATE-RQ", 2)
        rq = pdu.decode_associate_rq(body)
        self.calling_ae = rq.calling_ae
        if not rq.protocol_version & 1:
            return self._reject(1, 2, 2)  # permanent, provider (ACSE), protocol version
        if rq.application_context != pdu.APPLICATION_CONTEXT:
            return self._reject(1, 1, 2)  # application context name not supported
        if rq.called_ae != self.settings.ae_title:
            return self._reject(1, 1, 7)  # called AE title not recognized
        admitted = self.server.gateway.admit(self, rq.calling_ae, self.address[0])
        if isinstance(admitted, tuple):
            return self._reject(*admitted)
        self.peer = admitted
        self.peer_max_pdu = rq.max_pdu
        answers: list[pdu.AcceptedContext] = []
        roles: dict[str, tuple[int, int]] = {}
        for proposed in rq.contexts:
            answer = self._negotiate_context(proposed, rq.roles)
            answers.append(answer)
            if answer.result == 0 and proposed.abstract_syntax in rq.roles:
                roles[proposed.abstract_syntax] = rq.roles[proposed.abstract_syntax]
        self.sock.sendall(pdu.encode_associate_ac(rq, answers, self.settings.dimse_max_pdu, roles))
        self.sock.settimeout(self.settings.dimse_idle_timeout_s)
        return True

    def _reject(self, result: int, source: int, reason: int) -> bool:
        self._send_quietly(pdu.encode_associate_rj(result, source, reason))
        return False

    def _negotiate_context(
        self, proposed: pdu.ProposedContext, roles: dict[str, tuple[int, int]]
    ) -> pdu.AcceptedContext:
        """Accept a context with the first of its syntaxes we support (PS3.8 §9.3.3.2)."""
        cid, abstract = proposed.context_id, proposed.abstract_syntax
        if cid % 2 == 0 or cid in self.contexts:
            return pdu.AcceptedContext(cid, 2)
        if not abstract:
            return pdu.AcceptedContext(cid, 3)
        supported = (
            QUERY_SYNTAXES
            if abstract == VERIFICATION or abstract in QR_MODELS
            else self.server.storage_syntaxes
        )
        for ts in proposed.transfer_syntaxes:
            if ts in supported:
                scp_role = roles.get(abstract, (1, 0))[1] == 1
                self.contexts[cid] = Context(cid, abstract, ts, scp_role)
                return pdu.AcceptedContext(cid, 0, ts)
        return pdu.AcceptedContext(cid, 4)

    # ------------------------------------------------------------------------------------------
    # data transfer (PS3.8 §9.3.5, Annex E)

    def _serve(self) -> None:
        while True:
            msg = self._read_message()
            self._dispatch(msg)

    def _read_message(self, for_store: bool = True) -> Message:
        """Read PDUs until one whole DIMSE message has arrived.

        Raises:
            Closed: the peer released or aborted the association.
        """
        command = bytearray()
        msg: Message | None = None
        while True:
            kind, body = self._read_pdu(self.read_limit)
            if kind == pdu.RELEASE_RQ:
                self._discard(msg)
                # Leave the books first: the peer may open its next association the moment
                # it reads A-RELEASE-RP, and must find this one's capacity free.
                self.server.gateway.leave(self)
                self.reservations.release(self.server.gateway.archive)
                self._send_quietly(pdu.encode_release_rp())
                raise Closed
            if kind == pdu.ABORT:
                self._discard(msg)
                raise Closed
            if kind != pdu.P_DATA_TF:
                self._discard(msg)
                raise pdu.ProtocolError(f"unexpected PDU type {kind:#04x}", 2)
            for cid, control, fragment in pdu.iter_pdvs(body):
                ctx = self.contexts.get(cid)
                if ctx is None:
                    self._discard(msg)
                    raise pdu.ProtocolError(f"PDV on presentation context {cid} not accepted", 6)
                if msg is None:
                    if not control & 0x01:
                        raise pdu.ProtocolError("data set fragment before its command", 5)
                    command += fragment
                    if len(command) > cmd.MAX_COMMAND_BYTES:
                        raise pdu.ProtocolError("command set too large", 6)
                    if control & 0x02:
                        try:
                            decoded = cmd.decode(bytes(command))
                        except cmd.CommandError as exc:
                            raise pdu.ProtocolError(str(exc), 6) from exc
                        msg = Message(ctx, decoded)
                        if (
                            decoded.get(cmd.COMMAND_DATA_SET_TYPE, cmd.NO_DATA_SET)
                            == cmd.NO_DATA_SET
                        ):
                            return msg
                        if for_store and msg.field == cmd.C_STORE_RQ:
                            self._open_spool(msg)
                        else:
                            msg.data = b""
                    continue
                if control & 0x01 or cid != msg.context.context_id:
                    self._discard(msg)
                    raise pdu.ProtocolError("fragment interleaved with another message", 5)
                self._take_fragment(msg, fragment)
                if control & 0x02:
                    return msg

    def _open_spool(self, msg: Message) -> None:
        settings = self.settings
        try:
            msg.spool = Spool(settings.tmp_dir, settings.max_instance_bytes)
            msg.spool.write(_part10_head(msg, self.calling_ae))
        except Exception as exc:
            msg.spool = None
            msg.dropped = exc

    def _take_fragment(self, msg: Message, fragment: memoryview) -> None:
        if msg.spool is not None:
            try:
                msg.spool.write(fragment)
            except Exception as exc:  # beyond the size limit (the spool discarded itself)
                msg.spool = None
                msg.dropped = exc
        elif msg.data is not None:
            if len(msg.data) + len(fragment) > MAX_IDENTIFIER:
                raise pdu.ProtocolError("identifier too large", 6)
            msg.data += bytes(fragment)

    @staticmethod
    def _discard(msg: Message | None) -> None:
        if msg is not None and msg.spool is not None:
            msg.spool.discard()

    def _send(self, ctx: Context, command: cmd.Command, data: bytes | None = None) -> None:
        command[cmd.COMMAND_DATA_SET_TYPE] = cmd.NO_DATA_SET if data is None else cmd.HAS_DATA_SET
        out = pdu.encode_p_data(ctx.context_id, True, cmd.encode(command), self.peer_max_pdu)
        if data is not None:
            out += pdu.encode_p_data(ctx.context_id, False, data, self.peer_max_pdu)
        self.sock.sendall(out)

    def _respond(
        self,
        msg: Message,
        field: int,
        status: int,
        comment: str | None = None,
        *,
        identifier: bytes | None = None,
        extra: cmd.Command | None = None,
    ) -> None:
        rsp: cmd.Command = {
            cmd.COMMAND_FIELD: field,
            cmd.MESSAGE_ID_BEING_RESPONDED_TO: msg.message_id,
            cmd.STATUS: status,
        }
        sop_class = msg.command.get(cmd.AFFECTED_SOP_CLASS_UID)
        if sop_class:
            rsp[cmd.AFFECTED_SOP_CLASS_UID] = sop_class
        if comment:
            rsp[cmd.ERROR_COMMENT] = st.comment(comment)
        if extra:
            rsp.update(extra)
        self._send(msg.context, rsp, identifier)

    # ------------------------------------------------------------------------------------------
    # services

    def _dispatch(self, msg: Message) -> None:
        field = msg.field
        if field == cmd.C_STORE_RQ:
            self._store(msg)
        elif field == cmd.C_ECHO_RQ:
            self._respond(msg, cmd.C_ECHO_RSP, st.SUCCESS)
        elif field == cmd.C_FIND_RQ:
            self._find(msg)
        elif field == cmd.C_GET_RQ:
            self._get(msg)
        elif field == cmd.C_MOVE_RQ:
            self._move(msg)
        elif field == cmd.C_CANCEL_RQ:
            pass  # nothing of that Message ID is running any more (PS3.7 §9.3.2.3)
        elif field & 0x8000:
            pass  # a response to nothing we sent: ignored
        else:
            self._discard(msg)
            # 0211 Unrecognized Operation (PS3.7 Annex C.5.13)
            self._respond(msg, field | 0x8000, 0x0211, "operation not supported")

    def _store(self, msg: Message) -> None:
        """C-STORE (PS3.4 B.2.2): the data set as received, through the ingest service."""
        ctx = msg.context
        sop_instance = str(msg.command.get(cmd.AFFECTED_SOP_INSTANCE_UID, ""))
        extra: cmd.Command = {cmd.AFFECTED_SOP_INSTANCE_UID: sop_instance} if sop_instance else {}
        if str(msg.command.get(cmd.AFFECTED_SOP_CLASS_UID, "")) != ctx.abstract_syntax:
            self._discard(msg)
            self._respond(
                msg,
                cmd.C_STORE_RSP,
                st.SOP_CLASS_NOT_SUPPORTED,
                "SOP Class differs from the presentation context",
                extra=extra,
            )
            return
        assert self.peer is not None
        if msg.spool is None:
            reason = msg.dropped or ValueError("no data set")
            status, comment = _pair(st.from_error(st.Service.STORE, reason))
        else:
            status, comment = self.server.gateway.store(self.peer, msg.spool, self.reservations)
        self._respond(msg, cmd.C_STORE_RSP, status, comment, extra=extra)

    def _identifier(self, msg: Message) -> Dataset | None:
        if msg.data is None:
            return None
        from pynetdicom.dsutils import decode

        data = msg.data
        ctx = msg.context
        if ctx.transfer_syntax == DEFLATED_LE:
            try:
                data = _inflate(data)
            except zlib.error:
                return None
        try:
            ds = decode(BytesIO(data), ctx.implicit, ctx.little_endian)
        except Exception:
            return None
        return ds

    def _encode(self, ctx: Context, ds: Dataset) -> bytes:
        from pynetdicom.dsutils import encode

        raw = encode(ds, ctx.implicit, ctx.little_endian, ctx.transfer_syntax == DEFLATED_LE)
        if raw is None:
            raise ValueError("identifier could not be encoded")
        return raw

    def _find(self, msg: Message) -> None:
        """C-FIND (PS3.4 C.4.1.3): pending responses, C-CANCEL honoured between them."""
        assert self.peer is not None
        identifier = self._identifier(msg)
        model = msg.context.abstract_syntax
        if model not in FIND_MODELS:
            self._respond(msg, cmd.C_FIND_RSP, st.SOP_CLASS_NOT_SUPPORTED, "not a C-FIND model")
            return
        if identifier is None:
            self._respond(msg, cmd.C_FIND_RSP, st.IDENTIFIER_MISMATCH, "identifier unreadable")
            return
        answer = self.server.gateway.find(self.peer, model, identifier)
        if isinstance(answer, Dataset):
            code, comment = _pair(answer)
            self._respond(msg, cmd.C_FIND_RSP, code, comment)
            return
        request, items = answer
        ctx = msg.context
        direct = ctx.little_endian and ctx.transfer_syntax != DEFLATED_LE
        ae_title = self.settings.ae_title
        for item in items:
            if direct:
                data = encode_result(item, request, ae_title, implicit=ctx.implicit)
            else:
                data = self._encode(ctx, result_identifier(item, request, ae_title))
            self._respond(msg, cmd.C_FIND_RSP, st.PENDING, identifier=data)
            if self._cancelled(msg):
                self._respond(msg, cmd.C_FIND_RSP, st.CANCEL)
                return
        self._respond(msg, cmd.C_FIND_RSP, st.SUCCESS)

    def _cancelled(self, msg: Message) -> bool:
        """Read a waiting C-CANCEL-RQ for ``msg`` (PS3.7 §9.1.2.2, §9.3.2.3), if any."""
        if not self._waiting():
            return False
        other = self._read_message(for_store=False)
        if other.field == cmd.C_CANCEL_RQ:
            responded = int(other.command.get(cmd.MESSAGE_ID_BEING_RESPONDED_TO, -1))
            return responded == msg.message_id
        # Another request while one runs breaks the single-operation window we negotiated.
        self._discard(other)
        raise pdu.ProtocolError("request while an operation is running", 5)

    # C-GET / C-MOVE ---------------------------------------------------------------------------

    def _retrieve_setup(
        self, msg: Message, models: frozenset[str], rsp_field: int
    ) -> list[InstanceRecord] | None:
        assert self.peer is not None
        if msg.context.abstract_syntax not in models:
            self._respond(msg, rsp_field, st.SOP_CLASS_NOT_SUPPORTED, "wrong Q/R model")
            return None
        identifier = self._identifier(msg)
        if identifier is None:
            self._respond(msg, rsp_field, st.IDENTIFIER_MISMATCH, "identifier unreadable")
            return None
        service = st.Service.GET if rsp_field == cmd.C_GET_RSP else st.Service.MOVE
        if not self.peer.may_retrieve:
            self._respond(
                msg, rsp_field, st.NOT_AUTHORIZED, f"AE {self.peer.ae_title} may not retrieve"
            )
            return None
        try:
            return self.server.gateway.matches(self.peer, msg.context.abstract_syntax, identifier)
        except Exception as exc:
            code, comment = _pair(st.from_error(service, exc))
            self._respond(msg, rsp_field, code, comment)
            return None

    def _get(self, msg: Message) -> None:
        """C-GET (PS3.4 C.4.3.3): C-STORE sub-operations on this association."""
        records = self._retrieve_setup(msg, GET_MODELS, cmd.C_GET_RSP)
        if records is None:
            return
        progress = _Progress(len(records))
        for rec in records:
            ctx = self._store_context(rec)
            if ctx is None:
                progress.fail(rec.sop_uid)
            else:
                sub = self._send_stored(ctx, rec)
                if sub is None:
                    self._final(msg, cmd.C_GET_RSP, progress, cancelled=True)
                    return
                progress.count(sub, rec.sop_uid)
            if progress.remaining:
                self._respond(msg, cmd.C_GET_RSP, st.PENDING, extra=progress.counts())
                if self._cancelled(msg):
                    self._final(msg, cmd.C_GET_RSP, progress, cancelled=True)
                    return
        self._final(msg, cmd.C_GET_RSP, progress)

    def _store_context(self, rec: InstanceRecord) -> Context | None:
        """An accepted context to send ``rec`` as stored, the requestor acting as SCP."""
        for ctx in self.contexts.values():
            if (
                ctx.abstract_syntax == rec.sop_class_uid
                and ctx.transfer_syntax == rec.transfer_syntax_uid
                and ctx.requestor_scp
            ):
                return ctx
        return None

    def _send_stored(self, ctx: Context, rec: InstanceRecord) -> int | None:
        """One C-STORE sub-operation: the stored data set, unchanged; its response status.

        Returns None when the peer cancelled the C-GET while the sub-operation ran (the
        sub-operation's own response has been read).
        """
        message_id = self._next_id
        self._next_id = self._next_id % 0xFFFF + 1
        command: cmd.Command = {
            cmd.COMMAND_FIELD: cmd.C_STORE_RQ,
            cmd.MESSAGE_ID: message_id,
            cmd.PRIORITY: 0,
            cmd.AFFECTED_SOP_CLASS_UID: rec.sop_class_uid,
            cmd.AFFECTED_SOP_INSTANCE_UID: rec.sop_uid,
            cmd.COMMAND_DATA_SET_TYPE: cmd.HAS_DATA_SET,
        }
        self.sock.sendall(
            pdu.encode_p_data(ctx.context_id, True, cmd.encode(command), self.peer_max_pdu)
        )
        self._send_blob(ctx, rec)
        cancelled = False
        self.sock.settimeout(self.settings.dimse_timeout_s)
        try:
            while True:
                rsp = self._read_message(for_store=False)
                if rsp.field == cmd.C_CANCEL_RQ:
                    cancelled = True
                    continue
                if (
                    rsp.field == cmd.C_STORE_RSP
                    and int(rsp.command.get(cmd.MESSAGE_ID_BEING_RESPONDED_TO, -1)) == message_id
                ):
                    break
                raise pdu.ProtocolError("expected the C-STORE-RSP of a sub-operation", 5)
        finally:
            self.sock.settimeout(self.settings.dimse_idle_timeout_s)
        return None if cancelled else int(rsp.command.get(cmd.STATUS, 0xC000))

    def _send_blob(self, ctx: Context, rec: InstanceRecord) -> None:
        """Send the stored file's data set (after its File Meta Information) as P-DATA."""
        blobs = self.server.gateway.archive.blobs
        chunks = blobs.open_range(rec.blob_key)
        head = bytearray()
        start: int | None = None
        pending = b""
        limit = max((self.peer_max_pdu or SEND_CHUNK) - 6, 2)
        for chunk in chunks:
            if start is None:
                head += chunk
                start = _dataset_offset(head)
                if start is None:
                    continue
                pending = bytes(head[start:])
            else:
                pending += chunk
            while len(pending) > limit:
                self.sock.sendall(_pdv(ctx.context_id, pending[:limit], last=False))
                pending = pending[limit:]
        if start is None:
            raise ValueError("stored file without a data set")
        self.sock.sendall(_pdv(ctx.context_id, pending, last=True))

    def _final(
        self, msg: Message, field: int, progress: _Progress, cancelled: bool = False
    ) -> None:
        """The last C-GET/C-MOVE response (PS3.4 C.4.2.1.5, C.4.3.1.4)."""
        counts = progress.counts()
        failed_list: bytes | None = None
        if progress.failed_uids:
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = progress.failed_uids[:1000]
            failed_list = self._encode(msg.context, ds)
        if cancelled:
            self._respond(msg, field, st.CANCEL, identifier=failed_list, extra=counts)
            return
        counts.pop(cmd.REMAINING)  # absent from a final response (PS3.4 C.4.2.1.5)
        if progress.failed and not progress.completed and not progress.warning:
            comment = "no sub-operation succeeded"
            self._respond(msg, field, 0xA702, comment, identifier=failed_list, extra=counts)
        elif progress.failed or progress.warning:
            self._respond(
                msg, field, 0xB000, "sub-operations failed", identifier=failed_list, extra=counts
            )
        else:
            self._respond(msg, field, st.SUCCESS, extra=counts)

    def _move(self, msg: Message) -> None:
        """C-MOVE (PS3.4 C.4.2.3): C-STORE sub-operations to a registered destination."""
        assert self.peer is not None
        destination = str(msg.command.get(cmd.MOVE_DESTINATION, "")).strip()
        gateway = self.server.gateway
        dest = gateway.move_destination(self.peer, destination)
        if self.peer.may_retrieve and dest is None:
            self._respond(
                msg,
                cmd.C_MOVE_RSP,
                st.MOVE_DESTINATION_UNKNOWN,
                f"Move destination {destination!r} unknown",
            )
            return
        records = self._retrieve_setup(msg, MOVE_MODELS, cmd.C_MOVE_RSP)
        if records is None or dest is None:
            return
        progress = _Progress(len(records))
        if not records:
            self._final(msg, cmd.C_MOVE_RSP, progress)
            return
        with gateway.connect(dest, records, self.calling_ae) as sender:
            if sender is None:
                self._respond(msg, cmd.C_MOVE_RSP, 0xA801, "move destination not reachable")
                return
            for rec in records:
                progress.count(sender(rec, msg.message_id), rec.sop_uid)
                if progress.remaining:
                    self._respond(msg, cmd.C_MOVE_RSP, st.PENDING, extra=progress.counts())
                    if self._cancelled(msg):
                        self._final(msg, cmd.C_MOVE_RSP, progress, cancelled=True)
                        return
        self._final(msg, cmd.C_MOVE_RSP, progress)


class _Progress:
    """Sub-operation counters of a C-GET/C-MOVE (PS3.4 C.4.2.1.5)."""

    def __init__(self, total: int) -> None:
        self.remaining = total
        self.completed = 0
        self.failed = 0
        self.warning = 0
        self.failed_uids: list[str] = []

    def count(self, status: int, sop_uid: str) -> None:
        """Book one finished sub-operation by its C-STORE status (PS3.4 B.2.3)."""
        if status == 0:
            self.remaining -= 1
            self.completed += 1
        elif (status & 0xF000) == 0xB000:
            self.remaining -= 1
            self.warning += 1
        else:
            self.fail(sop_uid)

    def fail(self, sop_uid: str) -> None:
        """Book one failed sub-operation."""
        self.remaining -= 1
        self.failed += 1
        self.failed_uids.append(sop_uid)

    def counts(self) -> cmd.Command:
        """The Number of ... Sub-operations elements (PS3.7 Annex E)."""
        return {
            cmd.REMAINING: self.remaining,
            cmd.COMPLETED: self.completed,
            cmd.FAILED: self.failed,
            cmd.WARNING: self.warning,
        }


def _pair(status: Dataset) -> tuple[int, str | None]:
    return int(status.Status), str(status.get("ErrorComment", "") or "") or None


def _pdv(context_id: int, data: bytes, last: bool) -> bytes:
    """One P-DATA-TF PDU with one data set fragment."""
    return (
        struct.pack(
            ">BBLLBB",
            pdu.P_DATA_TF,
            0,
            len(data) + 6,
            len(data) + 2,
            context_id,
            0x02 if last else 0x00,
        )
        + data
    )


def _dataset_offset(head: bytes | bytearray) -> int | None:
    """Where the data set starts in a Part-10 file (after group 0002), if ``head`` holds it."""
    pos = 132
    while True:
        if len(head) < pos + 8:
            return None
        group, _ = _ELEMENT.unpack_from(head, pos)
        if group != 0x0002:
            return pos
        vr = bytes(head[pos + 4 : pos + 6])
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            if len(head) < pos + 12:
                return None
            (length,) = struct.unpack_from("<L", head, pos + 8)
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            pos += 8 + length


def _part10_head(msg: Message, calling_ae: str) -> bytes:
    """Preamble, ``DICM`` and File Meta Information for a received data set (PS3.10 §7.1)."""
    ctx = msg.context
    elements = [
        _meta(0x0001, b"OB", b"\x00\x01"),
        _meta(0x0002, b"UI", _uid(str(msg.command.get(cmd.AFFECTED_SOP_CLASS_UID, "")))),
        _meta(0x0003, b"UI", _uid(str(msg.command.get(cmd.AFFECTED_SOP_INSTANCE_UID, "")))),
        _meta(0x0010, b"UI", _uid(ctx.transfer_syntax)),
        _meta(0x0012, b"UI", _uid(pdu.IMPLEMENTATION_CLASS_UID)),
        _meta(0x0013, b"SH", _padded(pdu.IMPLEMENTATION_VERSION)),
    ]
    if calling_ae:
        elements.append(_meta(0x0016, b"AE", _padded(calling_ae[:16])))
    body = b"".join(elements)
    return bytes(128) + b"DICM" + _meta(0x0000, b"UL", struct.pack("<L", len(body))) + body


def _meta(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return (
            struct.pack("<HH", 2, element)
            + vr
            + b"\x00\x00"
            + struct.pack("<L", len(value))
            + value
        )
    return struct.pack("<HH", 2, element) + vr + struct.pack("<H", len(value)) + value


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii", "replace")
    return raw + b"\x00" if len(raw) % 2 else raw


def _padded(text: str) -> bytes:
    raw = text.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def _inflate(data: bytes) -> bytes:
    """Inflate a deflated data set (PS3.5 §A.5: raw deflate), bounded."""
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    out = d.decompress(data, MAX_IDENTIFIER)
    if d.unconsumed_tail:
        raise zlib.error("identifier too large once inflated")
    return out
