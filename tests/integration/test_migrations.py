"""The Alembic chain builds exactly the schema that tables.py declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from dicomhub.storage.index.engine import IndexDatabase
from dicomhub.storage.index.migrate import upgrade
from dicomhub.storage.index.tables import metadata


def test_migrated_schema_matches_tables(tmp_path: Path) -> None:
    db = IndexDatabase(f"sqlite:///{tmp_path / 'index.db'}")
    upgrade(db)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    db.dispose()
    assert diff == []


def test_fresh_and_migrated_schemas_are_identical(tmp_path: Path) -> None:
    migrated = IndexDatabase(f"sqlite:///{tmp_path / 'a.db'}")
    upgrade(migrated)
    fresh = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    metadata.create_all(fresh)

    def describe(engine: object) -> dict[str, object]:
        insp = inspect(engine)
        out: dict[str, object] = {}
        for table in sorted(insp.get_table_names()):
            if table == "alembic_version":
                continue
            out[table] = (
                [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)],
                sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(table)),
                sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
            )
        return out

    assert describe(migrated.engine) == describe(fresh)
    migrated.dispose()
    fresh.dispose()


def test_upgrade_is_idempotent_and_creates_default_tenant(tmp_path: Path) -> None:
    db = IndexDatabase(f"sqlite:///{tmp_path / 'index.db'}")
    upgrade(db)
    upgrade(db)
    with db.read() as conn:
        rows = conn.exec_driver_sql("SELECT id, name FROM tenant").all()
    db.dispose()
    assert [tuple(r) for r in rows] == [(1, "default")]
