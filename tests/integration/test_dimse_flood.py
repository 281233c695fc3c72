"""Association floods and idle associations do not starve a registered AE or leak memory."""

from __future__ import annotations

import gc
import socket
import threading
import time

import psutil
import pydicom
from pynetdicom import AE

from dicomhub.dimse.transfer import configure
from dicomhub.services import peers
from tests.integration.dimse_support import AET, SCU, Scp, scp
from tests.samples import CT_SMALL, SAMPLES

__all__ = ["scp"]

Verification = "1.2.840.10008.1.1"


FLOOD_THREADS = 4
FLOOD_PER_THREAD = 75  # 300 associations opened and closed
IDLE = 6


def _open(port: int, aet: str) -> object:
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title=AET)


def _flood(port: int, n: int, errors: list[str]) -> None:
    for i in range(n):
        kind = i % 4
        try:
            if kind == 3:  # a bare TCP connection that never speaks, closed at once
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    pass
                continue
            assoc = _open(port, "FLOOD" if kind != 2 else "NOBODY")
            if kind == 0 and assoc.is_established:  # type: ignore[attr-defined]
                assoc.release()  # type: ignore[attr-defined]
            elif kind == 1 and assoc.is_established:  # type: ignore[attr-defined]
                assoc.abort()  # type: ignore[attr-defined]
        except Exception as exc:
            errors.append(repr(exc))


def _rss_settled(proc: psutil.Process) -> int:
    gc.collect()
    time.sleep(0.2)
    return int(proc.memory_info().rss)


def test_flood_and_idle_associations(scp: Scp) -> None:
    configure()
    peers.add(scp.archive, peers.RemoteAE(1, "FLOOD", "127.0.0.1", 104))
    peers.add(scp.archive, peers.RemoteAE(1, "IDLER", "127.0.0.1", 104))
    ds = pydicom.dcmread(SAMPLES / CT_SMALL)
    proc = psutil.Process()
    _flood(scp.port, 20, [])  # warm up threads, imports and caches
    baseline = _rss_settled(proc)

    idle = [_open(scp.port, "IDLER") for _ in range(IDLE)]
    assert all(a.is_established for a in idle)  # type: ignore[attr-defined]
    errors: list[str] = []
    threads = [
        threading.Thread(target=_flood, args=(scp.port, FLOOD_PER_THREAD, errors))
        for _ in range(FLOOD_THREADS)
    ]
    for t in threads:
        t.start()
    stored = 0
    while any(t.is_alive() for t in threads):
        ae = AE(ae_title=SCU)
        ae.add_requested_context(ds.SOPClassUID)
        assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET)
        assert assoc.is_established, "a registered AE was refused during the flood"
        assert assoc.send_c_store(ds).Status == 0
        assoc.release()
        stored += 1
    for t in threads:
        t.join(timeout=120)
    assert stored >= 1
    assert not errors, errors[:5]
    for a in idle:
        assert a.is_established  # type: ignore[attr-defined]
        a.release()  # type: ignore[attr-defined]

    deadline = time.monotonic() + 30
    while scp.server.active_associations and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not scp.server.active_associations
    after = _rss_settled(proc)
    assert after - baseline < 64 * 1024 * 1024, (baseline, after)


def test_per_ae_association_limit(scp: Scp) -> None:
    configure()
    limit = scp.server.settings.dimse_max_associations_per_ae
    held = [_open(scp.port, SCU) for _ in range(limit)]
    assert all(a.is_established for a in held)  # type: ignore[attr-defined]
    extra = _open(scp.port, SCU)
    assert extra.is_rejected  # type: ignore[attr-defined]
    for a in held:
        a.release()  # type: ignore[attr-defined]
