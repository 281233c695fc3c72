"""Alembic migrations, run programmatically (``dicomhub db upgrade`` and at start-up)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from dicomhub.storage.index import planner_stats
from dicomhub.storage.index.engine import IndexDatabase

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(db: IndexDatabase) -> Config:
    """An Alembic config bound to ``db``'s engine."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = db.engine
    return cfg


def upgrade(db: IndexDatabase, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent), then install the planner statistics."""
    command.upgrade(alembic_config(db), revision)
    if db.dialect == "sqlite":
        with db.write() as conn:
            planner_stats.install(conn)
