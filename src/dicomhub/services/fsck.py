"""Consistency check of the index against the blob store (``dicomhub fsck``).

Checks, each reported as a problem ``kind``:

* ``missing_blob``: an instance's blob does not exist;
* ``size_mismatch``: its size differs from the indexed size;
* ``checksum_mismatch``: its SHA-256 differs (streamed; skipped by ``quick``);
* ``unparsable_blob`` / ``uid_mismatch``: it no longer parses as a Part-10 file (PS3.10 §7.1)
  or holds another SOP Instance UID (skipped by ``quick``);
* ``orphan_blob``: a blob no instance, pending reservation or queued ``delete_blobs`` job
  refers to;
* ``stale_pending``: a reservation older than the pending timeout (a crash between the blob write
  and the index commit, see :mod:`dicomhub.services.ingest`);
* ``counter_mismatch``: ``study.num_instances`` / ``study.num_series`` /
  ``series.num_instances`` differ from the rows.

Reservations younger than the timeout are in-flight writes of a running server (or leftovers of
a crash that the garbage collector will take once they are old enough): they are counted in
``checked["pending_recent"]``, not reported as problems. Pass ``pending_age_s=0`` to treat every
reservation as stale (only when no server is writing to the archive).

Repair (``repair=True``) deletes orphan blobs, stale reservations and their blobs, and rewrites
counters. It never deletes an instance row: a missing or damaged blob is data loss to
investigate, not something to tidy away.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select, update

from dicomhub.dicom.parse import parse_instance
from dicomhub.errors import DicomhubError
from dicomhub.services.archive import Archive
from dicomhub.storage.index import store as index
from dicomhub.storage.index import tables as t

log = logging.getLogger(__name__)

__all__ = ["FsckReport", "fsck"]

PAGE = 1000

Problem = dict[str, Any]


@dataclass
class FsckReport:
    """What fsck checked, found and repaired.

    ``ok`` is true when the archive is consistent at the end of the run: no problem was found,
    or every problem found was repaired.
    """

    checked: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    repaired: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing is left to repair or investigate."""
        return len(self.problems) == len(self.repaired)

    def kinds(self) -> set[str]:
        """The kinds of problem found."""
        return {p["kind"] for p in self.problems}

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        return {
            "ok": self.ok,
            "checked": self.checked,
            "problems": self.problems,
            "repaired": self.repaired,
        }


@dataclass(frozen=True, slots=True)
class _Row:
    pk: int
    tenant_id: int
    study_uid: str
    series_uid: str
    sop_uid: str
    blob_key: str
    size: int
    sha256: str

    def problem(self, kind: str, **extra: Any) -> Problem:
        return {
            "kind": kind,
            "tenant_id": self.tenant_id,
            "study_instance_uid": self.study_uid,
            "series_instance_uid": self.series_uid,
            "sop_instance_uid": self.sop_uid,
            "blob_key": self.blob_key,
            **extra,
        }


def fsck(
    archive: Archive,
    *,
    repair: bool = False,
    quick: bool = False,
    pending_age_s: float | None = None,
    jobs: int = 2,
) -> FsckReport:
    """Check (and optionally repair) the archive; see the module docstring for the checks.

    Args:
        archive: The archive to check.
        repair: Remove orphan blobs and stale reservations, rewrite counters.
        quick: Skip hashing and parsing the blobs (existence and size only).
        pending_age_s: Age from which a pending reservation is stale (default: the
            ``pending_timeout_s`` setting).
        jobs: Threads verifying blobs in parallel.
    """
    age = archive.settings.pending_timeout_s if pending_age_s is None else pending_age_s
    report = FsckReport()
    # Order matters for a live archive: a blob listed here was reserved before the listing, so
    # reading the reservations *after* it and the instances after those cannot miss its owner.
    blob_keys = set(archive.blobs.keys())
    with archive.db.read() as conn:
        pending = {
            str(k): float(at)
            for k, at in conn.execute(
                select(t.pending_blob.c.blob_key, t.pending_blob.c.created_at)
            )
        }
    referenced: set[str] = set()
    n_instances = n_hashed = 0
    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="dicomhub-fsck") as pool:
        for page in _instance_pages(archive):
            n_instances += len(page)
            referenced.update(r.blob_key for r in page)
            for found, hashed in pool.map(lambda r: _check_instance(archive, r, quick), page):
                report.problems.extend(found)
                n_hashed += hashed
    with archive.db.read() as conn:
        deleting = _keys_awaiting_deletion(conn)
    report.checked.update(
        instances=n_instances,
        blobs=len(blob_keys),
        hashed=n_hashed,
        pending=len(pending),
        awaiting_deletion=len(deleting & blob_keys),
    )
    _check_orphans(archive, report, blob_keys - referenced - pending.keys() - deleting, repair)
    _check_pending(archive, report, pending, time.time() - age, repair)
    _check_counters(archive, report, repair)
    return report


def _instance_pages(archive: Archive) -> Iterator[list[_Row]]:
    """All instances, a page per short read transaction (no long-lived snapshot)."""
    last = 0
    stmt = (
        select(
            t.instance.c.pk,
            t.instance.c.tenant_id,
            t.study.c.study_uid,
            t.series.c.series_uid,
            t.instance.c.sop_uid,
            t.instance.c.blob_key,
            t.instance.c.size,
            t.instance.c.sha256,
        )
        .select_from(
            t.instance.join(t.series, t.series.c.pk == t.instance.c.series_pk).join(
                t.study, t.study.c.pk == t.instance.c.study_pk
            )
        )
        .order_by(t.instance.c.pk)
        .limit(PAGE)
    )
    while True:
        with archive.db.read() as conn:
            rows = [
                _Row(
                    int(r[0]),
                    int(r[1]),
                    str(r[2]),
                    str(r[3]),
                    str(r[4]),
                    str(r[5]),
                    int(r[6]),
                    str(r[7]),
                )
                for r in conn.execute(stmt.where(t.instance.c.pk > last))
            ]
        if not rows:
            return
        yield rows
        last = rows[-1].pk


def _check_instance(archive: Archive, row: _Row, quick: bool) -> tuple[list[Problem], bool]:
    """The problems of one instance, and whether its blob was hashed."""
    size = archive.blobs.size(row.blob_key)
    if size is None:
        return [row.problem("missing_blob")], False
    problems: list[Problem] = []
    if size != row.size:
        problems.append(row.problem("size_mismatch", indexed_size=row.size, blob_size=size))
    if quick:
        return problems, False
    hashed = False
    try:
        local = archive.blobs.local_path(row.blob_key)
        if local is None:  # remote backend: one download, hashed on the way, parsed from disk
            with tempfile.NamedTemporaryFile(dir=archive.settings.tmp_dir) as tmp:
                digest = hashlib.sha256()
                for chunk in archive.blobs.open_range(row.blob_key):
                    digest.update(chunk)
                    tmp.write(chunk)
                tmp.flush()
                hashed = True
                if size == row.size and digest.hexdigest() != row.sha256:
                    problems.append(row.problem("checksum_mismatch"))
                problems.extend(_check_parse(archive, row, Path(tmp.name)))
            return problems, hashed
        if size == row.size:  # else the digest cannot match: spare the read
            digest = hashlib.sha256()
            for chunk in archive.blobs.open_range(row.blob_key):
                digest.update(chunk)
            hashed = True
            if digest.hexdigest() != row.sha256:
                problems.append(row.problem("checksum_mismatch"))
        problems.extend(_check_parse(archive, row, local))
    except DicomhubError as exc:  # the blob vanished while being read
        problems.append(row.problem("missing_blob", reason=exc.reason))
    return problems, hashed


def _check_parse(archive: Archive, row: _Row, path: Path) -> list[Problem]:
    try:
        parsed = parse_instance(path, bulk_threshold=archive.settings.bulk_threshold)
    except DicomhubError as exc:
        return [row.problem("unparsable_blob", reason=exc.reason)]
    except OSError as exc:
        return [row.problem("unparsable_blob", reason=f"cannot read: {exc.strerror}")]
    if parsed.sop_instance_uid != row.sop_uid:
        return [row.problem("uid_mismatch", blob_sop_instance_uid=parsed.sop_instance_uid)]
    return []


def _keys_awaiting_deletion(conn: Connection) -> set[str]:
    """Blob keys named by queued ``delete_blobs`` jobs (unreferenced on purpose)."""
    keys: set[str] = set()
    for (payload,) in conn.execute(select(t.job.c.payload).where(t.job.c.kind == "delete_blobs")):
        try:
            keys.update(str(k) for k in json.loads(payload).get("keys", []))
        except (ValueError, AttributeError):
            continue
    return keys


def _check_orphans(
    archive: Archive, report: FsckReport, candidates: set[str], repair: bool
) -> None:
    for key in sorted(candidates):
        # Re-check against the index: keys are random, so a blob unreferenced now stays so.
        with archive.db.read() as conn:
            owned = (
                conn.execute(
                    select(func.count()).select_from(t.instance).where(t.instance.c.blob_key == key)
                ).scalar_one()
                + conn.execute(
                    select(func.count())
                    .select_from(t.pending_blob)
                    .where(t.pending_blob.c.blob_key == key)
                ).scalar_one()
            )
        size = archive.blobs.size(key)
        if owned or size is None:
            continue
        problem: Problem = {"kind": "orphan_blob", "blob_key": key, "blob_size": size}
        report.problems.append(problem)
        if repair:
            archive.blobs.delete(key)
            report.repaired.append(problem)


def _check_pending(
    archive: Archive, report: FsckReport, pending: dict[str, float], before: float, repair: bool
) -> None:
    recent = 0
    for key, created in sorted(pending.items()):
        if created >= before:
            recent += 1
            continue
        problem: Problem = {
            "kind": "stale_pending",
            "blob_key": key,
            "age_s": round(time.time() - created, 1),
            "blob_present": archive.blobs.size(key) is not None,
        }
        report.problems.append(problem)
        if repair:
            archive.blobs.delete(key)
            with archive.db.write() as conn:
                index.release_pending(conn, key)
            report.repaired.append(problem)
    report.checked["pending_recent"] = recent


def _check_counters(archive: Archive, report: FsckReport, repair: bool) -> None:
    inst_per_study = (
        select(func.count())
        .select_from(t.instance)
        .where(t.instance.c.study_pk == t.study.c.pk)
        .scalar_subquery()
    )
    series_per_study = (
        select(func.count())
        .select_from(t.series)
        .where(t.series.c.study_pk == t.study.c.pk)
        .scalar_subquery()
    )
    inst_per_series = (
        select(func.count())
        .select_from(t.instance)
        .where(t.instance.c.series_pk == t.series.c.pk)
        .scalar_subquery()
    )
    found: list[tuple[Problem, Any]] = []
    with archive.db.read() as conn:
        studies = conn.execute(
            select(
                t.study.c.pk,
                t.study.c.tenant_id,
                t.study.c.study_uid,
                t.study.c.num_instances,
                t.study.c.num_series,
                inst_per_study,
                series_per_study,
            )
        ).all()
        all_series = conn.execute(
            select(
                t.series.c.pk,
                t.series.c.tenant_id,
                t.series.c.series_uid,
                t.series.c.num_instances,
                inst_per_series,
            )
        ).all()
    for pk, tenant, uid, n_inst, n_series, real_inst, real_series in studies:
        for name, recorded, actual in (
            ("num_instances", n_inst, real_inst),
            ("num_series", n_series, real_series),
        ):
            if recorded != actual:
                problem: Problem = {
                    "kind": "counter_mismatch",
                    "level": "study",
                    "tenant_id": tenant,
                    "study_instance_uid": uid,
                    "counter": name,
                    "recorded": recorded,
                    "actual": actual,
                }
                stmt = (
                    update(t.study)
                    .where(t.study.c.pk == pk)
                    .values({name: inst_per_study if name == "num_instances" else series_per_study})
                )
                found.append((problem, stmt))
    for pk, tenant, uid, n_inst, real_inst in all_series:
        if n_inst != real_inst:
            problem = {
                "kind": "counter_mismatch",
                "level": "series",
                "tenant_id": tenant,
                "series_instance_uid": uid,
                "counter": "num_instances",
                "recorded": n_inst,
                "actual": real_inst,
            }
            stmt = update(t.series).where(t.series.c.pk == pk).values(num_instances=inst_per_series)
            found.append((problem, stmt))
    report.checked.update(studies=len(studies), series=len(all_series))
    for problem, stmt in found:
        report.problems.append(problem)
        if repair:
            # Recounted inside the write transaction: right even if ingest ran meanwhile.
            with archive.db.write() as conn:
                conn.execute(stmt)
            report.repaired.append(problem)
