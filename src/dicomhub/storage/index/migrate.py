"""Alembic migrations, run programmatically (``dicomhub db upgrade`` and at start-up)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from dicomhub.storage.index import planner_stats
from dicomhub.storage.index.engine import IndexDatabase

MIGRATIONS = Path(__file__).with_name("migrations")

#: Key of the PostgreSQL advisory lock that serialises migrations of several starting nodes.
MIGRATION_LOCK_KEY = 0x44434D48  # "DCMH"


def alembic_config(db: IndexDatabase) -> Config:
    """An Alembic config bound to ``db``'s engine."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = db.engine
    return cfg


def upgrade(db: IndexDatabase, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent), then install the planner statistics.

    On PostgreSQL the migration runs under an advisory lock, so nodes that start together
    migrate one after the other (the later ones find the schema current).
    """
    if db.is_sqlite:
        command.upgrade(alembic_config(db), revision)
        with db.write() as conn:
            planner_stats.install(conn)
        return
    with db.engine.connect() as lock:
        lock.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
        try:
            command.upgrade(alembic_config(db), revision)
        finally:
            lock.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
            lock.commit()


def head_revision() -> str | None:
    """The newest revision this version of dicomhub knows."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(db: IndexDatabase) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with db.engine.connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
        conn.rollback()
    return rev
