"""The index schema: explicit per-level tables (patient, study, series, instance).

``tenant_id`` leads every unique key and index: the same SOP Instance UID may exist in two
hospitals, and no query ever crosses tenants. Level rows carry the attributes that QIDO-RS and
C-FIND match on as columns (PS3.18 §10.6.1.2.3, PS3.4 C.6) and the rest of the level's
attributes as DICOM JSON text, so queries are answered from the index alone.

This module is the *current* schema; Alembic revisions under ``migrations/versions`` build it
step by step (revision 0001 is a frozen snapshot). A test checks that both agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
PK = BigInteger().with_variant(Integer(), "sqlite")

tenant = Table(
    "tenant",
    metadata,
    Column("id", PK, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

patient = Table(
    "patient",
    metadata,
    Column("pk", PK, primary_key=True),
    Column("tenant_id", PK, ForeignKey("tenant.id"), nullable=False),
    # Who the patient is within the tenant: IssuerOfPatientID + PatientID, or, for instances
    # without a PatientID, the study (such patients are never merged across studies).
    Column("identity", String(200), nullable=False),
    Column("patient_id", String(64), nullable=False),  # '' when absent
    Column("issuer", String(64), nullable=False),  # IssuerOfPatientID, '' when absent
    Column("patient_name", String(324)),
    Column("patient_name_fuzzy", String(324)),
    Column("patient_birth_date", String(8)),
    Column("patient_sex", String(16)),
    Column("attrs", Text, nullable=False),
    UniqueConstraint("tenant_id", "identity", name="uq_patient_identity"),
    Index("ix_patient_id", "tenant_id", "patient_id"),
    Index("ix_patient_name", "tenant_id", "patient_name"),
)

study = Table(
    "study",
    metadata,
    Column("pk", PK, primary_key=True),
    Column("tenant_id", PK, ForeignKey("tenant.id"), nullable=False),
    Column("patient_pk", PK, ForeignKey("patient.pk"), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("study_date", String(8)),
    Column("study_time", String(16)),
    Column("accession_number", String(16)),
    Column("study_id", String(16)),
    Column("referring_physician_name", String(324)),
    Column("referring_physician_fuzzy", String(324)),
    Column("study_description", String(64)),
    Column("modalities", String(256), nullable=False),  # '\'-joined sorted set
    Column("num_series", Integer, nullable=False),
    Column("num_instances", Integer, nullable=False),
    Column("attrs", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("tenant_id", "study_uid", name="uq_study_uid"),
    Index("ix_study_date", "tenant_id", "study_date"),
    Index("ix_study_accession", "tenant_id", "accession_number"),
    Index("ix_study_id", "tenant_id", "study_id"),
    Index("ix_study_patient", "patient_pk"),
)

series = Table(
    "series",
    metadata,
    Column("pk", PK, primary_key=True),
    Column("tenant_id", PK, ForeignKey("tenant.id"), nullable=False),
    Column("study_pk", PK, ForeignKey("study.pk"), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Column("modality", String(16)),
    Column("series_number", Integer),
    Column("series_description", String(64)),
    Column("pps_start_date", String(8)),
    Column("pps_start_time", String(16)),
    Column("num_instances", Integer, nullable=False),
    Column("attrs", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant_id", "series_uid", name="uq_series_uid"),
    Index("ix_series_study", "study_pk", "modality"),
    Index("ix_series_modality", "tenant_id", "modality"),
)

instance = Table(
    "instance",
    metadata,
    Column("pk", PK, primary_key=True),
    Column("tenant_id", PK, ForeignKey("tenant.id"), nullable=False),
    Column("series_pk", PK, ForeignKey("series.pk"), nullable=False),
    Column("study_pk", PK, ForeignKey("study.pk"), nullable=False),
    Column("sop_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("instance_number", Integer),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("bits_allocated", Integer),
    Column("number_of_frames", Integer),
    Column("specific_character_set", String(128)),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("blob_key", String(40), nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("frames", Text, nullable=False),  # JSON: [[[offset, length], ...], ...]
    Column("bulk", Text, nullable=False),  # JSON: {key: [offset, length]}
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant_id", "sop_uid", name="uq_instance_uid"),
    Index("ix_instance_series", "series_pk", "instance_number"),
    Index("ix_instance_study", "study_pk"),
    Index("ix_instance_class", "tenant_id", "sop_class_uid"),
)

# Full instance metadata (DICOM JSON), kept apart so instance scans stay narrow.
instance_metadata = Table(
    "instance_metadata",
    metadata,
    Column("instance_pk", PK, ForeignKey("instance.pk", ondelete="CASCADE"), primary_key=True),
    Column("json", Text, nullable=False),
)

# A blob being written: reserved before the write, removed in the transaction that makes the
# instance visible. Rows older than the pending timeout are leftovers of a crash: their blobs
# are removed by the garbage collector and reported by fsck.
pending_blob = Table(
    "pending_blob",
    metadata,
    Column("blob_key", String(40), primary_key=True),
    Column("tenant_id", PK, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Background work, enqueued in the same transaction as the change that needs it.
job = Table(
    "job",
    metadata,
    Column("id", PK, primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("run_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("locked_until", Float, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Index("ix_job_due", "run_at"),
)

# Append-only change feed with a monotonic sequence (drives replication, webhooks, caches).
change = Table(
    "change",
    metadata,
    Column("seq", PK, primary_key=True),
    Column("tenant_id", PK, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("level", String(16), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("series_uid", String(64)),
    Column("sop_uid", String(64)),
    Column("at", Float, nullable=False),
    Index("ix_change_tenant", "tenant_id", "seq"),
)
