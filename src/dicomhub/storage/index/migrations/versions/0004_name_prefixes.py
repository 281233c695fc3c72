"""Word-prefix GIN indexes for fuzzy person-name matching (PostgreSQL only).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A one-word fuzzy query (PS3.18 §8.3.4.1, ``PatientName=smi&fuzzymatching=true``) was a
``LIKE '% SMI%'`` on the trigram index of the fuzzy key; when every name shares its first
letters, every trigram list is long and the planner's estimate poor. The function
``dicomhub_name_prefixes`` (see ``tables.NAME_PREFIXES_FUNCTION``) lists the word prefixes of a
key; a GIN index of it answers the query with one posting list. SQLite is unchanged.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copy of tables.NAME_PREFIXES_FUNCTION as of this revision.
NAME_PREFIXES_FUNCTION = """
CREATE OR REPLACE FUNCTION dicomhub_name_prefixes(key text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT ARRAY(
    SELECT DISTINCT left(w, n)
    FROM unnest(string_to_array(btrim(key, ' '), ' ')) AS w,
         generate_series(1, least(length(w), 16)) AS n
    WHERE w <> ''
  )
$$"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(NAME_PREFIXES_FUNCTION)
    op.execute(
        "CREATE INDEX ix_patient_name_prefixes ON patient "
        "USING gin (dicomhub_name_prefixes(patient_name_fuzzy))"
    )
    op.execute(
        "CREATE INDEX ix_study_referring_prefixes ON study "
        "USING gin (dicomhub_name_prefixes(referring_physician_fuzzy))"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_study_referring_prefixes")
    op.execute("DROP INDEX IF EXISTS ix_patient_name_prefixes")
    op.execute("DROP FUNCTION IF EXISTS dicomhub_name_prefixes(text)")
