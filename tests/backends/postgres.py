"""A throwaway PostgreSQL server for the test suite, and a fresh database per test.

``DICOMHUB_TEST_PG_URL`` (e.g. ``postgresql://postgres@db.example/postgres``; the role must be
allowed to create databases) selects an existing server. Otherwise the session starts its own
cluster with ``initdb``/``pg_ctl`` from the PostgreSQL server binaries (Debian package
``postgresql``; ``scripts/install.sh --test`` installs it): on a free loopback port, its unix
socket in the cluster's temporary folder, fsync on, never the machine's own server. initdb
refuses to run as root, so as root the cluster belongs to the ``postgres`` user.

Every database is created from a template that is already migrated, so a fresh, empty,
current schema costs one ``CREATE DATABASE``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dicomhub.storage.index.engine import IndexDatabase
from dicomhub.storage.index.migrate import upgrade

ENV_URL = "DICOMHUB_TEST_PG_URL"


def server_binaries() -> Path | None:
    """The folder of the newest PostgreSQL server binaries (initdb, pg_ctl), if installed."""

    def version(pg_ctl: Path) -> int:
        name = pg_ctl.parent.parent.name
        return int(name) if name.isdigit() else 0

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=version)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Cluster:
    """A PostgreSQL server the tests may create and drop databases on."""

    admin_url: str  # a database to connect to for CREATE/DROP DATABASE
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    template: str | None = None

    def url(self, database: str) -> str:
        """The URL of ``database`` on this server."""
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def _admin(self, sql: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=None)
        try:
            with engine.connect() as conn:
                conn.execute(text(sql))
        finally:
            engine.dispose()

    def create_database(self, *, empty: bool = False) -> str:
        """A new database with the current schema (or none: ``empty``); returns its URL."""
        if empty:
            name = f"dicomhub_e{os.getpid()}_{next(self._counter)}"
            self._admin(f'CREATE DATABASE "{name}"')
            return self.url(name)
        if self.template is None:
            self.template = f"dicomhub_tpl_{os.getpid()}"
            self._admin(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
            self._admin(f'CREATE DATABASE "{self.template}"')
            db = IndexDatabase(self.url(self.template))
            upgrade(db)
            db.dispose()
        name = f"dicomhub_t{os.getpid()}_{next(self._counter)}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (closing any connection still open to it)."""
        name = make_url(url).database
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_template(self) -> None:
        """Drop the template database (at the end of the session)."""
        if self.template is not None:
            self._admin(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')


def _run(cmd: list[str], user: str | None) -> None:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stdout}{res.stderr}")


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Start a private PostgreSQL cluster; yield its admin URL; stop and delete it."""
    bindir = server_binaries()
    if bindir is None:
        pytest.fail(
            "PostgreSQL server binaries not found (install with `scripts/install.sh --test`, "
            f"Debian package postgresql) and {ENV_URL} is not set"
        )
    user = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="dicomhub-pg-"))
    data = folder / "data"
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(folder, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    try:
        # A non-C default collation, as production clusters have: the schema must not rely on
        # the database's collation (see tables.py).
        locale = "en_US.UTF-8" if _has_locale("en_US.utf8") else "C.UTF-8"
        _run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", f"--locale={locale}"],
            user,
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} "
            "-c max_connections=300 -c shared_buffers=64MB -c fsync=on"
        )
        _run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
             "-t", "60", "-o", options, "start"],
            user,
        )  # fmt: skip
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], user)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _has_locale(name: str) -> bool:
    res = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False)
    return name in res.stdout.split()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The session's PostgreSQL server: ``DICOMHUB_TEST_PG_URL`` or a throwaway cluster."""
    given = os.environ.get(ENV_URL)
    with contextlib.nullcontext(given) if given else throwaway_cluster() as admin_url:
        cluster = Cluster(admin_url)
        try:
            yield cluster
        finally:
            cluster.drop_template()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh, migrated, empty database for one test (dropped afterwards)."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)
