"""Job state, tenant, progress and result (SCU operations run as durable jobs).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Until now a job row existed only until it succeeded. Jobs started through the JSON API (send,
query, retrieve against a remote AE) keep their row after they finish, so that a client can
read the outcome: ``state`` (queued, running, retrying, succeeded, failed, cancelled), the
tenant that owns them, sub-operation counts, the result and timestamps. Existing rows are
queued internal jobs (``tenant_id`` NULL).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def Str(length: int) -> sa.String:
    """VARCHAR(length); on PostgreSQL unbounded and bytewise-collated ("C"), as in SQLite."""
    return sa.String(length).with_variant(sa.String(collation="C"), "postgresql")


def upgrade() -> None:
    op.add_column(
        "job", sa.Column("state", Str(16), nullable=False, server_default=sa.text("'queued'"))
    )
    op.add_column("job", sa.Column("tenant_id", PK, nullable=True))
    op.add_column("job", sa.Column("progress", sa.Text, nullable=True))
    op.add_column("job", sa.Column("result", sa.Text, nullable=True))
    op.add_column("job", sa.Column("updated_at", sa.Float, nullable=True))
    op.add_column("job", sa.Column("finished_at", sa.Float, nullable=True))
    op.create_index("ix_job_state", "job", ["state", "run_at"])
    op.create_index("ix_job_tenant", "job", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_job_tenant", table_name="job")
    op.drop_index("ix_job_state", table_name="job")
    with op.batch_alter_table("job") as batch:
        for name in ("finished_at", "updated_at", "result", "progress", "tenant_id", "state"):
            batch.drop_column(name)
