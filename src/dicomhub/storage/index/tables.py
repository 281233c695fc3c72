"""The index schema: explicit per-level tables (patient, study, series, instance).

``tenant_id`` leads every unique key and index: the same SOP Instance UID may exist in two
hospitals, and no query ever crosses tenants. Level rows carry the attributes that QIDO-RS and
C-FIND match on as columns (PS3.18 §10.6.1.2.3, PS3.4 C.6) and the rest of the level's
attributes as DICOM JSON text, so queries are answered from the index alone.

This module is the *current* schema; Alembic revisions under ``migrations/versions`` build it
step by step (revision 0001 is a frozen snapshot). A test checks that both agree, on SQLite and
on PostgreSQL.

On PostgreSQL every string column uses the ``"C"`` collation: comparison and ordering are
bytewise, as in SQLite, so the literal-prefix ranges that :mod:`.queries` adds to wildcard
matches (PS3.4 C.2.2.2.4) are exact and the plain B-tree indexes serve ``LIKE 'ABC%'``
(PostgreSQL uses a B-tree for a prefix ``LIKE`` only under the C collation or
``text_pattern_ops``). PostgreSQL also gets a few indexes of its own, created only there
(``ddl_if``): trigram (``pg_trgm``) GIN indexes for fuzzy person-name matching (PS3.18
§8.3.4.1, a ``LIKE '% word%'`` on the ``*_fuzzy`` columns), GIN indexes of the word prefixes
of the same columns (``dicomhub_name_prefixes``, for one-word fuzzy queries), and the study
list order.
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
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
    event,
    func,
    text,
)

metadata = MetaData()


def Str(length: int) -> String:  # noqa: N802 (a type factory, read like the type)
    """A string column: VARCHAR(``length``), on PostgreSQL unbounded and collated "C".

    ``length`` is the VR's maximum (PS3.5 §6.2), which real files exceed (``1997.04.24`` in a
    DA); SQLite never enforces it, and on PostgreSQL it is dropped so both accept the same
    data. Indexed values are capped by the store instead (B-tree entries are bounded).
    """
    return String(length).with_variant(String(collation="C"), "postgresql")


def exists_on(obj: object, dialect: str) -> bool:
    """Whether a schema object (an index) is created on ``dialect`` (see ``ddl_if`` below).

    Alembic's comparison ignores ``ddl_if``; its ``include_object`` hook uses this instead.
    """
    ddl_if = getattr(obj, "_ddl_if", None)
    wanted = getattr(ddl_if, "dialect", None)
    if wanted is None:
        return True
    return dialect == wanted if isinstance(wanted, str) else dialect in wanted


# pg_trgm ships with PostgreSQL (contrib); the fuzzy-name indexes below need it.
event.listen(
    metadata,
    "before_create",
    DDL("CREATE EXTENSION IF NOT EXISTS pg_trgm").execute_if(  # type: ignore[no-untyped-call]
        dialect="postgresql"
    ),
)

#: Longest word prefix :data:`NAME_PREFIXES_FUNCTION` indexes (longer query words are cut).
NAME_PREFIX_CHARS = 16

#: PostgreSQL: every prefix (up to :data:`NAME_PREFIX_CHARS` characters) of every word of a
#: fuzzy key (``person_name.fuzzy_key``: words separated by single spaces), e.g.
#: ``' DOE JO '`` -> ``{D, DO, DOE, J, JO}``. A GIN index of it answers "some name component
#: starts with W" as ``prefixes @> ARRAY[W]``: one posting list, however many names share the
#: first letters, where trigrams of ``'% W%'`` intersect the lists of its common trigrams.
NAME_PREFIXES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION dicomhub_name_prefixes(key text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT ARRAY(
    SELECT DISTINCT left(w, n)
    FROM unnest(string_to_array(btrim(key, ' '), ' ')) AS w,
         generate_series(1, least(length(w), {NAME_PREFIX_CHARS})) AS n
    WHERE w <> ''
  )
$$"""
event.listen(
    metadata,
    "before_create",
    DDL(NAME_PREFIXES_FUNCTION).execute_if(  # type: ignore[no-untyped-call]
        dialect="postgresql"
    ),
)

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
PK = BigInteger().with_variant(Integer(), "sqlite")

tenant = Table(
    "tenant",
    metadata,
    Column("id", PK, primary_key=True),
    Column("name", Str(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

patient = Table(
    "patient",
    metadata,
    Column("pk", PK, primary_key=True),
    Column("tenant_id", PK, ForeignKey("tenant.id"), nullable=False),
    # Who the patient is within the tenant: IssuerOfPatientID + PatientID, or, for instances
    # without a PatientID, the study (such patients are never merged across studies).
    Column("identity", Str(200), nullable=False),
    Column("patient_id", Str(64), nullable=False),  # '' when absent
    Column("issuer", Str(64), nullable=False),  # IssuerOfPatientID, '' when absent
    Column("patient_name", Str(324)),
    Column("patient_name_fuzzy", Str(324)),
    Column("patient_birth_date", Str(8)),
    Column("patient_sex", Str(16)),
    Column("attrs", Text, nullable=False),
    UniqueConstraint("tenant_id", "identity", name="uq_patient_identity"),
    Index("ix_patient_id", "tenant_id", "patient_id"),
    Index("ix_patient_name", "tenant_id", "patient_name"),
    Index(
        "ix_patient_name_trgm",
        "patient_name_fuzzy",
        postgresql_using="gin",
        postgresql_ops={"patient_name_fuzzy": "gin_trgm_ops"},
    ).ddl_if(dialect="postgresql"),
)

study = Table(
    "study",
    metadata,
    Column("pk", PK, primary_key=True),
    Column("tenant_id", PK, ForeignKey("tenant.id"), nullable=False),
    Column("patient_pk", PK, ForeignKey("patient.pk"), nullable=False),
    Column("study_uid", Str(64), nullable=False),
    Column("study_date", Str(8)),
    Column("study_time", Str(16)),
    Column("accession_number", Str(16)),
    Column("study_id", Str(16)),
    Column("referring_physician_name", Str(324)),
    Column("referring_physician_fuzzy", Str(324)),
    Column("study_description", Str(64)),
    Column("modalities", Str(256), nullable=False),  # '\'-joined sorted set
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
    Index(
        "ix_study_referring_trgm",
        "referring_physician_fuzzy",
        postgresql_using="gin",
        postgresql_ops={"referring_physician_fuzzy": "gin_trgm_ops"},
    ).ddl_if(dialect="postgresql"),
)

# The study list order of queries.py (date and time descending, empty last), so a page of
# studies, with or without a date range, is an index walk that stops at the limit. (SQLite
# sorts NULL first ascending, hence last descending, and walks ix_study_date backwards.)
Index(
    "ix_study_order",
    study.c.tenant_id,
    study.c.study_date.desc().nulls_last(),
    study.c.study_time.desc().nulls_last(),
    study.c.pk,
).ddl_if(dialect="postgresql")

# Word-prefix indexes of the fuzzy person-name keys (PostgreSQL, see NAME_PREFIXES_FUNCTION).
Index(
    "ix_patient_name_prefixes",
    func.dicomhub_name_prefixes(patient.c.patient_name_fuzzy),
    postgresql_using="gin",
).ddl_if(dialect="postgresql")
Index(
    "ix_study_referring_prefixes",
    func.dicomhub_name_prefixes(study.c.referring_physician_fuzzy),
    postgresql_using="gin",
).ddl_if(dialect="postgresql")

series = Table(
    "series",
    metadata,
    Column("pk", PK, primary_key=True),
    Column("tenant_id", PK, ForeignKey("tenant.id"), nullable=False),
    Column("study_pk", PK, ForeignKey("study.pk"), nullable=False),
    Column("series_uid", Str(64), nullable=False),
    Column("modality", Str(16)),
    Column("series_number", Integer),
    Column("series_description", Str(64)),
    Column("pps_start_date", Str(8)),
    Column("pps_start_time", Str(16)),
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
    Column("sop_uid", Str(64), nullable=False),
    Column("sop_class_uid", Str(64), nullable=False),
    Column("instance_number", Integer),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("bits_allocated", Integer),
    Column("number_of_frames", Integer),
    Column("specific_character_set", Str(128)),
    Column("transfer_syntax_uid", Str(64), nullable=False),
    Column("blob_key", Str(40), nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("sha256", Str(64), nullable=False),
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
    Column("blob_key", Str(40), primary_key=True),
    Column("tenant_id", PK, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Background work, enqueued in the same transaction as the change that needs it. Internal jobs
# (tenant_id NULL: blob removal) are deleted when done; jobs of a tenant (SCU operations started
# through the JSON API) keep their row, with state, progress and result, until purged.
job = Table(
    "job",
    metadata,
    Column("id", PK, primary_key=True),
    Column("kind", Str(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("run_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("locked_until", Float, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    # queued | running | retrying | succeeded | failed | cancelled
    Column("state", Str(16), nullable=False, server_default=text("'queued'")),
    Column("tenant_id", PK),
    Column("progress", Text),  # JSON: sub-operation counts
    Column("result", Text),  # JSON: what a finished job produced
    Column("updated_at", Float),
    Column("finished_at", Float),
    Index("ix_job_due", "run_at"),
    Index("ix_job_state", "state", "run_at"),
    Index("ix_job_tenant", "tenant_id", "id"),
)

# Append-only change feed with a monotonic sequence (drives replication, webhooks, caches).
change = Table(
    "change",
    metadata,
    Column("seq", PK, primary_key=True),
    Column("tenant_id", PK, nullable=False),
    Column("kind", Str(16), nullable=False),
    Column("level", Str(16), nullable=False),
    Column("study_uid", Str(64), nullable=False),
    Column("series_uid", Str(64)),
    Column("sop_uid", Str(64)),
    Column("at", Float, nullable=False),
    Index("ix_change_tenant", "tenant_id", "seq"),
)

# Known remote application entities (DIMSE peers): who may associate, from where, and what
# each may do. An AE belongs to one tenant; everything it stores or sees is that tenant's.
remote_ae = Table(
    "remote_ae",
    metadata,
    Column("pk", PK, primary_key=True),
    Column("tenant_id", PK, ForeignKey("tenant.id"), nullable=False),
    Column("ae_title", String(16), nullable=False),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("may_store", Boolean, nullable=False),
    Column("may_query", Boolean, nullable=False),
    Column("may_retrieve", Boolean, nullable=False),
    Column("is_move_destination", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant_id", "ae_title", name="uq_remote_ae_title"),
    Index("ix_remote_ae_title", "ae_title"),
)
