"""Copy an archive to another index and blob store (``dicomhub migrate-store``).

Typical use: an embedded install (SQLite + filesystem) moves to PostgreSQL + S3. The copy keeps
every primary key and every blob key (keys are opaque and contain no UIDs), so the target is the
same archive, row for row:

1. The source must be at the newest schema revision (it is never migrated: it is only read;
   a SQLite source is opened read-only). The target is brought to the newest revision by the
   Alembic chain, exactly as ``dicomhub db upgrade`` would.
2. Every index table except the instances is copied in foreign-key order with an upsert by
   primary key (tenants, patients, studies with their counters, series, remote AEs, queued jobs,
   the change feed, and any table a later revision adds). Pending reservations are not copied:
   they belong to writes in flight on the source, whose blobs are not referenced.
3. Instances are copied in primary-key order, in batches: each blob is read from the source
   and its size and SHA-256 checked against the index *before* it is written to the target;
   only after the whole batch's blobs are stored are its index rows written, in one
   transaction. The target never has an instance row whose blob is missing.
4. PostgreSQL sequences are moved past the copied keys; the row counts of source and target
   are compared (and with ``verify`` the target is checked by :func:`~dicomhub.services.fsck.fsck`,
   which re-hashes every blob).

Rerunning is safe and cheap: instances whose row already exists on the target are skipped (and
checked to be the same instance), and a blob that an interrupted run stored without its row is
re-hashed and reused, or replaced when it differs. Stop writes to the source while migrating;
a rerun picks up new instances, but not deletions.

Nothing here logs or prints UIDs or patient data: progress and the summary are counts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from dicomhub.config import Settings
from dicomhub.errors import DicomhubError, IntegrityError
from dicomhub.services.archive import Archive, blob_store_of
from dicomhub.services.fsck import FsckReport, fsck
from dicomhub.storage.blobs import BlobStore
from dicomhub.storage.index import tables as t
from dicomhub.storage.index.engine import IndexDatabase, normalize_url
from dicomhub.storage.index.migrate import current_revision, head_revision

log = logging.getLogger(__name__)

__all__ = ["MigrateError", "MigrateReport", "Progress", "migrate_store", "readonly_index_url"]

#: Tables whose rows are not copied: reservations of writes in flight on the source.
SKIPPED_TABLES = frozenset({t.pending_blob.name})
#: Copied in the instance phase, gated by their blobs.
INSTANCE_TABLES = frozenset({t.instance.name, t.instance_metadata.name})
PAGE = 1000
CHUNK = 1024 * 1024


class MigrateError(DicomhubError):
    """The migration cannot start or continue (wrong source, target holds other data)."""


@dataclass
class Progress:
    """Where an instance copy stands (counts only; passed to the progress callback)."""

    instances_total: int
    instances_done: int
    copied: int
    bytes_copied: int
    elapsed_s: float


@dataclass
class MigrateReport:
    """What a run did and whether source and target agree."""

    tables: dict[str, int] = field(default_factory=dict)  # rows upserted per plain table
    instances_total: int = 0  # in the source
    instances_copied: int = 0  # rows written by this run
    instances_present: int = 0  # found on the target already (earlier run)
    blobs_reused: int = 0  # stored by an interrupted run, verified and kept
    blobs_replaced: int = 0  # stored by an interrupted run, differed, written again
    bytes_copied: int = 0
    damaged_source: int = 0  # source blobs missing or not matching the index (not copied)
    stopped_early: bool = False  # ``limit`` reached before the end
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # table -> (source, target)
    verify: FsckReport | None = None
    elapsed_s: float = 0.0

    @property
    def counts_match(self) -> bool:
        """Whether every copied table has as many rows on the target as on the source."""
        return all(src == dst for src, dst in self.counts.values())

    @property
    def ok(self) -> bool:
        """Complete, counts equal, no damaged source blob, and (if run) verification clean."""
        return (
            not self.stopped_early
            and self.damaged_source == 0
            and self.counts_match
            and (self.verify is None or self.verify.ok)
        )

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (counts only)."""
        return {
            "ok": self.ok,
            "tables": self.tables,
            "instances": {
                "total": self.instances_total,
                "copied": self.instances_copied,
                "already_present": self.instances_present,
                "blobs_reused": self.blobs_reused,
                "blobs_replaced": self.blobs_replaced,
                "damaged_source": self.damaged_source,
            },
            "bytes_copied": self.bytes_copied,
            "stopped_early": self.stopped_early,
            "counts": {k: {"source": s, "target": d} for k, (s, d) in self.counts.items()},
            "counts_match": self.counts_match,
            "verify": None if self.verify is None else self.verify.to_dict(),
            "elapsed_s": round(self.elapsed_s, 3),
        }


def readonly_index_url(url: str) -> str:
    """``url`` opened read-only: a SQLite file as a ``mode=ro`` URI; other URLs unchanged.

    Raises:
        MigrateError: a SQLite URL that names no existing file.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return url
    database = parsed.database or ""
    if database.startswith("file:"):
        return url
    if not database or database == ":memory:" or not Path(database).is_file():
        raise MigrateError("the source index is not an existing SQLite file")
    return f"sqlite:///file:{Path(database).resolve()}?mode=ro&uri=true"


def _upsert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], update: bool) -> None:
    """Insert ``rows`` keyed by primary key; on conflict update them (or leave them)."""
    if not rows:
        return
    dialect = conn.dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:  # pragma: no cover - only the two supported databases
        raise MigrateError(f"unsupported target database {dialect}")
    keys = [c.name for c in table.primary_key.columns]
    if update:
        others = [c.name for c in table.columns if c.name not in keys]
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={name: stmt.excluded[name] for name in others}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    conn.execute(stmt, list(rows))


def _pages(db: IndexDatabase, table: Table, page: int = PAGE) -> Iterator[list[dict[str, Any]]]:
    """The rows of ``table`` in primary-key order, a page at a time (keyset pagination)."""
    keys = list(table.primary_key.columns)
    if len(keys) != 1:
        raise MigrateError(f"table {table.name} has no single-column primary key")
    key = keys[0]
    last: Any = None
    while True:
        q = select(table).order_by(key).limit(page)
        if last is not None:
            q = q.where(key > last)
        with db.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        if not rows:
            return
        yield rows
        last = rows[-1][key.name]


def _count(db: IndexDatabase, table: Table) -> int:
    with db.read() as conn:
        n: int = conn.execute(select(func.count()).select_from(table)).scalar_one()
    return n


def _check_source(db: IndexDatabase) -> None:
    rev = current_revision(db)
    if rev is None:
        raise MigrateError("the source index is empty (not a dicomhub index)")
    if rev != head_revision():
        raise MigrateError(
            f"the source index is at revision {rev}, not {head_revision()}: run "
            "`dicomhub db upgrade` on it first (migrate-store never writes to the source)"
        )


def _check_tenants(source: IndexDatabase, target: IndexDatabase) -> None:
    """Refuse a target whose tenants are not the source's (it holds another archive)."""
    with source.read() as conn:
        src = dict(conn.execute(select(t.tenant.c.id, t.tenant.c.name)).all())
    with target.read() as conn:
        dst = dict(conn.execute(select(t.tenant.c.id, t.tenant.c.name)).all())
    other = {i for i, name in dst.items() if src.get(i) != name}
    if other:
        raise MigrateError(
            f"the target index has {len(other)} tenant(s) that the source does not: "
            "it holds another archive (migrate into an empty database)"
        )


def _copy_plain_tables(source: IndexDatabase, target: IndexDatabase, report: MigrateReport) -> None:
    for table in t.metadata.sorted_tables:  # foreign-key order
        if table.name in SKIPPED_TABLES or table.name in INSTANCE_TABLES:
            continue
        n = 0
        for rows in _pages(source, table):
            with target.write() as conn:
                _upsert(conn, table, rows, update=True)
            n += len(rows)
        report.tables[table.name] = n


def _hash_to(store: BlobStore, key: str, dest: Path | None) -> tuple[int, str]:
    """Stream ``key`` (into ``dest`` when given); return its size and SHA-256."""
    h = hashlib.sha256()
    size = 0
    out = dest.open("wb") if dest is not None else None
    try:
        for chunk in store.open_range(key):
            h.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return size, h.hexdigest()


@dataclass
class _Pending:
    row: dict[str, Any]
    metadata: str
    upload: Path | None  # None: the target already holds the verified blob


def _copy_instances(
    source: IndexDatabase,
    source_blobs: BlobStore,
    target: Archive,
    work: Path,
    report: MigrateReport,
    batch: int,
    limit: int | None,
    progress: Callable[[Progress], None] | None,
    started: float,
) -> None:
    inst = t.instance
    done = 0
    for rows in _pages(source, inst, batch):
        pks = [r["pk"] for r in rows]
        with target.db.read() as conn:
            present = {
                r.pk: r
                for r in conn.execute(
                    select(inst.c.pk, inst.c.tenant_id, inst.c.sop_uid, inst.c.blob_key).where(
                        inst.c.pk.in_(pks)
                    )
                )
            }
        with source.read() as conn:
            metadata = dict(
                conn.execute(
                    select(t.instance_metadata.c.instance_pk, t.instance_metadata.c.json).where(
                        t.instance_metadata.c.instance_pk.in_(pks)
                    )
                ).all()
            )
        todo: list[_Pending] = []
        for row in rows:
            have = present.get(row["pk"])
            if have is not None:
                if (have.tenant_id, have.sop_uid, have.blob_key) != (
                    row["tenant_id"],
                    row["sop_uid"],
                    row["blob_key"],
                ):
                    raise MigrateError(
                        "the target index holds another instance under a copied key: "
                        "it holds another archive (migrate into an empty database)"
                    )
                report.instances_present += 1
                continue
            if limit is not None and report.instances_copied + len(todo) >= limit:
                report.stopped_early = True
                break
            todo.append(_prepare(row, metadata.get(row["pk"]), source_blobs, target, work, report))
        todo = [p for p in todo if p.row]
        uploads = [(p.row["blob_key"], p.upload) for p in todo if p.upload is not None]
        try:
            target.blobs.put_files([(k, path) for k, path in uploads if path is not None])
        finally:
            for _, path in uploads:
                if path is not None:
                    path.unlink(missing_ok=True)
        if todo:
            with target.db.write() as conn:
                _upsert(conn, inst, [p.row for p in todo], update=False)
                _upsert(
                    conn,
                    t.instance_metadata,
                    [{"instance_pk": p.row["pk"], "json": p.metadata} for p in todo],
                    update=False,
                )
        report.instances_copied += len(todo)
        report.bytes_copied += sum(int(p.row["size"]) for p in todo if p.upload is not None)
        done += len(rows)
        if progress is not None:
            progress(
                Progress(
                    instances_total=report.instances_total,
                    instances_done=min(done, report.instances_total),
                    copied=report.instances_copied,
                    bytes_copied=report.bytes_copied,
                    elapsed_s=time.monotonic() - started,
                )
            )
        if report.stopped_early:
            return


def _prepare(
    row: dict[str, Any],
    metadata: str | None,
    source_blobs: BlobStore,
    target: Archive,
    work: Path,
    report: MigrateReport,
) -> _Pending:
    """Check the source blob against the index and stage it; an empty row means: skip it."""
    key = row["blob_key"]
    if metadata is None:
        report.damaged_source += 1
        log.warning("source instance pk=%d has no metadata row: not copied", row["pk"])
        return _Pending({}, "", None)
    if target.blobs.size(key) is not None:
        # An interrupted run stored this blob but not its row: keep it if it is intact.
        size, sha = _hash_to(target.blobs, key, None)
        if size == row["size"] and sha == row["sha256"]:
            report.blobs_reused += 1
            return _Pending(row, metadata, None)
        target.blobs.delete(key)
        report.blobs_replaced += 1
    fd, name = tempfile.mkstemp(dir=work, suffix=".blob")
    os.close(fd)
    path = Path(name)
    try:
        size, sha = _hash_to(source_blobs, key, path)
    except IntegrityError:  # missing or short source blob
        size, sha = -1, ""
    if size != row["size"] or sha != row["sha256"]:
        path.unlink(missing_ok=True)
        report.damaged_source += 1
        log.warning("source blob of instance pk=%d does not match the index: not copied", row["pk"])
        return _Pending({}, "", None)
    return _Pending(row, metadata, path)


def _fix_sequences(db: IndexDatabase) -> None:
    """Move PostgreSQL sequences past the copied primary keys (SQLite needs nothing)."""
    if db.is_sqlite:
        return
    with db.write() as conn:
        for table in t.metadata.sorted_tables:
            keys = list(table.primary_key.columns)
            if len(keys) != 1 or not keys[0].autoincrement or keys[0].foreign_keys:
                continue
            col = keys[0].name
            seq = conn.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": col}
            ).scalar_one()
            if seq is None:
                continue
            conn.execute(
                text(
                    f'SELECT setval(:s, COALESCE((SELECT MAX("{col}") FROM "{table.name}"), 1), '
                    f'(SELECT MAX("{col}") IS NOT NULL FROM "{table.name}"))'
                ),
                {"s": seq},
            )


def migrate_store(
    source: Settings,
    target: Settings,
    *,
    batch: int = 100,
    limit: int | None = None,
    verify: bool = False,
    progress: Callable[[Progress], None] | None = None,
) -> MigrateReport:
    """Copy the archive of ``source`` into the index and blob store of ``target``.

    Args:
        source: settings naming the source index and blob store (only read).
        target: settings naming the target index and blob store (migrated to the newest
            revision); its ``tmp_dir`` stages blobs on their way.
        batch: instances per batch (one target transaction per batch).
        limit: copy at most this many instances in this run (a rerun continues).
        verify: check the target with fsck afterwards (re-hashes every blob).
        progress: called after every batch with the counts so far.

    Returns:
        The report; ``report.ok`` tells whether the target is a complete copy.

    Raises:
        MigrateError: the source is not current, or the target holds another archive.
    """
    started = time.monotonic()
    report = MigrateReport()
    if normalize_url(source.index_url) == normalize_url(target.index_url):
        raise MigrateError("source and target index are the same database")
    if source.blobs_url.rstrip("/") == target.blobs_url.rstrip("/"):
        raise MigrateError("source and target blob store are the same")
    src_url = make_url(source.index_url)
    if src_url.get_backend_name() == "sqlite":
        src_db = IndexDatabase(readonly_index_url(source.index_url))
    else:
        src_db = IndexDatabase(source.index_url)
    try:
        if (
            source.blobs_url.startswith("file://")
            and not Path(source.blobs_url.removeprefix("file://")).is_dir()
        ):
            raise MigrateError("the source blob folder does not exist")
        _check_source(src_db)
        src_blobs = blob_store_of(source)
        archive = Archive.open(target)  # the Alembic chain brings the target to head
        try:
            _check_tenants(src_db, archive.db)
            report.instances_total = _count(src_db, t.instance)
            _copy_plain_tables(src_db, archive.db, report)
            work = Path(tempfile.mkdtemp(prefix="migrate-", dir=target.tmp_dir))
            try:
                _copy_instances(
                    src_db, src_blobs, archive, work, report, batch, limit, progress, started
                )
            finally:
                for leftover in work.glob("*"):
                    leftover.unlink(missing_ok=True)
                work.rmdir()
            _fix_sequences(archive.db)
            for table in t.metadata.sorted_tables:
                if table.name in SKIPPED_TABLES:
                    continue
                report.counts[table.name] = (_count(src_db, table), _count(archive.db, table))
            if verify and not report.stopped_early:
                report.verify = fsck(archive, pending_age_s=None)
        finally:
            archive.close()
            close = getattr(src_blobs, "close", None)
            if callable(close):
                close()
    finally:
        src_db.dispose()
    report.elapsed_s = time.monotonic() - started
    return report
