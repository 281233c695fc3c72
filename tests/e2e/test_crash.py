"""Crash consistency: SIGKILL the server during concurrent STOW-RS, restart, check everything.

Four clients store distinct synthetic instances (1-5 per request) while the server is killed,
twice, at different moments. Every instance acknowledged in a 200/202 response's Referenced
SOP Sequence (PS3.18 §10.5.3) must survive byte-identical (preamble zeroed) and ``dicomhub fsck``
must find the index and the blob store consistent.

About pending reservations: a kill between the reservation and the index commit leaves a
pending row (and maybe a blob). They are younger than the pending timeout, so the server's
startup garbage collection keeps them and plain ``fsck`` counts them as ``pending_recent``, not
as problems: an in-flight write and a crash leftover cannot be told apart by age alone. Once the
server is stopped, ``fsck --repair --pending-age 0`` removes them, after which blobs and instance
rows must match one to one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydicom.uid import generate_uid

from tests.conftest import free_port
from tests.helpers import (
    ct_image,
    dicom_multipart_type,
    multipart_body,
    part10_bytes,
    run_cli,
    single_part,
    zeroed,
)

pytestmark = pytest.mark.slow

N_INSTANCES = 200
CLIENTS = 4


@dataclass(frozen=True, slots=True)
class Instance:
    study: str
    series: str
    sop: str
    data: bytes


def make_instances(n: int, rng: random.Random) -> list[Instance]:
    """Small CT-like instances (64x64, 16 bit) over a few studies and series, random preambles."""
    out: list[Instance] = []
    studies = [generate_uid() for _ in range(5)]
    series = {s: [generate_uid() for _ in range(2)] for s in studies}
    for i in range(n):
        study = studies[i % len(studies)]
        ser = series[study][i % 2]
        sop = generate_uid()
        pixels = np.random.default_rng(i).integers(0, 4096, (64, 64), dtype=np.uint16)
        ds = ct_image(
            sop=sop,
            study=study,
            series=ser,
            patient_name="Crash^Test",
            patient_id="CRASH-1",
            size=64,
            bits_allocated=16,
            bits_stored=12,
            pixel_data=pixels.tobytes(),
        )
        ds.preamble = rng.randbytes(128)  # must come back zeroed
        ds.InstanceNumber = i + 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        out.append(Instance(study, ser, sop, part10_bytes(ds)))
    return out


class Server:
    """``dicomhub serve`` as a child process."""

    def __init__(self, data: Path, log: Path) -> None:
        self.data = data
        self.log = log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "dicomhub.cli.main",
            "serve",
            "--data-dir",
            str(self.data),
            "--port",
            str(self.port),
            "--dimse-port",
            "0",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        with self.log.open("ab") as log:
            # A session of its own: a kill takes the server's worker processes too (as a
            # crash of the machine would), instead of leaving them orphaned and serving.
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        pytest.fail("server did not become healthy")

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # no cleanup, no flush, in every process
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged."""

    todo: list[Instance]
    acked: dict[str, Instance] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, rng: random.Random) -> list[Instance]:
        with self.lock:
            n = min(rng.randint(1, 5), len(self.todo))
            batch, self.todo = self.todo[:n], self.todo[n:]
            return batch

    def give_back(self, batch: list[Instance]) -> None:
        with self.lock:
            self.todo.extend(i for i in batch if i.sop not in self.acked)

    def ack(self, batch: list[Instance], sops: set[str]) -> None:
        with self.lock:
            for inst in batch:
                if inst.sop in sops:
                    self.acked[inst.sop] = inst

    @property
    def n_acked(self) -> int:
        with self.lock:
            return len(self.acked)


def stow(client: httpx.Client, base: str, batch: list[Instance]) -> httpx.Response:
    boundary = uuid.uuid4().hex
    body = multipart_body([i.data for i in batch], boundary)
    ctype = dicom_multipart_type(boundary)
    return client.post(
        f"{base}/dicomweb/studies", content=body, headers={"Content-Type": ctype}, timeout=30
    )


def client_loop(base: str, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client() as client:
        while not stop.is_set():
            batch = ledger.take(rng)
            if not batch:
                return
            try:
                r = stow(client, base, batch)
            except httpx.HTTPError:  # the server died under us: nothing acknowledged
                ledger.give_back(batch)
                return
            if r.status_code in (200, 202):
                refs = r.json().get("00081199", {}).get("Value", [])
                ledger.ack(batch, {item["00081155"]["Value"][0] for item in refs})
            if r.status_code != 200:
                ledger.errors.append(f"STOW {r.status_code}: {r.text[:300]}")
                ledger.give_back(batch)
                return
            ledger.give_back(batch)  # whatever was not acknowledged is sent again later


def run_until_killed(server: Server, ledger: Ledger, kill_after_acks: int, seed: int) -> None:
    """Clients store concurrently; SIGKILL the server once ``kill_after_acks`` are acked."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(server.base, ledger, stop, seed + k))
        for k in range(CLIENTS)
    ]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 30
    while ledger.n_acked < kill_after_acks and time.monotonic() < deadline:
        time.sleep(0.002)
    server.kill()  # requests are in flight in all four clients
    stop.set()
    for th in threads:
        th.join(timeout=30)
    assert not ledger.errors, ledger.errors
    assert ledger.n_acked >= kill_after_acks, "clients too slow: nothing to crash-test"


def fetch(base: str, inst: Instance) -> bytes:
    r = httpx.get(
        f"{base}/dicomweb/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        timeout=30,
    )
    assert r.status_code == 200, (inst.sop, r.status_code, r.text[:300])
    return single_part(r)


def verify_acknowledged(server: Server, ledger: Ledger) -> None:
    with ledger.lock:
        acked = list(ledger.acked.values())
    lost = [i.sop for i in acked if fetch(server.base, i) != zeroed(i.data)]
    assert not lost, f"{len(lost)} acknowledged instances lost or altered: {lost[:5]}"


def fsck_report(data: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    code, out = run_cli(capsys, "fsck", "--data-dir", str(data), "--json", *flags)
    report: dict[str, Any] = json.loads(out)
    assert code == (0 if report["ok"] else 1)
    return report


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", tmp_path / "server.log")
    yield srv
    srv.stop()


def test_kill_during_concurrent_stow(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    rng = random.Random(20261201)
    ledger = Ledger(todo=make_instances(N_INSTANCES, rng))

    # Moment 1: early, while the index and the folders of the blob store are still being created.
    server.start()
    run_until_killed(server, ledger, kill_after_acks=15, seed=1)
    server.start()
    verify_acknowledged(server, ledger)

    # Moment 2: later, in steady state, with re-sent (possibly already stored) instances mixed in.
    run_until_killed(server, ledger, kill_after_acks=ledger.n_acked + 80, seed=100)
    server.start()
    verify_acknowledged(server, ledger)

    # Finish the upload on the restarted server: everything ends up stored exactly once.
    stop = threading.Event()
    client_loop(server.base, ledger, stop, seed=7)
    assert not ledger.errors, ledger.errors
    assert not ledger.todo and ledger.n_acked == N_INSTANCES
    verify_acknowledged(server, ledger)
    server.stop()

    report = fsck_report(server.data, capsys)
    assert report["ok"] is True, report["problems"]
    checked = report["checked"]
    assert checked["instances"] == N_INSTANCES
    # Crash leftovers are young pending reservations: expected garbage, not inconsistencies.
    assert checked["pending"] == checked["pending_recent"]
    report = fsck_report(server.data, capsys, "--repair", "--pending-age", "0")
    assert report["ok"] is True
    assert {p["kind"] for p in report["repaired"]} <= {"stale_pending"}
    report = fsck_report(server.data, capsys, "--pending-age", "0")
    assert report["ok"] is True and report["problems"] == []
    checked = report["checked"]
    assert checked["blobs"] == checked["instances"] == N_INSTANCES and checked["pending"] == 0
    assert time.monotonic() - started < 90
