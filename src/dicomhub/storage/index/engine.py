"""Index database engines and transactions.

SQLite (default) runs in WAL mode with ``synchronous=FULL``: a committed transaction survives
power loss. SQLite allows one writer at a time, so writers in this process take a lock and open
``BEGIN IMMEDIATE`` transactions; other processes (``dicomhub import`` beside a running server)
queue on an advisory file lock.

PostgreSQL (``postgresql://user@host/db``, driver psycopg 3) is multi-version: writers take no
lock of ours and run at READ COMMITTED, so several processes and nodes write at once. Races
between them (two nodes creating the same study, or storing the same instance) surface as
unique-key violations or deadlocks; :meth:`IndexDatabase.transact` replays such a transaction a
bounded number of times.

Every statement to PostgreSQL is a network round trip, and on a busy host each one costs a
context switch to the server process, which is more than an exact index lookup takes to run.
So the engine adds none of its own: reads run in autocommit (at READ COMMITTED each statement
takes its own snapshot anyway, so ``BEGIN`` and ``ROLLBACK`` around them would only add two
round trips), and a pooled connection is checked for life without a ``SELECT 1``: an idle
connection whose socket has something to read was closed or terminated by the server (restart,
``pg_terminate_backend``, idle timeout), so it is replaced before use (:func:`_pg_checkout`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError
from sqlalchemy.pool import QueuePool

from dicomhub.errors import InvalidInput, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: SQLSTATEs after which replaying the whole transaction can succeed: serialization failure,
#: deadlock detected, unique violation (a concurrent insert of the same key committed first).
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "23505"})


class ConcurrentChange(Exception):
    """Raised inside a transaction that saw a concurrent change and must be replayed."""


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


def _pg_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """Refuse a dead pooled PostgreSQL connection without a round trip (pool checkout hook).

    An idle connection is owed nothing by the server, so a readable socket means an EOF or a
    termination notice (a restarted or failed-over server, an administrator's
    ``pg_terminate_backend``, ``idle_session_timeout``); rarely an asynchronous notice, and
    then a healthy connection is replaced for nothing. Raising DisconnectionError makes the
    pool discard it and check out another (a new connection if need be).

    Raises:
        DisconnectionError: the connection is closed, broken, or has unread input.
    """
    if dbapi_conn.closed or getattr(dbapi_conn, "broken", False):
        raise DisconnectionError("connection closed")
    poller = select.poll()  # not select.select: a busy server's descriptors pass FD_SETSIZE
    try:
        poller.register(dbapi_conn.fileno(), select.POLLIN)
        events = poller.poll(0)
    except (OSError, ValueError) as exc:  # the socket is gone
        raise DisconnectionError("connection socket unusable") from exc
    if events:  # input, EOF, hang-up or error
        raise DisconnectionError("server closed or terminated an idle connection")


def normalize_url(url: str) -> URL:
    """Parse an index URL; ``postgresql://`` and ``postgres://`` select the psycopg 3 driver.

    Raises:
        InvalidInput: the URL is malformed or names an unsupported database.
    """
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(f"malformed index URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        driver = parsed.get_driver_name()
        if driver not in ("psycopg", "postgresql", ""):
            raise InvalidInput(f"unsupported PostgreSQL driver {driver!r} (use psycopg)")
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed
    raise InvalidInput(f"unsupported index URL scheme {backend!r}")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and ``dicomhub check``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "<malformed URL>"
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


class IndexDatabase:
    """An engine plus the transaction discipline of its dialect."""

    def __init__(self, url: str, *, pool_size: int = 5, max_overflow: int = 10) -> None:
        parsed = normalize_url(url)
        self.url = url
        self.dialect = parsed.get_backend_name()
        self._write_lock: threading.Lock | None = None
        self._lock_path: Path | None = None
        if self.dialect == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                parsed,
                poolclass=QueuePool,
                pool_size=8,
                max_overflow=16,
                connect_args={"check_same_thread": False, "timeout": 60},
            )
            event.listen(self.engine, "connect", _sqlite_on_connect)
            self._write_lock = threading.Lock()
            # Writers in other processes (several server processes, `dicomhub import`) queue on
            # an advisory file lock: the kernel wakes the next writer at once, where SQLite's
            # own busy handler would poll with growing sleeps.
            if parsed.database:
                self._lock_path = Path(f"{parsed.database}.writer-lock")
        else:
            # A small pool per process (every server process has its own). Dead connections are
            # replaced at checkout without a round trip (see _pg_checkout; no pool_pre_ping);
            # recycling bounds the life of one that a proxy dropped silently.
            self.engine = create_engine(
                parsed,
                isolation_level="READ COMMITTED",
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_recycle=1800,
                pool_timeout=60,
                connect_args={
                    "application_name": "dicomhub",
                    # a URL's own ?connect_timeout= wins
                    **({} if "connect_timeout" in parsed.query else {"connect_timeout": 10}),
                },
            )
            event.listen(self.engine, "checkout", _pg_checkout)

    @property
    def is_sqlite(self) -> bool:
        """Whether this is the embedded SQLite index."""
        return self.dialect == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read (SQLite: a transaction, one consistent snapshot; PostgreSQL: autocommit).

        On PostgreSQL each statement sees what was committed when it started, exactly as in a
        READ COMMITTED transaction, without the round trips of ``BEGIN`` and ``ROLLBACK``.
        """
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.exec_driver_sql("BEGIN")
                try:
                    yield conn
                finally:
                    conn.exec_driver_sql("ROLLBACK")
            else:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                try:
                    yield conn
                finally:
                    conn.rollback()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed on success and rolled back on any exception."""
        if not self.is_sqlite:
            with self.engine.begin() as conn:
                yield conn
            return
        assert self._write_lock is not None
        with self._write_lock, self._process_lock(), self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    def transact(self, body: Callable[[Connection], T], *, attempts: int = 8) -> T:
        """Run ``body`` in a write transaction, replaying it after a lost race.

        A transaction that fails on a unique violation, a deadlock or a serialization failure
        (or raises :class:`ConcurrentChange`) is rolled back and run again after a short
        randomised back-off, at most ``attempts`` times; ``body`` must therefore only touch the
        database (no blob or other side effects) and return what the caller acts on.

        Raises:
            Unavailable: still losing races once the attempts are exhausted.
            Any other error at once.
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.write() as conn:
                    return body(conn)
            except (DBAPIError, ConcurrentChange) as exc:
                if not _retryable(exc):
                    raise
                if attempt == attempts:
                    # Still losing races after every replay: busy, not broken (503, retry).
                    raise Unavailable("the index is busy with concurrent changes; retry") from exc
                log.debug("replaying index transaction after %s (attempt %d)", exc, attempt)
                time.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311
        raise AssertionError("unreachable")

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


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, ConcurrentChange):
        return True
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in RETRYABLE_SQLSTATES
    # SQLite reports no SQLSTATE; its writers are serialised, so a unique violation there is a
    # real error, not a lost race.
    return False
