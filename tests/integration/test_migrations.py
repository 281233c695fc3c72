"""The Alembic chain builds exactly the schema that tables.py declares, on every backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect

from dicomhub.storage.index.engine import IndexDatabase, normalize_url
from dicomhub.storage.index.migrate import current_revision, head_revision, upgrade
from dicomhub.storage.index.planner_stats import STATS
from dicomhub.storage.index.tables import exists_on, metadata
from tests.backends.postgres import Cluster


@pytest.fixture
def empty_db(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], str]]:
    """Makes URLs of new, empty index databases on this test's backend."""
    made: list[str] = []
    cluster: Cluster | None = None if backend == "sqlite" else request.getfixturevalue("pg_cluster")

    def make() -> str:
        if cluster is None:
            url = f"sqlite:///{tmp_path / f'db{len(made)}.db'}"
        else:
            url = cluster.create_database(empty=True)
        made.append(url)
        return url

    yield make
    if cluster is not None:
        for url in made:
            cluster.drop_database(url)


def describe(engine: Engine) -> dict[str, object]:
    """Tables with their columns (name, type, nullability), indexes and unique constraints."""
    insp = inspect(engine)
    out: dict[str, object] = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        indexes = []
        for i in insp.get_indexes(table):
            options: dict[str, Any] = i.get("dialect_options", {})
            indexes.append(
                (
                    i["name"],
                    tuple(str(c) for c in i["column_names"]),
                    tuple(str(e) for e in i.get("expressions", ())),
                    bool(i["unique"]),
                    str(i.get("column_sorting", {})),
                    str(sorted(options.items())),
                )
            )
        out[table] = (
            [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)],
            sorted(indexes),
            sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
        )
    return out


def test_migrated_schema_matches_tables(empty_db: Callable[[], str]) -> None:
    db = IndexDatabase(empty_db())
    upgrade(db)
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_object": lambda obj, _name, _type, reflected, _other: (
                    reflected or exists_on(obj, db.dialect)
                )
            },
        )
        diff = compare_metadata(context, metadata)
    db.dispose()
    assert diff == []


def test_fresh_and_migrated_schemas_are_identical(empty_db: Callable[[], str]) -> None:
    migrated = IndexDatabase(empty_db())
    upgrade(migrated)
    fresh = create_engine(normalize_url(empty_db()))
    metadata.create_all(fresh)
    try:
        want = describe(fresh)
        assert describe(migrated.engine) == want
        if migrated.dialect == "postgresql":  # the PostgreSQL-only indexes exist (ddl_if)
            names = {str(i["name"]) for i in inspect(fresh).get_indexes("patient")}
            names |= {str(i["name"]) for i in inspect(fresh).get_indexes("study")}
            assert {"ix_patient_name_trgm", "ix_study_referring_trgm", "ix_study_order"} <= names
    finally:
        migrated.dispose()
        fresh.dispose()


def test_upgrade_is_idempotent_and_creates_default_tenant(empty_db: Callable[[], str]) -> None:
    db = IndexDatabase(empty_db())
    assert current_revision(db) is None
    upgrade(db)
    upgrade(db)
    assert current_revision(db) == head_revision()
    with db.read() as conn:
        rows = conn.exec_driver_sql("SELECT id, name FROM tenant").all()
    db.dispose()
    assert [tuple(r) for r in rows] == [(1, "default")]


@pytest.mark.sqlite_only
def test_sqlite_planner_statistics_and_writer_lock(tmp_path: Path) -> None:
    db = IndexDatabase(f"sqlite:///{tmp_path / 'index.db'}")
    upgrade(db)
    with db.read() as conn:
        stats = {
            (str(t), str(s)) for t, _i, s in conn.exec_driver_sql("SELECT * FROM sqlite_stat1")
        }
    db.dispose()
    assert ("study", "500000 250000 200") in stats  # ix_study_date
    assert len(stats) >= len(STATS) - 2
    assert (tmp_path / "index.db.writer-lock").exists()  # writers queued on the flock
