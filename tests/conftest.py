"""Shared fixtures: a fresh archive per test, an in-process client, a live HTTP server.

Backend axis: every integration and end-to-end test runs once per backend set, ``[sqlite]``
(the embedded default: SQLite + filesystem) and ``[pg+s3]`` (PostgreSQL index, blobs in
SeaweedFS; servers started by the session, see ``tests/backends``). The test gets a fresh
database and key prefix, exported as ``DICOMHUB_INDEX``/``DICOMHUB_BLOBS``/``DICOMHUB_S3_*`` so
that settings built inside the test and ``dicomhub`` child processes use them too;
:class:`Backend` gives further archives of one test their own. ``DICOMHUB_TEST_BACKENDS``
(comma-separated: ``sqlite``, ``pg``, ``pg+s3``) chooses the axis. Tests about SQLite itself
or about files on disk are marked ``sqlite_only``; PostgreSQL plans ``pg_only``.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from dicomhub.config import Settings
from dicomhub.services.archive import Archive
from dicomhub.web.app import create_app
from tests.backends.postgres import Cluster, pg_cluster, pg_url
from tests.backends.seaweed import SeaweedInfo, s3_settings_overrides, seaweed_s3

__all__ = ["pg_cluster", "pg_url", "seaweed_s3"]  # fixtures provided to every test

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "dicom-samples"


@pytest.fixture
def samples_dir() -> Path:
    """The shared sample set (checked out next to the repository)."""
    if not (SAMPLES / "manifest.json").is_file():
        pytest.fail(f"sample set missing at {SAMPLES}")
    return SAMPLES


#: The backend sets: the embedded default, and PostgreSQL + S3 (SeaweedFS).
ALL_BACKENDS = ("sqlite", "pg", "pg+s3")


def _backends() -> tuple[str, ...]:
    wanted = os.environ.get("DICOMHUB_TEST_BACKENDS")
    if not wanted:
        return ("sqlite", "pg+s3")
    chosen = tuple(b.strip() for b in wanted.split(",") if b.strip())
    unknown = set(chosen) - set(ALL_BACKENDS)
    if unknown:
        raise pytest.UsageError(f"DICOMHUB_TEST_BACKENDS: unknown {sorted(unknown)}")
    return chosen


BACKENDS = _backends()
#: Test folders whose tests run on every backend set.
BACKEND_DIRS = ("integration", "e2e")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize integration and end-to-end tests over the backend sets."""
    if "backend" not in metafunc.fixturenames:
        return
    if metafunc.definition.path.parent.name not in BACKEND_DIRS:
        return
    values = list(BACKENDS)
    if metafunc.definition.get_closest_marker("sqlite_only") is not None:
        values = ["sqlite"]
    elif metafunc.definition.get_closest_marker("pg_only") is not None:
        values = [b for b in BACKENDS if b != "sqlite"] or ["pg"]
    metafunc.parametrize("backend", values, indirect=True, scope="module")


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    """The backend set of this test: ``sqlite``, ``pg`` (or ``pg+s3``)."""
    return str(getattr(request, "param", "sqlite"))


@dataclass
class Backend:
    """Where the archives of one test keep their index and blobs."""

    name: str
    tmp_path: Path
    cluster: Cluster | None
    default_index: str | None
    s3: SeaweedInfo | None = None
    _extra: dict[Path, str] = field(default_factory=dict)
    _prefixes: dict[Path, str] = field(default_factory=dict)

    @property
    def filesystem_blobs(self) -> bool:
        """Whether blobs are files under ``<data_dir>/blobs`` (the default store)."""
        return self.s3 is None

    def blob_overrides(self, data_dir: Path) -> dict[str, Any]:
        """Settings that put the blobs of an archive in ``data_dir`` on this backend."""
        if self.s3 is None:
            return {}
        if data_dir not in self._prefixes:
            self._prefixes[data_dir] = f"t-{secrets.token_hex(6)}"
        return s3_settings_overrides(self.s3, self._prefixes[data_dir])

    @property
    def is_sqlite(self) -> bool:
        """Whether the index is the embedded SQLite database."""
        return self.cluster is None

    def index_for(self, data_dir: Path) -> str | None:
        """The index URL for an archive in ``data_dir`` (None: the SQLite default there)."""
        if self.cluster is None:
            return None
        if data_dir == self.tmp_path / "data":
            return self.default_index
        if data_dir not in self._extra:
            self._extra[data_dir] = self.cluster.create_database()
        return self._extra[data_dir]

    def settings(self, data_dir: Path, **overrides: Any) -> Settings:
        """Settings for an archive in ``data_dir`` on this backend."""
        index = self.index_for(data_dir)
        if index is not None:
            overrides.setdefault("index", index)
        for name, value in self.blob_overrides(data_dir).items():
            overrides.setdefault(name, value)
        return Settings(data_dir=data_dir, **overrides)

    def close(self) -> None:
        """Drop the extra databases."""
        if self.cluster is not None:
            for url in self._extra.values():
                self.cluster.drop_database(url)


@pytest.fixture(autouse=True)
def storage(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    """This test's backend, also exported as ``DICOMHUB_*`` variables for its default archive.

    On a server backend ``DICOMHUB_INDEX`` names a fresh database, and with S3
    ``DICOMHUB_BLOBS`` a fresh key prefix in the session's bucket.
    """
    for name in list(os.environ):
        if name.startswith(("DICOMHUB_INDEX", "DICOMHUB_BLOBS", "DICOMHUB_S3_", "AWS_")):
            monkeypatch.delenv(name)
    if backend == "sqlite":
        b = Backend(backend, tmp_path, None, None)
    else:
        cluster: Cluster = request.getfixturevalue("pg_cluster")
        url: str = request.getfixturevalue("pg_url")
        monkeypatch.setenv("DICOMHUB_INDEX", url)
        s3: SeaweedInfo | None = None
        if backend == "pg+s3":
            s3 = request.getfixturevalue("seaweed_s3")
        b = Backend(backend, tmp_path, cluster, url, s3)
        for name, value in b.blob_overrides(tmp_path / "data").items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            monkeypatch.setenv(f"DICOMHUB_{name.upper()}", text)
    yield b
    b.close()


@pytest.fixture
def settings(storage: Backend, tmp_path: Path) -> Settings:
    """Settings for a fresh archive in a temporary folder, on this test's backend."""
    return storage.settings(tmp_path / "data", run_workers=False)


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
