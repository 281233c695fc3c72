"""Index writes and lookups for ingest, retrieval and deletion (SQLAlchemy Core).

Functions take an open transaction (``IndexDatabase.write()``/``read()``); the services decide
the transaction boundaries.

Several processes or nodes may write at once (PostgreSQL, READ COMMITTED). Patient, study and
series rows are found or created with ``INSERT ... ON CONFLICT DO NOTHING`` and a re-select, so
two nodes storing into one new study both succeed; counters are updated in place
(``SET n = n + k``), which locks the row and stays exact. A lost race on one SOP Instance UID
ends in a unique violation, and the caller replays the whole transaction
(:meth:`~dicomhub.storage.index.engine.IndexDatabase.transact`), which then sees the committed
instance and applies the duplicate policy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dicomhub.dicom.model import ParsedInstance
from dicomhub.domain.person_name import fuzzy_key
from dicomhub.storage.index import level_json
from dicomhub.storage.index import tables as t
from dicomhub.storage.index.engine import ConcurrentChange
from dicomhub.storage.index.records import InstanceRecord, row_to_instance

INSTANCE_COLUMNS = (
    t.instance.c.pk,
    t.study.c.study_uid,
    t.series.c.series_uid,
    t.instance.c.sop_uid,
    t.instance.c.sop_class_uid,
    t.instance.c.transfer_syntax_uid,
    t.instance.c.blob_key,
    t.instance.c.size,
    t.instance.c.sha256,
    t.instance.c.number_of_frames,
    t.instance.c.frames,
    t.instance.c.bulk,
)

_INSTANCE_FROM = t.instance.join(t.series, t.series.c.pk == t.instance.c.series_pk).join(
    t.study, t.study.c.pk == t.instance.c.study_pk
)


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


# ---------------------------------------------------------------------------------------------
# driver SQL for the ingest hot path
#
# Every batch of an ingest runs the same dozen statements. Built with SQLAlchemy Core, each call
# constructs the statement, computes its cache key and processes its parameters, which costs
# more CPU than SQLite takes to run it. These statements are written once as driver SQL (``?``
# placeholders, rewritten to ``%s`` for psycopg) and run with ``exec_driver_sql``, which still
# wraps driver errors as ``DBAPIError`` (so ``IndexDatabase.transact`` replays lost races).

_DRIVER_SQL: dict[tuple[str, str], str] = {}


def _sql(conn: Connection, sql: str) -> str:
    """``sql`` with placeholders in the paramstyle of ``conn``'s driver (cached)."""
    key = (conn.dialect.name, sql)
    text = _DRIVER_SQL.get(key)
    if text is None:
        text = sql if conn.dialect.paramstyle == "qmark" else sql.replace("?", "%s")
        _DRIVER_SQL[key] = text
    return text


def _marks(n: int) -> str:
    """``?, ?, ...`` for an ``IN`` list of ``n`` values."""
    return ", ".join("?" * n)


def _run(conn: Connection, sql: str, params: tuple[Any, ...] | list[tuple[Any, ...]] = ()) -> Any:
    """Execute driver SQL with positional parameters (a list of tuples runs executemany)."""
    return conn.exec_driver_sql(_sql(conn, sql), params)


def _level_attrs(attrs: dict[str, Any]) -> str:
    """The ``attrs`` text of a patient, study or series row (:mod:`.level_json`, for QIDO-RS)."""
    return level_json.encode(attrs)


# ---------------------------------------------------------------------------------------------
# pending blobs


def release_pending(conn: Connection, blob_key: str) -> None:
    """Forget a pending reservation (the blob is now owned by an instance row, or deleted)."""
    conn.execute(delete(t.pending_blob).where(t.pending_blob.c.blob_key == blob_key))


def stale_pending(conn: Connection, older_than: float) -> list[str]:
    """Blob keys reserved before ``older_than`` (epoch seconds) and never committed."""
    rows = conn.execute(
        select(t.pending_blob.c.blob_key).where(t.pending_blob.c.created_at < older_than)
    )
    return [r[0] for r in rows]


# ---------------------------------------------------------------------------------------------
# instance lookups


def find_instances_sha(conn: Connection, tenant_id: int, sop_uids: Sequence[str]) -> dict[str, str]:
    """SHA-256 of each stored instance among ``sop_uids`` (missing ones are absent)."""
    out: dict[str, str] = {}
    uids = list(dict.fromkeys(sop_uids))
    for i in range(0, len(uids), 500):
        chunk = uids[i : i + 500]
        rows = _run(
            conn,
            "SELECT sop_uid, sha256 FROM instance WHERE tenant_id = ? AND sop_uid IN "
            f"({_marks(len(chunk))})",
            (tenant_id, *chunk),
        )
        out.update({str(u): str(h) for u, h in rows})
    return out


def reserve_pending_many(conn: Connection, tenant_id: int, blob_keys: Sequence[str]) -> None:
    """Reserve several blob keys in one statement."""
    if blob_keys:
        now = time.time()
        _run(
            conn,
            "INSERT INTO pending_blob (blob_key, tenant_id, created_at) VALUES (?, ?, ?)",
            [(k, tenant_id, now) for k in blob_keys],
        )


def instances(
    conn: Connection,
    tenant_id: int,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[InstanceRecord]:
    """Stored instances of a study, series or single instance, in series/instance order."""
    if series_uid is not None and sop_uid is not None:
        # One instance (rendered, frames): a statement built once, whose cache key is memoized.
        params = {"tenant": tenant_id, "study": study_uid, "series": series_uid, "sop": sop_uid}
        return [row_to_instance(r) for r in conn.execute(_ONE_INSTANCE, params)]
    cond = [t.study.c.tenant_id == tenant_id, t.study.c.study_uid == study_uid]
    if series_uid is not None:
        cond.append(t.series.c.series_uid == series_uid)
    if sop_uid is not None:
        cond.append(t.instance.c.sop_uid == sop_uid)
    stmt = (
        select(*INSTANCE_COLUMNS)
        .select_from(_INSTANCE_FROM)
        .where(and_(*cond))
        .order_by(
            t.series.c.series_number,
            t.series.c.pk,
            t.instance.c.instance_number,
            t.instance.c.pk,
        )
    )
    return [row_to_instance(r) for r in conn.execute(stmt)]


_ONE_INSTANCE = (
    select(*INSTANCE_COLUMNS)
    .select_from(_INSTANCE_FROM)
    .where(
        t.instance.c.tenant_id == bindparam("tenant"),
        t.instance.c.sop_uid == bindparam("sop"),
        t.study.c.study_uid == bindparam("study"),
        t.series.c.series_uid == bindparam("series"),
    )
)


def metadata_json(conn: Connection, instance_pks: Sequence[int]) -> dict[int, str]:
    """The stored DICOM JSON text of each instance, by instance pk."""
    out: dict[int, str] = {}
    for i in range(0, len(instance_pks), 500):
        chunk = list(instance_pks[i : i + 500])
        rows = conn.execute(
            select(t.instance_metadata.c.instance_pk, t.instance_metadata.c.json).where(
                t.instance_metadata.c.instance_pk.in_(chunk)
            )
        )
        out.update({int(pk): str(js) for pk, js in rows})
    return out


# ---------------------------------------------------------------------------------------------
# commit of a new instance


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What :func:`commit_instance` did."""

    outcome: str  # "stored" | "duplicate" | "conflict" | "overwritten"
    obsolete_blob: str | None = None  # a blob no instance references any more


def patient_identity(p: ParsedInstance) -> str:
    """Who the patient is within a tenant (PS3.3 C.7.1.1: PatientID within its issuer).

    Instances without a PatientID cannot be matched to other studies safely, so each such study
    gets a patient of its own instead of all of them being merged into one "unknown" patient.
    """
    pid = p.patient.get("patient_id") or ""
    if not pid:
        return "study:" + p.study_instance_uid
    identity = "id:" + (p.patient.get("issuer_of_patient_id") or "") + "\\" + pid
    return identity.replace("\x00", "")[:MAX_COLUMN_CHARS]


def _insert_ignoring(
    conn: Connection, table: Table, values: dict[str, Any], key: tuple[str, ...]
) -> int | None:
    """Insert one row unless ``key`` already exists (or is being inserted concurrently).

    Returns:
        The new row's primary key, or None if the row exists: at READ COMMITTED a concurrent
        uncommitted insert of the key makes this wait for that transaction's outcome, after
        which the caller's re-select sees the committed row.
    """
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    pk = table.primary_key.columns.values()[0]
    stmt = (
        dialect_insert(table)
        .values(**_no_nul(values))
        .on_conflict_do_nothing(index_elements=list(key))
    ).returning(pk)
    row = conn.execute(stmt).first()
    return None if row is None else int(row[0])


#: Longest string kept in an indexed column (a B-tree entry must fit in a third of a page).
MAX_COLUMN_CHARS = 512
_TEXT_COLUMNS = frozenset({"attrs", "frames", "bulk", "json"})  # JSON texts, never capped


def _no_nul(values: dict[str, Any]) -> dict[str, Any]:
    """Column values without NUL characters and capped at :data:`MAX_COLUMN_CHARS`.

    DICOM text values never contain NUL (PS3.5 §6.1.2) except as padding, and PostgreSQL text
    cannot hold it; no valid value comes near the cap (PN is at most 3 x 64 characters). Only
    malformed input loses anything, and the full value stays in the stored DICOM JSON.
    """
    return {
        k: v.replace("\x00", "")[:MAX_COLUMN_CHARS]
        if isinstance(v, str) and k not in _TEXT_COLUMNS
        else v
        for k, v in values.items()
    }


def _get_or_create_patient(conn: Connection, tenant_id: int, p: ParsedInstance, now: float) -> int:
    pid = p.patient.get("patient_id") or ""
    issuer = p.patient.get("issuer_of_patient_id") or ""
    identity = patient_identity(p)
    row = conn.execute(
        select(t.patient.c.pk).where(
            t.patient.c.tenant_id == tenant_id, t.patient.c.identity == identity
        )
    ).first()
    if row:
        return int(row[0])
    name = p.patient.get("patient_name")
    pk = _insert_ignoring(
        conn,
        t.patient,
        {
            "tenant_id": tenant_id,
            "identity": identity,
            "patient_id": pid,
            "issuer": issuer,
            "patient_name": name,
            "patient_name_fuzzy": fuzzy_key(name),
            "patient_birth_date": p.patient.get("patient_birth_date"),
            "patient_sex": p.patient.get("patient_sex"),
            "attrs": _level_attrs(p.patient_json),
        },
        ("tenant_id", "identity"),
    )
    if pk is None:  # created concurrently
        pk = conn.execute(
            select(t.patient.c.pk).where(
                t.patient.c.tenant_id == tenant_id, t.patient.c.identity == identity
            )
        ).scalar_one()
    return int(pk)


def _get_or_create_study(conn: Connection, tenant_id: int, p: ParsedInstance, now: float) -> int:
    def find() -> int | None:
        row = _run(
            conn,
            "SELECT pk FROM study WHERE tenant_id = ? AND study_uid = ?",
            (tenant_id, p.study_instance_uid),
        ).first()
        return None if row is None else int(row[0])

    pk = find()
    if pk is not None:
        return int(pk)
    patient_pk = _get_or_create_patient(conn, tenant_id, p, now)
    s = p.study
    referring = s.get("referring_physician_name")
    pk = _insert_ignoring(
        conn,
        t.study,
        {
            "tenant_id": tenant_id,
            "patient_pk": patient_pk,
            "study_uid": p.study_instance_uid,
            "study_date": s.get("study_date"),
            "study_time": s.get("study_time"),
            "accession_number": s.get("accession_number"),
            "study_id": s.get("study_id"),
            "referring_physician_name": referring,
            "referring_physician_fuzzy": fuzzy_key(referring),
            "study_description": s.get("study_description"),
            "modalities": "",
            "num_series": 0,
            "num_instances": 0,
            "attrs": _level_attrs(p.study_json),
            "created_at": now,
            "updated_at": now,
        },
        ("tenant_id", "study_uid"),
    )
    if pk is None:  # created concurrently
        pk = find()
        if pk is None:  # ... and deleted again before we looked
            raise ConcurrentChange("study vanished")
    return int(pk)


def _get_or_create_series(
    conn: Connection, tenant_id: int, study_pk: int, p: ParsedInstance, now: float
) -> tuple[int, bool]:
    """The series row (pk, created).

    Raises:
        ConcurrentChange: another transaction created the series in another study since the
            caller checked ownership; the replayed transaction reports the mismatch.
    """

    def find() -> tuple[int, bool] | None:
        row = _run(
            conn,
            "SELECT pk, study_pk FROM series WHERE tenant_id = ? AND series_uid = ?",
            (tenant_id, p.series_instance_uid),
        ).first()
        if row is None:
            return None
        if int(row[1]) != study_pk:
            raise ConcurrentChange("series created in another study")
        return int(row[0]), False

    found = find()
    if found is not None:
        return found
    s = p.series
    number = s.get("series_number")
    pk = _insert_ignoring(
        conn,
        t.series,
        {
            "tenant_id": tenant_id,
            "study_pk": study_pk,
            "series_uid": p.series_instance_uid,
            "modality": s.get("modality"),
            "series_number": number if isinstance(number, int) else None,
            "series_description": s.get("series_description"),
            "pps_start_date": s.get("performed_procedure_step_start_date"),
            "pps_start_time": s.get("performed_procedure_step_start_time"),
            "num_instances": 0,
            "attrs": _level_attrs(p.series_json),
            "created_at": now,
        },
        ("tenant_id", "series_uid"),
    )
    if pk is not None:
        return pk, True
    found = find()
    if found is None:
        raise ConcurrentChange("series vanished")
    return found


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None


@dataclass(frozen=True, slots=True)
class NewInstance:
    """An instance whose blob is durable, waiting to be made visible."""

    parsed: ParsedInstance
    blob_key: str
    size: int
    sha256: str
    metadata_text: str


def commit_instances(
    conn: Connection, tenant_id: int, items: Sequence[NewInstance], *, overwrite: bool
) -> list[CommitResult]:
    """Make a batch of instances visible in the caller's write transaction (group commit).

    The duplicate policy is applied inside the transaction, so concurrent stores of one SOP
    Instance UID resolve to exactly one copy. An instance whose Series Instance UID already
    belongs to another study is refused ("mismatch"). Statements are batched per level: a batch
    of one series costs a handful of statements whatever its size.
    """
    if not items:
        return []
    now = time.time()
    existing = _existing(conn, tenant_id, [i.parsed.sop_instance_uid for i in items])
    owners = _series_owners(conn, tenant_id, [i.parsed.series_instance_uid for i in items])
    results: list[CommitResult | None] = [None] * len(items)
    fresh: list[tuple[int, NewInstance]] = []
    seen: dict[str, str] = {}
    for pos, item in enumerate(items):
        p = item.parsed
        sop = p.sop_instance_uid
        if sop in seen:  # the same instance twice in one batch
            same = seen[sop] == item.sha256
            results[pos] = CommitResult("duplicate" if same else "conflict", item.blob_key)
            continue
        seen[sop] = item.sha256
        old = existing.get(sop)
        if old is not None and old[1] == item.sha256:
            results[pos] = CommitResult("duplicate", obsolete_blob=item.blob_key)
            continue
        if old is not None and not overwrite:
            results[pos] = CommitResult("conflict", obsolete_blob=item.blob_key)
            continue
        if old is not None:
            # Overwrite = remove the old version (counts, empty series/studies) and insert anew.
            delete_instances(conn, tenant_id, [_record(conn, old[0])])
            owners = _series_owners(conn, tenant_id, [i.parsed.series_instance_uid for i in items])
        owner = owners.setdefault(p.series_instance_uid, p.study_instance_uid)
        if owner != p.study_instance_uid:
            results[pos] = CommitResult("mismatch", obsolete_blob=item.blob_key)
            continue
        results[pos] = CommitResult(
            "overwritten" if old is not None else "stored",
            obsolete_blob=old[2] if old is not None else None,
        )
        fresh.append((pos, item))
    if fresh:
        _insert_fresh(conn, tenant_id, [item for _, item in fresh], now)
        # Only the blobs now owned by a visible instance leave the pending set. The others
        # (lost races, conflicts) stay reserved until the caller has deleted them, so a crash
        # before that delete leaves a reservation the collector follows, never an orphan.
        keys = tuple(item.blob_key for _, item in fresh)
        _run(conn, f"DELETE FROM pending_blob WHERE blob_key IN ({_marks(len(keys))})", keys)
    return [r if r is not None else CommitResult("conflict") for r in results]


def _series_owners(conn: Connection, tenant_id: int, series_uids: list[str]) -> dict[str, str]:
    """The Study Instance UID each known series belongs to."""
    uids = list(dict.fromkeys(series_uids))
    if not uids:
        return {}
    rows = _run(
        conn,
        "SELECT series.series_uid, study.study_uid FROM series "
        "JOIN study ON study.pk = series.study_pk "
        f"WHERE series.tenant_id = ? AND series.series_uid IN ({_marks(len(uids))})",
        (tenant_id, *uids),
    )
    return {str(a): str(b) for a, b in rows}


def _record(conn: Connection, pk: int) -> InstanceRecord:
    row = conn.execute(
        select(*INSTANCE_COLUMNS).select_from(_INSTANCE_FROM).where(t.instance.c.pk == pk)
    ).one()
    return row_to_instance(row)


def _existing(conn: Connection, tenant_id: int, sops: list[str]) -> dict[str, tuple[int, str, str]]:
    uids = list(dict.fromkeys(sops))
    if not uids:
        return {}
    rows = _run(
        conn,
        "SELECT sop_uid, pk, sha256, blob_key FROM instance "
        f"WHERE tenant_id = ? AND sop_uid IN ({_marks(len(uids))})",
        (tenant_id, *uids),
    )
    return {str(r[0]): (int(r[1]), str(r[2]), str(r[3])) for r in rows}


def _insert_fresh(conn: Connection, tenant_id: int, items: list[NewInstance], now: float) -> None:
    # One global order for the rows a batch creates (patient, study, series, then instances),
    # so that concurrent batches on PostgreSQL, which wait on each other's uncommitted inserts
    # of the same keys, always wait in the same direction: no deadlock cycle (a deadlock is
    # replayed, but batches sent in opposite orders by several nodes could lose every replay).
    items = sorted(
        items,
        key=lambda i: (
            patient_identity(i.parsed),
            i.parsed.study_instance_uid,
            i.parsed.series_instance_uid,
            i.parsed.sop_instance_uid,
        ),
    )
    studies: dict[str, int] = {}
    series: dict[str, tuple[int, bool]] = {}
    per_series: dict[int, int] = {}
    per_study: dict[int, tuple[int, int, set[str]]] = {}
    rows: list[tuple[Any, ...]] = []
    for item in items:
        p = item.parsed
        if p.study_instance_uid not in studies:
            studies[p.study_instance_uid] = _get_or_create_study(conn, tenant_id, p, now)
        study_pk = studies[p.study_instance_uid]
        if p.series_instance_uid not in series:
            series[p.series_instance_uid] = _get_or_create_series(conn, tenant_id, study_pk, p, now)
            n_inst, n_series, mods = per_study.get(study_pk, (0, 0, set()))
            new_series = series[p.series_instance_uid][1]
            modality = p.series.get("modality")
            if isinstance(modality, str) and modality:
                mods.add(modality)
            per_study[study_pk] = (n_inst, n_series + int(new_series), mods)
        series_pk = series[p.series_instance_uid][0]
        per_series[series_pk] = per_series.get(series_pk, 0) + 1
        n_inst, n_series, mods = per_study[study_pk]
        per_study[study_pk] = (n_inst + 1, n_series, mods)
        i = p.instance
        rows.append(
            (
                tenant_id,
                series_pk,
                study_pk,
                _column(p.sop_instance_uid),
                _column(p.sop_class_uid),
                _int_or_none(i.get("instance_number")),
                _int_or_none(i.get("rows")),
                _int_or_none(i.get("columns")),
                _int_or_none(i.get("bits_allocated")),
                _int_or_none(i.get("number_of_frames")),
                _column(i.get("specific_character_set")),
                _column(p.transfer_syntax_uid),
                _column(item.blob_key),
                item.size,
                _column(item.sha256),
                _frames_json(p),
                _bulk_json(p),
                now,
            )
        )
    # A concurrent store of one of these SOP Instance UIDs makes this fail with a unique
    # violation (after waiting for the other transaction): the caller replays the transaction.
    _run(conn, _INSERT_INSTANCE, rows)
    pks = _existing(conn, tenant_id, [i.parsed.sop_instance_uid for i in items])
    _run(
        conn,
        "INSERT INTO instance_metadata (instance_pk, json) VALUES (?, ?)",
        [(pks[i.parsed.sop_instance_uid][0], i.metadata_text) for i in items],
    )
    for series_pk, n in sorted(per_series.items()):
        _run(
            conn,
            "UPDATE series SET num_instances = num_instances + ? WHERE pk = ?",
            (n, series_pk),
        )
    for study_pk, (n_inst, n_series, mods) in sorted(per_study.items()):
        # In-place increments lock the row, so concurrent writers add up exactly; the row lock
        # held from here on makes the read-modify-write of the modalities set safe too.
        old_mods = _run(
            conn,
            "UPDATE study SET num_instances = num_instances + ?, num_series = num_series + ?, "
            "updated_at = ? WHERE pk = ? RETURNING modalities",
            (n_inst, n_series, now, study_pk),
        ).scalar_one()
        known = set(old_mods.split("\\")) if old_mods else set()
        if not mods <= known:
            _run(
                conn,
                "UPDATE study SET modalities = ? WHERE pk = ?",
                ("\\".join(sorted(known | mods)), study_pk),
            )
    _changes(conn, tenant_id, "stored", [i.parsed for i in items], now)


_INSERT_INSTANCE = (
    "INSERT INTO instance (tenant_id, series_pk, study_pk, sop_uid, sop_class_uid, "
    "instance_number, rows, columns, bits_allocated, number_of_frames, specific_character_set, "
    "transfer_syntax_uid, blob_key, size, sha256, frames, bulk, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _column(value: Any) -> Any:
    """One value of an indexed column, as :func:`_no_nul` makes it."""
    if isinstance(value, str):
        return value.replace("\x00", "")[:MAX_COLUMN_CHARS]
    return value


def _frames_json(p: ParsedInstance) -> str:
    """The ``frames`` column: per frame, its ``[offset, length]`` ranges (JSON)."""
    if not p.frames:
        return "[]"
    return _dumps([[[r.offset, r.length] for r in frame] for frame in p.frames])


def _bulk_json(p: ParsedInstance) -> str:
    """The ``bulk`` column: bulk key to ``[offset, length]`` (JSON)."""
    if not p.bulk:
        return "{}"
    return _dumps({k: [r.offset, r.length] for k, r in p.bulk.items()})


def _changes(
    conn: Connection, tenant_id: int, kind: str, parsed: list[ParsedInstance], now: float
) -> None:
    _run(
        conn,
        "INSERT INTO change (tenant_id, kind, level, study_uid, series_uid, sop_uid, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                tenant_id,
                kind,
                "instance",
                p.study_instance_uid,
                p.series_instance_uid,
                p.sop_instance_uid,
                now,
            )
            for p in parsed
        ],
    )


# ---------------------------------------------------------------------------------------------
# deletion


def delete_instances(
    conn: Connection, tenant_id: int, records: Iterable[InstanceRecord]
) -> list[str]:
    """Remove instances (and series, studies, patients left empty); return their blob keys."""
    now = time.time()
    keys: list[str] = []
    series_touched: dict[int, int] = {}
    study_touched: dict[int, int] = {}
    for rec in records:
        row = conn.execute(
            select(t.instance.c.series_pk, t.instance.c.study_pk).where(t.instance.c.pk == rec.pk)
        ).first()
        if row is None:
            continue
        conn.execute(delete(t.instance_metadata).where(t.instance_metadata.c.instance_pk == rec.pk))
        conn.execute(delete(t.instance).where(t.instance.c.pk == rec.pk))
        series_touched[int(row[0])] = series_touched.get(int(row[0]), 0) + 1
        study_touched[int(row[1])] = study_touched.get(int(row[1]), 0) + 1
        keys.append(rec.blob_key)
        conn.execute(
            insert(t.change).values(
                tenant_id=tenant_id,
                kind="deleted",
                level="instance",
                study_uid=rec.study_uid,
                series_uid=rec.series_uid,
                sop_uid=rec.sop_uid,
                at=now,
            )
        )
    for series_pk, n in series_touched.items():
        conn.execute(
            update(t.series)
            .where(t.series.c.pk == series_pk)
            .values(num_instances=t.series.c.num_instances - n)
        )
        conn.execute(
            delete(t.series).where(t.series.c.pk == series_pk, t.series.c.num_instances <= 0)
        )
    for study_pk in study_touched:
        _refresh_study(conn, study_pk, now)
    return keys


def _refresh_study(conn: Connection, study_pk: int, now: float) -> None:
    rows = conn.execute(
        select(t.series.c.modality, t.series.c.num_instances).where(t.series.c.study_pk == study_pk)
    ).all()
    if not rows:
        patient_pk = conn.execute(
            select(t.study.c.patient_pk).where(t.study.c.pk == study_pk)
        ).scalar_one()
        conn.execute(delete(t.study).where(t.study.c.pk == study_pk))
        remaining = conn.execute(
            select(func.count()).select_from(t.study).where(t.study.c.patient_pk == patient_pk)
        ).scalar_one()
        if remaining == 0:
            conn.execute(delete(t.patient).where(t.patient.c.pk == patient_pk))
        return
    modalities = "\\".join(sorted({m for m, _ in rows if m}))
    conn.execute(
        update(t.study)
        .where(t.study.c.pk == study_pk)
        .values(
            num_series=len(rows),
            num_instances=sum(int(n) for _, n in rows),
            modalities=modalities,
            updated_at=now,
        )
    )
