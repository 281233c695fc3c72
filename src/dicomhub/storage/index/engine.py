"""Index database engines and transactions.

SQLite (default) runs in WAL mode with ``synchronous=FULL``: a committed transaction survives
power loss. SQLite allows one writer at a time, so writers in this process take a lock and open
``BEGIN IMMEDIATE`` transactions; other processes (``dicomhub import`` beside a running server)
wait on ``busy_timeout``.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from dicomhub.errors import InvalidInput


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Autocommit at the driver level: we issue BEGIN ourselves (see Index.write()).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA case_sensitive_like=ON")
    cur.execute("PRAGMA cache_size=-65536")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


class IndexDatabase:
    """An engine plus the transaction discipline of its dialect."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.url = url
        self.dialect = parsed.get_backend_name()
        if self.dialect != "sqlite":
            raise InvalidInput(f"unsupported index URL scheme {self.dialect!r}")
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=8,
            max_overflow=16,
            connect_args={"check_same_thread": False, "timeout": 60},
        )
        event.listen(self.engine, "connect", _sqlite_on_connect)
        self._write_lock = threading.Lock()
        # Writers in other processes (several server processes, `dicomhub import`) queue on an
        # advisory file lock: the kernel wakes the next writer at once, where SQLite's own busy
        # handler would poll with growing sleeps.
        self._lock_path = Path(f"{parsed.database}.writer-lock") if parsed.database else None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (a consistent snapshot in WAL mode)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.exec_driver_sql("ROLLBACK")

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed on success and rolled back on any exception."""
        with self._write_lock, self._process_lock(), self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        if self._lock_path is None:
            yield
            return
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
