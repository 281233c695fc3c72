"""Upper-layer PDUs of the DICOM network protocol (PS3.8 §9.3), acceptor side.

Hand-written on purpose: the acceptor reads each PDU with one bounded read and encodes its
answers in one buffer, with every length checked against the bytes actually present. Only what
an acceptor needs is here: decoding A-ASSOCIATE-RQ, P-DATA-TF, A-RELEASE-RQ/RP and A-ABORT, and
encoding A-ASSOCIATE-AC/RJ, P-DATA-TF, A-RELEASE-RQ/RP and A-ABORT. Malformed input raises
:class:`ProtocolError`; the association answers it with A-ABORT (PS3.8 §9.3.8).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Final

# PDU types (PS3.8 §9.3.1, Table 9-10)
ASSOCIATE_RQ: Final = 0x01
ASSOCIATE_AC: Final = 0x02
ASSOCIATE_RJ: Final = 0x03
P_DATA_TF: Final = 0x04
RELEASE_RQ: Final = 0x05
RELEASE_RP: Final = 0x06
ABORT: Final = 0x07

#: The DICOM Application Context Name (PS3.7 Annex A.2.1).
APPLICATION_CONTEXT: Final = "1.2.840.10008.3.1.1.1"
#: dicomhub's Implementation Class UID (PS3.7 D.3.3.2): a UUID-derived UID (PS3.5 §B.2).
IMPLEMENTATION_CLASS_UID: Final = "2.25.255017834105380927402467425938614542713"
#: Implementation Version Name (PS3.7 D.3.3.2.3: SH, at most 16 characters).
IMPLEMENTATION_VERSION: Final = "DICOMHUB_01"
#: Largest A-ASSOCIATE-RQ accepted (128 contexts with dozens of transfer syntaxes fit easily).
MAX_ASSOCIATE_RQ: Final = 1 << 20

_HEADER = struct.Struct(">BBL")
_ITEM = struct.Struct(">BBH")


class ProtocolError(Exception):
    """A PDU that breaks PS3.8 §9.3; the association is aborted (reason in ``abort_reason``)."""

    def __init__(self, message: str, abort_reason: int = 2) -> None:
        super().__init__(message)
        #: A-ABORT reason/diag. (PS3.8 Table 9-26): 1 unrecognized PDU, 2 unexpected PDU,
        #: 4 unrecognized PDU parameter, 5 unexpected PDU parameter, 6 invalid PDU parameter.
        self.abort_reason = abort_reason


class PeerClosed(Exception):
    """The peer closed the TCP connection (or it broke) between or inside PDUs."""


@dataclass(slots=True)
class ProposedContext:
    """A presentation context proposed in A-ASSOCIATE-RQ (PS3.8 §9.3.2.2)."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: list[str]


@dataclass(slots=True)
class AssociateRequest:
    """The parts of A-ASSOCIATE-RQ (PS3.8 §9.3.2) the acceptor uses."""

    protocol_version: int
    called_ae: str
    calling_ae: str
    raw_called: bytes
    raw_calling: bytes
    application_context: str
    contexts: list[ProposedContext] = field(default_factory=list)
    max_pdu: int = 0
    implementation_class_uid: str = ""
    #: SCP/SCU Role Selection (PS3.7 D.3.3.4): abstract syntax -> (SCU role, SCP role).
    roles: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(slots=True)
class AcceptedContext:
    """One presentation context's answer in A-ASSOCIATE-AC (PS3.8 §9.3.3.2)."""

    context_id: int
    #: 0 acceptance, 1 user rejection, 2 no reason, 3 abstract syntax not supported,
    #: 4 transfer syntaxes not supported (PS3.8 Table 9-18).
    result: int
    transfer_syntax: str = ""


def read_pdu(stream: BinaryIO, max_length: int) -> tuple[int, bytes]:
    """Read one PDU: ``(type, body)``; the body is at most ``max_length`` bytes.

    Raises:
        PeerClosed: end of stream before or inside the PDU.
        ProtocolError: the announced length is beyond ``max_length``.
    """
    head = stream.read(6)
    if len(head) < 6:
        raise PeerClosed("connection closed")
    kind, _, length = _HEADER.unpack(head)
    if length > max_length:
        raise ProtocolError(f"PDU of {length} bytes exceeds the limit of {max_length}", 6)
    body = stream.read(length)
    if len(body) < length:
        raise PeerClosed("connection closed inside a PDU")
    return kind, body


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip(" \x00")


def _uid(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii", "replace")


def _items(body: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """``(item type, value start, value end)`` of the variable items in ``body[start:end]``."""
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise ProtocolError("truncated PDU item", 6)
        kind, _, length = _ITEM.unpack_from(body, pos)
        value = pos + 4
        if value + length > end:
            raise ProtocolError("PDU item overruns its PDU", 6)
        yield kind, value, value + length
        pos = value + length


def decode_associate_rq(body: bytes) -> AssociateRequest:
    """Decode the body of an A-ASSOCIATE-RQ PDU (PS3.8 §9.3.2, Table 9-11).

    Raises:
        ProtocolError: malformed or incomplete request.
    """
    if len(body) < 68:
        raise ProtocolError("A-ASSOCIATE-RQ too short", 6)
    (version,) = struct.unpack_from(">H", body, 0)
    raw_called, raw_calling = body[4:20], body[20:36]
    rq = AssociateRequest(
        version, _text(raw_called), _text(raw_calling), raw_called, raw_calling, ""
    )
    for kind, start, end in _items(body, 68, len(body)):
        if kind == 0x10:  # Application Context Item
            rq.application_context = _uid(body[start:end])
        elif kind == 0x20:  # Presentation Context Item (RQ)
            rq.contexts.append(_proposed_context(body, start, end))
        elif kind == 0x50:  # User Information Item
            _user_information(rq, body, start, end)
    if len(rq.contexts) > 128:
        raise ProtocolError("more than 128 presentation contexts", 6)
    return rq


def _proposed_context(body: bytes, start: int, end: int) -> ProposedContext:
    if end - start < 4:
        raise ProtocolError("truncated presentation context item", 6)
    ctx = ProposedContext(body[start], "", [])
    for kind, s, e in _items(body, start + 4, end):
        if kind == 0x30:  # Abstract Syntax Sub-Item
            ctx.abstract_syntax = _uid(body[s:e])
        elif kind == 0x40:  # Transfer Syntax Sub-Item
            ctx.transfer_syntaxes.append(_uid(body[s:e]))
    return ctx


def _user_information(rq: AssociateRequest, body: bytes, start: int, end: int) -> None:
    for kind, s, e in _items(body, start, end):
        if kind == 0x51 and e - s == 4:  # Maximum Length (PS3.8 D.1)
            (rq.max_pdu,) = struct.unpack_from(">L", body, s)
        elif kind == 0x52:  # Implementation Class UID (PS3.7 D.3.3.2)
            rq.implementation_class_uid = _uid(body[s:e])
        elif kind == 0x54 and e - s >= 4:  # SCP/SCU Role Selection (PS3.7 D.3.3.4)
            (n,) = struct.unpack_from(">H", body, s)
            if s + 2 + n + 2 <= e:
                uid = _uid(body[s + 2 : s + 2 + n])
                rq.roles[uid] = (body[s + 2 + n], body[s + 3 + n])
        # Asynchronous operations, extended negotiation and user identity are not answered:
        # no answer means the defaults (one operation at a time, no extended behaviour, user
        # identity not confirmed), which PS3.7 Annex D.3.3 allows an acceptor to choose.


def _item(kind: int, value: bytes) -> bytes:
    return _ITEM.pack(kind, 0, len(value)) + value


def _pdu(kind: int, body: bytes) -> bytes:
    return _HEADER.pack(kind, 0, len(body)) + body


def _even(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def encode_associate_ac(
    rq: AssociateRequest,
    contexts: list[AcceptedContext],
    max_pdu: int,
    roles: dict[str, tuple[int, int]],
) -> bytes:
    """A-ASSOCIATE-AC (PS3.8 §9.3.3): called/calling AE echoed from the request."""
    body = bytearray(struct.pack(">HH", 1, 0))
    body += rq.raw_called + rq.raw_calling + bytes(32)
    body += _item(0x10, APPLICATION_CONTEXT.encode("ascii"))
    for ctx in contexts:
        ts = _item(0x40, _even(ctx.transfer_syntax)) if ctx.result == 0 else b""
        body += _item(0x21, bytes((ctx.context_id, 0, ctx.result, 0)) + ts)
    user = bytearray(_item(0x51, struct.pack(">L", max_pdu)))
    user += _item(0x52, _even(IMPLEMENTATION_CLASS_UID))
    for uid, (scu, scp) in roles.items():
        raw = uid.encode("ascii")
        user += _item(0x54, struct.pack(">H", len(raw)) + raw + bytes((scu, scp)))
    user += _item(0x55, IMPLEMENTATION_VERSION.encode("ascii"))
    body += _item(0x50, bytes(user))
    return _pdu(ASSOCIATE_AC, bytes(body))


def encode_associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 §9.3.4, Table 9-21): result, source, reason/diagnostic."""
    return _pdu(ASSOCIATE_RJ, bytes((0, result, source, reason)))


def encode_release_rp() -> bytes:
    """A-RELEASE-RP (PS3.8 §9.3.7)."""
    return _pdu(RELEASE_RP, bytes(4))


def encode_abort(source: int = 2, reason: int = 0) -> bytes:
    """A-ABORT (PS3.8 §9.3.8): source 0 service user, 2 service provider."""
    return _pdu(ABORT, bytes((0, 0, source, reason)))


def iter_pdvs(body: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """``(context id, message control header, fragment)`` of a P-DATA-TF body (PS3.8 §9.3.5).

    Raises:
        ProtocolError: a PDV item that overruns the PDU or is too short.
    """
    view = memoryview(body)
    pos, end = 0, len(body)
    while pos < end:
        if pos + 6 > end:
            raise ProtocolError("truncated PDV item", 6)
        (length,) = struct.unpack_from(">L", body, pos)
        if length < 2 or pos + 4 + length > end:
            raise ProtocolError("PDV item overruns its PDU", 6)
        yield body[pos + 4], body[pos + 5], view[pos + 6 : pos + 4 + length]
        pos += 4 + length


def encode_p_data(context_id: int, command: bool, data: bytes, max_pdu: int) -> bytes:
    """One message part as P-DATA-TF PDUs of at most ``max_pdu`` bytes each (PS3.8 Annex E).

    Args:
        context_id: The presentation context of the message.
        command: Fragments of the command set (else of the data set).
        data: The encoded command set or data set.
        max_pdu: The peer's Maximum Length (0 = unlimited; then 1 MiB PDUs are sent).
    """
    limit = (max_pdu or (1 << 20)) - 6  # PDV item header: length (4), context id, control
    limit = max(limit, 2)
    flag = 0x01 if command else 0x00
    out = bytearray()
    total = len(data)
    pos = 0
    while True:
        chunk = data[pos : pos + limit]
        pos += len(chunk)
        last = pos >= total
        pdv_len = len(chunk) + 2
        out += _HEADER.pack(P_DATA_TF, 0, pdv_len + 4)
        out += struct.pack(">LBB", pdv_len, context_id, flag | (0x02 if last else 0))
        out += chunk
        if last:
            return bytes(out)
