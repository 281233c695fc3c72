"""``dicomhub serve`` nodes as child processes, for the multi-node and load-balancer tests.

Each node is one ``dicomhub serve`` process (HTTP only: ``--dimse-port 0``, one server process:
``--workers 1``) on its own free loopback port. The index and the blob store come from the
``DICOMHUB_*`` environment that the ``storage`` fixture exports (on ``pg+s3``: the test's
PostgreSQL database and S3 prefix), so every node started by one test shares them, as the
nodes of a deployment do; ``data_dir`` only holds each node's upload spool.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

START_TIMEOUT_S = 60.0


class Node:
    """One ``dicomhub serve`` child process in a session (process group) of its own."""

    def __init__(self, name: str, data: Path, log: Path) -> None:
        self.name = name
        self.data = data
        self.log = log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed = False  # set before a kill: clients may then treat errors as expected

    def spawn(self) -> None:
        """Start the process (without waiting for it to serve: see :meth:`wait_healthy`)."""
        self.killed = False
        cmd = [
            sys.executable,
            "-m",
            "dicomhub.cli.main",
            "serve",
            "--data-dir",
            str(self.data),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dimse-port",
            "0",
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        with self.log.open("ab") as log:
            # A session of its own: a kill takes every process of the node, as a crash would.
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_healthy(self, deadline: float) -> None:
        """Wait until ``/health`` answers 200 (fail the test if the node exits or is late)."""
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"node {self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        pytest.fail(f"node {self.name} did not become healthy: {self.log.read_text()[-2000:]}")

    def start(self) -> None:
        """Start the node and wait until it serves."""
        self.spawn()
        self.wait_healthy(time.monotonic() + START_TIMEOUT_S)

    @property
    def alive(self) -> bool:
        """Whether the node's process is running."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL every process of the node: no cleanup, no flush."""
        assert self.proc is not None
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the node (SIGTERM, then SIGKILL if it lingers)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


def start_nodes(nodes: Iterable[Node]) -> None:
    """Start several nodes at once and wait until all serve."""
    started = list(nodes)
    for node in started:
        node.spawn()
    deadline = time.monotonic() + START_TIMEOUT_S
    for node in started:
        node.wait_healthy(deadline)


def stop_nodes(nodes: Iterable[Node]) -> None:
    """Stop every node (also the ones that failed to start)."""
    for node in nodes:
        node.stop()
