"""DIMSE served by every ``dicomhub serve`` process: shared port, limits counted across processes.

``serve --workers 2`` runs two server processes that both accept on the DIMSE port
(``SO_REUSEPORT``). The per-AE association limit holds for the node as a whole, and the slots of
a server process that is killed are given back once it is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pydicom
import pytest
from pynetdicom import AE

from dicomhub.dimse.transfer import configure
from tests.conftest import free_port
from tests.samples import CT_SMALL, SAMPLES

pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]

PER_AE = 4
VERIFICATION = "1.2.840.10008.1.1"


class Server:
    """A ``dicomhub serve --workers 2`` child process with DIMSE on."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.http = free_port()
        self.dimse = free_port()
        env = {
            **os.environ,
            "DICOMHUB_DIMSE_MAX_ASSOCIATIONS_PER_AE": str(PER_AE),
            "DICOMHUB_RUN_WORKERS": "false",
        }
        cmd = [sys.executable, "-m", "dicomhub.cli.main"]
        subprocess.run(
            [*cmd, "ae", "add", "TESTSCU", "--host", "127.0.0.1", "--port", "104",
             "--data-dir", str(data)],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
        self.log = (data / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [*cmd, "serve", "--data-dir", str(data), "--port", str(self.http),
             "--dimse-port", str(self.dimse), "--workers", "2", "--no-access-log"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def wait(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.data / "serve.log").read_text()[-2000:]
            try:
                healthy = httpx.get(f"http://127.0.0.1:{self.http}/health", timeout=1)
                if healthy.is_success and len(self.children()) == 2 and echo(self.dimse):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail("server did not start: " + (self.data / "serve.log").read_text()[-2000:])

    def children(self) -> list[psutil.Process]:
        return [
            p for p in psutil.Process(self.proc.pid).children() if "resource_tracker" not in
            " ".join(p.cmdline())
        ]  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def associate(port: int, contexts: list[str] | None = None) -> Any:
    ae = AE(ae_title="TESTSCU")
    for uid in contexts or [VERIFICATION]:
        ae.add_requested_context(uid)
    return ae.associate("127.0.0.1", port, ae_title="DICOMHUB")


def echo(port: int) -> bool:
    assoc = associate(port)
    if not assoc.is_established:
        return False
    assoc.release()
    return True


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    configure()
    srv = Server(tmp_path / "data")
    try:
        srv.wait()
        yield srv
    finally:
        srv.stop()


def test_per_ae_limit_holds_across_processes_and_dead_slots_return(server: Server) -> None:
    ds = pydicom.dcmread(SAMPLES / CT_SMALL)
    held = [associate(server.dimse, [ds.SOPClassUID]) for _ in range(PER_AE)]
    assert all(a.is_established for a in held)
    owners = {c.pid for c in server.children() for conn in c.net_connections("tcp")
              if conn.laddr and conn.laddr.port == server.dimse and conn.raddr}  # fmt: skip
    extra = associate(server.dimse)
    assert extra.is_rejected, "the per-AE limit must count associations of every process"
    # every held association stores (whichever process it landed on)
    for assoc in held:
        assert assoc.send_c_store(ds).Status == 0

    # kill a process that holds associations: its slots are reclaimed, the node goes on
    victim = psutil.Process(next(iter(owners)))
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    for assoc in held:
        assoc.abort()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not echo(server.dimse):
        time.sleep(0.2)
    again = [associate(server.dimse) for _ in range(PER_AE)]
    assert all(a.is_established for a in again), "slots of a dead process were not given back"
    for assoc in again:
        assoc.release()
    r = httpx.get(
        f"http://127.0.0.1:{server.http}/dicomweb/instances",
        headers={"Accept": "application/dicom+json"},
    )
    assert r.status_code == 200 and len(r.json()) == 1
