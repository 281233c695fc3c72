"""Fixed SQLite planner statistics, so query plans do not depend on what is stored yet.

SQLite chooses indexes from ``sqlite_stat1``. Without statistics it guesses, and on a young
archive it guesses badly (a PatientID query walked the study-date index over every study);
``ANALYZE`` on a small or skewed archive can mislead it the other way. Instead the index ships
statistics that describe a large archive (about a million instances per tenant): an equality on
PatientID, AccessionNumber or a UID selects a handful of rows, a date range a few hundred, one
tenant much. The planner then picks the selective index whatever the archive's current size.
See https://sqlite.org/fileformat2.html#stat1tab for the format: the row count of the table,
then the average number of rows per distinct value of each leading column prefix.
"""

from __future__ import annotations

from sqlalchemy import Connection

# (table, indexed columns) -> stat string. Columns identify the index, so SQLite's automatic
# names for UNIQUE constraints (sqlite_autoindex_<table>_<n>) need not be known.
STATS: dict[tuple[str, tuple[str, ...]], str] = {
    ("tenant", ("name",)): "100 1",
    ("patient", ("tenant_id", "identity")): "200000 100000 1",
    ("patient", ("tenant_id", "patient_id")): "200000 100000 2",
    ("patient", ("tenant_id", "patient_name")): "200000 100000 3",
    ("study", ("tenant_id", "study_uid")): "500000 250000 1",
    ("study", ("tenant_id", "study_date")): "500000 250000 200",
    ("study", ("tenant_id", "accession_number")): "500000 250000 2",
    ("study", ("tenant_id", "study_id")): "500000 250000 50",
    ("study", ("patient_pk",)): "500000 3",
    ("series", ("tenant_id", "series_uid")): "2000000 1000000 1",
    ("series", ("study_pk", "modality")): "2000000 4 2",
    ("series", ("tenant_id", "modality")): "2000000 1000000 100000",
    ("instance", ("tenant_id", "sop_uid")): "20000000 10000000 1",
    ("instance", ("blob_key",)): "20000000 1",
    ("instance", ("series_pk", "instance_number")): "20000000 10 1",
    ("instance", ("study_pk",)): "20000000 40",
    ("instance", ("tenant_id", "sop_class_uid")): "20000000 10000000 1000000",
    ("job", ("run_at",)): "1000 1",
    ("job", ("state", "run_at")): "1000 200 1",
    ("job", ("tenant_id", "id")): "1000 500 1",
    ("change", ("tenant_id", "seq")): "20000000 10000000 1",
}


def install(conn: Connection) -> None:
    """Write :data:`STATS` into ``sqlite_stat1`` and make the planner load them."""
    conn.exec_driver_sql("ANALYZE sqlite_schema")  # creates sqlite_stat1 if missing
    rows: list[tuple[str, str, str]] = []
    for (table,) in conn.exec_driver_sql(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ):
        for _, index, *_rest in conn.exec_driver_sql(f'PRAGMA index_list("{table}")'):
            columns = tuple(
                str(r[2]) for r in conn.exec_driver_sql(f'PRAGMA index_info("{index}")')
            )
            stat = STATS.get((str(table), columns))
            if stat is not None:
                rows.append((str(table), str(index), stat))
    conn.exec_driver_sql("DELETE FROM sqlite_stat1")
    for row in rows:
        conn.exec_driver_sql("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", row)
    conn.exec_driver_sql("ANALYZE sqlite_schema")  # reload the statistics
