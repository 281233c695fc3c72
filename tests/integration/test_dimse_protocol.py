"""The DIMSE acceptor at the PDU level: hostile bytes, protocol breaches, cancel, shared limits.

Raw sockets speak PS3.8 directly to check what a careless or hostile peer gets: an A-ABORT or an
A-ASSOCIATE-RJ, never a hang, and the server keeps serving the next association.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.dsutils import encode
from sqlalchemy import func, select

from dicomhub.dimse import commands as cmd
from dicomhub.dimse import pdu
from dicomhub.dimse.limits import AssociationTable
from dicomhub.dimse.transfer import configure
from dicomhub.services.ingest import store
from dicomhub.services.spool import spool_file
from dicomhub.storage.index import tables
from tests.integration.dimse_support import AET, SCU, Scp, scp
from tests.samples import CT_SMALL, SAMPLES

__all__ = ["scp"]

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate_rq(calling: str = SCU, called: str = AET, abstract: str = VERIFICATION) -> bytes:
    """A minimal A-ASSOCIATE-RQ (PS3.8 §9.3.2) with one presentation context (ID 1)."""
    ctx = bytes((1, 0, 0, 0)) + _item(0x30, abstract.encode()) + _item(0x40, IMPLICIT_LE.encode())
    body = (
        struct.pack(">HH", 1, 0)
        + called.ljust(16).encode()
        + calling.ljust(16).encode()
        + bytes(32)
        + _item(0x10, pdu.APPLICATION_CONTEXT.encode())
        + _item(0x20, ctx)
        + _item(0x50, _item(0x51, struct.pack(">L", 16384)) + _item(0x52, b"1.2.3.4"))
    )
    return struct.pack(">BBL", pdu.ASSOCIATE_RQ, 0, len(body)) + body


def connect(scp: Scp) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", scp.port), timeout=10)
    return sock


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    stream = sock.makefile("rb")
    return pdu.read_pdu(stream, 1 << 20)


def echo_works(scp: Scp) -> bool:
    configure()
    ae = AE(ae_title=SCU)
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


@pytest.mark.parametrize(
    "data",
    [
        b"\xff" * 32,  # not a PDU
        struct.pack(">BBL", pdu.ASSOCIATE_RQ, 0, 1 << 30),  # a 1 GiB request announced
        struct.pack(">BBL", pdu.ASSOCIATE_RQ, 0, 12) + b"x" * 12,  # a request too short
        struct.pack(">BBL", pdu.P_DATA_TF, 0, 4) + b"abcd",  # data before association
    ],
    ids=["garbage", "huge-length", "short-rq", "p-data-first"],
)
def test_hostile_bytes_get_an_abort_and_the_server_goes_on(scp: Scp, data: bytes) -> None:
    with connect(scp) as sock:
        sock.sendall(data)
        kind, _ = read_pdu(sock)
    assert kind == pdu.ABORT
    assert echo_works(scp)


def test_wrong_called_ae_is_rejected_with_the_reason(scp: Scp) -> None:
    with connect(scp) as sock:
        sock.sendall(associate_rq(called="SOMEONEELSE"))
        kind, body = read_pdu(sock)
    assert kind == pdu.ASSOCIATE_RJ
    assert tuple(body[1:4]) == (1, 1, 7)  # permanent, service user, called AE not recognized


def test_unknown_calling_ae_is_rejected_with_the_reason(scp: Scp) -> None:
    with connect(scp) as sock:
        sock.sendall(associate_rq(calling="STRANGER"))
        kind, body = read_pdu(sock)
    assert kind == pdu.ASSOCIATE_RJ
    assert tuple(body[1:4]) == (1, 1, 3)  # calling AE title not recognized


def test_pdv_on_an_unaccepted_context_aborts(scp: Scp) -> None:
    with connect(scp) as sock:
        sock.sendall(associate_rq())
        kind, _ = read_pdu(sock)
        assert kind == pdu.ASSOCIATE_AC
        echo = cmd.encode(
            {
                cmd.COMMAND_FIELD: cmd.C_ECHO_RQ,
                cmd.MESSAGE_ID: 1,
                cmd.AFFECTED_SOP_CLASS_UID: VERIFICATION,
                cmd.COMMAND_DATA_SET_TYPE: cmd.NO_DATA_SET,
            }
        )
        sock.sendall(pdu.encode_p_data(3, True, echo, 16384))  # context 3 was never proposed
        kind, _ = read_pdu(sock)
    assert kind == pdu.ABORT


def test_raw_echo_then_release(scp: Scp) -> None:
    with connect(scp) as sock:
        sock.sendall(associate_rq())
        assert read_pdu(sock)[0] == pdu.ASSOCIATE_AC
        echo = cmd.encode(
            {
                cmd.COMMAND_FIELD: cmd.C_ECHO_RQ,
                cmd.MESSAGE_ID: 7,
                cmd.AFFECTED_SOP_CLASS_UID: VERIFICATION,
                cmd.COMMAND_DATA_SET_TYPE: cmd.NO_DATA_SET,
            }
        )
        sock.sendall(pdu.encode_p_data(1, True, echo, 16384))
        kind, body = read_pdu(sock)
        assert kind == pdu.P_DATA_TF
        ((cid, control, fragment),) = list(pdu.iter_pdvs(body))
        rsp = cmd.decode(bytes(fragment))
        assert (cid, control & 0x03) == (1, 0x03)
        assert rsp[cmd.COMMAND_FIELD] == cmd.C_ECHO_RSP
        assert rsp[cmd.MESSAGE_ID_BEING_RESPONDED_TO] == 7 and rsp[cmd.STATUS] == 0
        sock.sendall(struct.pack(">BBL", pdu.RELEASE_RQ, 0, 4) + bytes(4))
        assert read_pdu(sock)[0] == pdu.RELEASE_RP
    assert scp.server.gateway.table.in_use() == 0


def test_cancel_stops_the_find_responses(scp: Scp, tmp_path: Path) -> None:
    for i in range(5):
        ds = pydicom.dcmread(SAMPLES / CT_SMALL)
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{i}"
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{i}.1"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{i}.1.1"
        path = tmp_path / f"{i}.dcm"
        ds.save_as(path)
        spool, sha = spool_file(path, scp.archive.settings.tmp_dir, 1 << 30)
        store(scp.archive, 1, spool, sha)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    raw = encode(identifier, True, True)
    assert raw is not None
    find = cmd.encode(
        {
            cmd.COMMAND_FIELD: cmd.C_FIND_RQ,
            cmd.MESSAGE_ID: 5,
            cmd.PRIORITY: 0,
            cmd.AFFECTED_SOP_CLASS_UID: STUDY_ROOT_FIND,
            cmd.COMMAND_DATA_SET_TYPE: cmd.HAS_DATA_SET,
        }
    )
    cancel = cmd.encode(
        {
            cmd.COMMAND_FIELD: cmd.C_CANCEL_RQ,
            cmd.MESSAGE_ID_BEING_RESPONDED_TO: 5,
            cmd.COMMAND_DATA_SET_TYPE: cmd.NO_DATA_SET,
        }
    )
    statuses: list[int] = []
    with connect(scp) as sock:
        sock.sendall(associate_rq(abstract=STUDY_ROOT_FIND))
        assert read_pdu(sock)[0] == pdu.ASSOCIATE_AC
        # the request and its C-CANCEL-RQ in one write: the cancel waits when the first
        # pending response goes out (PS3.7 §9.3.2.3)
        sock.sendall(
            pdu.encode_p_data(1, True, find, 16384)
            + pdu.encode_p_data(1, False, raw, 16384)
            + pdu.encode_p_data(1, True, cancel, 16384)
        )
        stream = sock.makefile("rb")
        while not statuses or statuses[-1] == 0xFF00:
            kind, body = pdu.read_pdu(stream, 1 << 20)
            assert kind == pdu.P_DATA_TF
            for _, control, fragment in pdu.iter_pdvs(body):
                if control & 0x01:
                    statuses.append(int(cmd.decode(bytes(fragment))[cmd.STATUS]))
    assert statuses[-1] == 0xFE00  # Matching terminated due to Cancel request
    assert statuses.count(0xFF00) < 5
    assert echo_works(scp)


def test_association_table_is_shared_and_frees_dead_processes(tmp_path: Path) -> None:
    path = tmp_path / "t.associations"
    a = AssociationTable(path, 3)
    b = AssociationTable(path, 3)  # another process's view of the same file
    assert a.claim(1, "CT1", per_ae=2) is not None
    assert b.claim(1, "CT1", per_ae=2) is not None
    assert a.claim(1, "CT1", per_ae=2) is None  # per-AE limit counted across both
    slot = b.claim(2, "CT1", per_ae=2)  # another tenant's AE of the same title
    assert slot is not None
    assert a.claim(1, "MR1", per_ae=2) is None  # global limit: three slots taken
    b.release(slot)
    assert a.in_use() == 2
    assert a.claim(1, "MR1", per_ae=2) is not None
    assert b.claim(1, "US1", per_ae=2) is None  # full
    # a slot of a process that died is found and freed by the next claim
    struct.pack_into("<ii16s", a._map, 0, 2**31 - 7, 1, b"GONE")
    assert b.claim(1, "US1", per_ae=2) is not None
    assert a.in_use() == 3
    a.close()
    b.close()


def test_association_reserves_keys_ahead_and_gives_them_back(scp: Scp, tmp_path: Path) -> None:
    def pending() -> int:
        with scp.archive.db.read() as conn:
            return int(
                conn.execute(select(func.count()).select_from(tables.pending_blob)).scalar_one()
            )

    configure()
    ds = pydicom.dcmread(SAMPLES / CT_SMALL)
    ae = AE(ae_title=SCU)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET)
    assert assoc.is_established
    for i in range(3):
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.88.{i}"
        assert assoc.send_c_store(ds).Status == 0
        assert pending() == 1  # the key of the next instance, reserved with this one
    assoc.release()
    assert pending() == 0
    with scp.archive.db.read() as conn:
        stored = conn.execute(select(func.count()).select_from(tables.instance)).scalar_one()
    assert stored == 3
