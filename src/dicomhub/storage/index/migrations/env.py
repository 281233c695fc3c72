"""Alembic environment: the engine comes from the caller (see ``migrate.py``)."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Engine

from dicomhub.storage.index.tables import exists_on, metadata

engine: Engine = context.config.attributes["engine"]


def include_object(obj: Any, name: Any, type_: str, reflected: bool, compare_to: Any) -> bool:
    # Dialect-specific indexes (ddl_if) are only expected on their dialect.
    return reflected or exists_on(obj, engine.dialect.name)


with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    if connection.in_transaction():
        connection.commit()
