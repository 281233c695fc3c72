"""Known remote application entities (DIMSE peers).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "remote_ae",
        sa.Column("pk", PK, primary_key=True),
        sa.Column("tenant_id", PK, sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("may_store", sa.Boolean, nullable=False),
        sa.Column("may_query", sa.Boolean, nullable=False),
        sa.Column("may_retrieve", sa.Boolean, nullable=False),
        sa.Column("is_move_destination", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("tenant_id", "ae_title", name="uq_remote_ae_title"),
    )
    op.create_index("ix_remote_ae_title", "remote_ae", ["ae_title"])


def downgrade() -> None:
    op.drop_index("ix_remote_ae_title", table_name="remote_ae")
    op.drop_table("remote_ae")
