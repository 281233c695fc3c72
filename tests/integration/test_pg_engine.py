"""The PostgreSQL engine adds no round trips of its own, and still survives dead connections.

Reads run in autocommit (no ``BEGIN``/``ROLLBACK`` around them) and pooled connections are
checked for life without a ``SELECT 1``; a connection that the server terminated is replaced at
checkout instead of failing the next request.
"""

from __future__ import annotations

import select
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection

from dicomhub.storage.index.engine import IndexDatabase

pytestmark = pytest.mark.pg_only


@pytest.fixture
def db(pg_url: str) -> Iterator[IndexDatabase]:
    index = IndexDatabase(pg_url, pool_size=1, max_overflow=0)
    yield index
    index.dispose()


def _status(conn: Connection) -> TransactionStatus:
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver.info.transaction_status


def _backend_pid(db: IndexDatabase) -> int:
    with db.read() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def test_reads_open_no_transaction_and_writes_do(db: IndexDatabase) -> None:
    with db.read() as conn:
        conn.exec_driver_sql("SELECT 1").all()
        assert _status(conn) is TransactionStatus.IDLE
    # The same pooled connection is transactional again for a writer.
    with db.write() as conn:
        conn.exec_driver_sql("SELECT 1").all()
        assert _status(conn) is TransactionStatus.INTRANS
    with db.read() as conn:
        conn.exec_driver_sql("SELECT 1").all()
        assert _status(conn) is TransactionStatus.IDLE


def test_write_rolls_back_on_error(db: IndexDatabase) -> None:
    with db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE probe (x int)")
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.exec_driver_sql("INSERT INTO probe VALUES (1)")
        raise RuntimeError("abort")
    with db.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM probe").scalar_one() == 0


def test_terminated_connection_is_replaced_at_checkout(db: IndexDatabase, pg_url: str) -> None:
    victim = _backend_pid(db)  # the pool's only connection, now idle in the pool
    with db.engine.connect() as conn:  # the same pooled connection: find its socket
        fd = conn.connection.driver_connection.fileno()  # type: ignore[union-attr]
    admin = psycopg.connect(pg_url, autocommit=True)
    try:
        admin.execute("SELECT pg_terminate_backend(%s)", (victim,))
    finally:
        admin.close()
    # Wait (not a timing assertion) until the server's goodbye reaches the idle socket.
    readable, _, _ = select.select([fd], [], [], 30)
    assert readable
    assert _backend_pid(db) != victim  # replaced, no error
    with db.write() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
