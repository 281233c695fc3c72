"""Shared fixtures: a fresh archive per test, an in-process client, a live HTTP server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from dicomhub.config import Settings
from dicomhub.services.archive import Archive
from dicomhub.web.app import create_app

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "dicom-samples"


@pytest.fixture
def samples_dir() -> Path:
    """The shared sample set (checked out next to the repository)."""
    if not (SAMPLES / "manifest.json").is_file():
        pytest.fail(f"sample set missing at {SAMPLES}")
    return SAMPLES


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a fresh embedded archive in a temporary folder."""
    return Settings(data_dir=tmp_path / "data", run_workers=False)


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archive]:
    """An opened (migrated) archive, closed after the test."""
    arch = Archive.open(settings)
    yield arch
    arch.close()


@pytest.fixture
def client(settings: Settings, archive: Archive) -> Iterator[TestClient]:
    """An in-process HTTP client for the app over ``archive``."""
    with TestClient(create_app(settings, archive), raise_server_exceptions=False) as c:
        yield c


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LiveServer:
    """A uvicorn server running the app in a background thread."""

    url: str
    archive: Archive


@pytest.fixture
def live_server(settings: Settings, archive: Archive) -> Iterator[LiveServer]:
    """The app served over real HTTP on a free loopback port."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, archive), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        pytest.fail("live server did not start")
    yield LiveServer(base + settings.base_path, archive)
    server.should_exit = True
    thread.join(timeout=10)
