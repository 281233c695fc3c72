"""Initial schema: tenants, per-level tables, pending blobs, jobs, change feed.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

A frozen snapshot: later revisions change the schema step by step; never edit this one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def Str(length: int) -> sa.String:
    """VARCHAR(length); on PostgreSQL unbounded and bytewise-collated ("C"), as in SQLite."""
    return sa.String(length).with_variant(sa.String(collation="C"), "postgresql")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")

    op.create_table(
        "tenant",
        sa.Column("id", PK, primary_key=True),
        sa.Column("name", Str(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )

    op.create_table(
        "patient",
        sa.Column("pk", PK, primary_key=True),
        sa.Column("tenant_id", PK, sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("identity", Str(200), nullable=False),
        sa.Column("patient_id", Str(64), nullable=False),  # '' when absent
        sa.Column("issuer", Str(64), nullable=False),  # IssuerOfPatientID, '' when absent
        sa.Column("patient_name", Str(324)),
        sa.Column("patient_name_fuzzy", Str(324)),
        sa.Column("patient_birth_date", Str(8)),
        sa.Column("patient_sex", Str(16)),
        sa.Column("attrs", sa.Text, nullable=False),
        sa.UniqueConstraint("tenant_id", "identity", name="uq_patient_identity"),
    )

    op.create_table(
        "study",
        sa.Column("pk", PK, primary_key=True),
        sa.Column("tenant_id", PK, sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("patient_pk", PK, sa.ForeignKey("patient.pk"), nullable=False),
        sa.Column("study_uid", Str(64), nullable=False),
        sa.Column("study_date", Str(8)),
        sa.Column("study_time", Str(16)),
        sa.Column("accession_number", Str(16)),
        sa.Column("study_id", Str(16)),
        sa.Column("referring_physician_name", Str(324)),
        sa.Column("referring_physician_fuzzy", Str(324)),
        sa.Column("study_description", Str(64)),
        sa.Column("modalities", Str(256), nullable=False),  # '\'-joined sorted set
        sa.Column("num_series", sa.Integer, nullable=False),
        sa.Column("num_instances", sa.Integer, nullable=False),
        sa.Column("attrs", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("tenant_id", "study_uid", name="uq_study_uid"),
    )

    op.create_table(
        "series",
        sa.Column("pk", PK, primary_key=True),
        sa.Column("tenant_id", PK, sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("study_pk", PK, sa.ForeignKey("study.pk"), nullable=False),
        sa.Column("series_uid", Str(64), nullable=False),
        sa.Column("modality", Str(16)),
        sa.Column("series_number", sa.Integer),
        sa.Column("series_description", Str(64)),
        sa.Column("pps_start_date", Str(8)),
        sa.Column("pps_start_time", Str(16)),
        sa.Column("num_instances", sa.Integer, nullable=False),
        sa.Column("attrs", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("tenant_id", "series_uid", name="uq_series_uid"),
    )

    op.create_table(
        "instance",
        sa.Column("pk", PK, primary_key=True),
        sa.Column("tenant_id", PK, sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("series_pk", PK, sa.ForeignKey("series.pk"), nullable=False),
        sa.Column("study_pk", PK, sa.ForeignKey("study.pk"), nullable=False),
        sa.Column("sop_uid", Str(64), nullable=False),
        sa.Column("sop_class_uid", Str(64), nullable=False),
        sa.Column("instance_number", sa.Integer),
        sa.Column("rows", sa.Integer),
        sa.Column("columns", sa.Integer),
        sa.Column("bits_allocated", sa.Integer),
        sa.Column("number_of_frames", sa.Integer),
        sa.Column("specific_character_set", Str(128)),
        sa.Column("transfer_syntax_uid", Str(64), nullable=False),
        sa.Column("blob_key", Str(40), nullable=False, unique=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", Str(64), nullable=False),
        sa.Column("frames", sa.Text, nullable=False),  # JSON: [[[offset, length], ...], ...]
        sa.Column("bulk", sa.Text, nullable=False),  # JSON: {key: [offset, length]}
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("tenant_id", "sop_uid", name="uq_instance_uid"),
    )

    # Full instance metadata (DICOM JSON), kept apart so instance scans stay narrow.
    op.create_table(
        "instance_metadata",
        sa.Column(
            "instance_pk", PK, sa.ForeignKey("instance.pk", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("json", sa.Text, nullable=False),
    )

    # A blob being written: reserved before the write, removed in the transaction that makes the
    # instance visible. Rows older than the pending timeout are leftovers of a crash: their blobs
    # are removed by the garbage collector and reported by fsck.
    op.create_table(
        "pending_blob",
        sa.Column("blob_key", Str(40), primary_key=True),
        sa.Column("tenant_id", PK, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )

    # Background work, enqueued in the same transaction as the change that needs it.
    op.create_table(
        "job",
        sa.Column("id", PK, primary_key=True),
        sa.Column("kind", Str(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("run_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.Float, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
    )

    # Append-only change feed with a monotonic sequence (drives replication, webhooks, caches).
    op.create_table(
        "change",
        sa.Column("seq", PK, primary_key=True),
        sa.Column("tenant_id", PK, nullable=False),
        sa.Column("kind", Str(16), nullable=False),
        sa.Column("level", Str(16), nullable=False),
        sa.Column("study_uid", Str(64), nullable=False),
        sa.Column("series_uid", Str(64)),
        sa.Column("sop_uid", Str(64)),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_patient_id", "patient", ["tenant_id", "patient_id"])
    op.create_index("ix_patient_name", "patient", ["tenant_id", "patient_name"])
    op.create_index("ix_study_date", "study", ["tenant_id", "study_date"])
    op.create_index("ix_study_accession", "study", ["tenant_id", "accession_number"])
    op.create_index("ix_study_id", "study", ["tenant_id", "study_id"])
    op.create_index("ix_study_patient", "study", ["patient_pk"])
    op.create_index("ix_series_study", "series", ["study_pk", "modality"])
    op.create_index("ix_series_modality", "series", ["tenant_id", "modality"])
    op.create_index("ix_instance_series", "instance", ["series_pk", "instance_number"])
    op.create_index("ix_instance_study", "instance", ["study_pk"])
    op.create_index("ix_instance_class", "instance", ["tenant_id", "sop_class_uid"])
    op.create_index("ix_job_due", "job", ["run_at"])
    op.create_index("ix_change_tenant", "change", ["tenant_id", "seq"])
    if postgresql:
        # Fuzzy person-name matching (LIKE '% word%') through trigram GIN indexes, and the study
        # list order (see tables.py).
        op.create_index(
            "ix_patient_name_trgm",
            "patient",
            ["patient_name_fuzzy"],
            postgresql_using="gin",
            postgresql_ops={"patient_name_fuzzy": "gin_trgm_ops"},
        )
        op.create_index(
            "ix_study_order",
            "study",
            [
                "tenant_id",
                sa.text("study_date DESC NULLS LAST"),
                sa.text("study_time DESC NULLS LAST"),
                "pk",
            ],
        )
        op.create_index(
            "ix_study_referring_trgm",
            "study",
            ["referring_physician_fuzzy"],
            postgresql_using="gin",
            postgresql_ops={"referring_physician_fuzzy": "gin_trgm_ops"},
        )
    op.execute("INSERT INTO tenant (id, name, created_at) VALUES (1, 'default', 0)")
    if postgresql:  # the explicit id above does not advance the identity sequence
        op.execute("SELECT setval(pg_get_serial_sequence('tenant', 'id'), 1)")


def downgrade() -> None:
    op.drop_table("change")
    op.drop_table("job")
    op.drop_table("pending_blob")
    op.drop_table("instance_metadata")
    op.drop_table("instance")
    op.drop_table("series")
    op.drop_table("study")
    op.drop_table("patient")
    op.drop_table("tenant")
