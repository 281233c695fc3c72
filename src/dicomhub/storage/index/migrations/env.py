"""Alembic environment: the engine comes from the caller (see ``migrate.py``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from dicomhub.storage.index.tables import metadata

engine: Engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    if connection.in_transaction():
        connection.commit()
