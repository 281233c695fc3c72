"""Fixtures and helpers for the DIMSE tests: an in-process SCP, DCMTK runs, Part-10 splitting."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pynetdicom.dsutils import split_dataset

from dicomhub.config import Settings
from dicomhub.dimse.server import DimseServer
from dicomhub.services import peers
from dicomhub.services.archive import Archive
from tests.conftest import free_port

SCU = "TESTSCU"  # the registered AE the tests call as
AET = "DICOMHUB"


@dataclass
class Scp:
    """A running dicomhub DIMSE server."""

    server: DimseServer
    archive: Archive
    port: int

    def dcmtk(
        self,
        tool: str,
        *args: str,
        aet: str = SCU,
        files: tuple[str, ...] = (),
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run a DCMTK client against the server (TCP_NODELAY on, as the bench does)."""
        cmd = [tool, "-aet", aet, "-aec", AET, *args, "127.0.0.1", str(self.port), *files]
        return dcmtk(cmd, timeout=timeout)


@functools.cache
def dcmtk_tool(name: str) -> str:
    """The path of a DCMTK program.

    pynetdicom installs console scripts with the same names (``echoscu``, ``storescu``,
    ``storescp``, ...) into the virtual environment, so a plain PATH lookup from a shell that
    activated the venv would run pynetdicom's apps instead of DCMTK: search PATH without the
    venv's own bin folder.
    """
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin
    )
    found = shutil.which(name, path=path or "/usr/bin")
    if found is None:
        raise FileNotFoundError(f"DCMTK's {name} is not installed (Debian package dcmtk)")
    return found


def dcmtk(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK command line, output captured."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    full = [dcmtk_tool(cmd[0]), *cmd[1:]]
    return subprocess.run(full, capture_output=True, text=True, timeout=timeout, env=env)


def dimse_settings(tmp_path: Path, **extra: object) -> Settings:
    """Settings for a fresh archive with a DIMSE server on a free port."""
    return Settings(
        data_dir=tmp_path / "data",
        run_workers=False,
        dimse_port=free_port(),
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def scp(settings: Settings, archive: Archive) -> Iterator[Scp]:
    """dicomhub's SCP over the test archive, with ``TESTSCU`` at 127.0.0.1 registered."""
    settings = settings.model_copy(update={"dimse_port": free_port()})
    archive.settings = settings
    peers.add(archive, peers.RemoteAE(1, SCU, "127.0.0.1", 104))
    server = DimseServer(archive, settings)
    server.start()
    yield Scp(server, archive, server.port)
    server.stop()


def dataset_bytes(path_or_bytes: Path | bytes) -> bytes:
    """The data set of a Part-10 file: everything after the File Meta Information."""
    if isinstance(path_or_bytes, bytes):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "f.dcm"
            path.write_bytes(path_or_bytes)
            return dataset_bytes(path)
    _, offset = split_dataset(path_or_bytes)
    return path_or_bytes.read_bytes()[offset:]
