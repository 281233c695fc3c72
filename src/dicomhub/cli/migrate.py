"""``dicomhub migrate-store``: copy an archive to another index and blob store.

Typically an embedded install (SQLite + filesystem) to PostgreSQL + S3; see
:mod:`dicomhub.services.migrate` for how the copy stays consistent, resumable and idempotent.

Exit codes: 0 the target is a complete copy (counts equal, verification clean when asked),
1 incomplete (``--limit`` reached, damaged source blobs, counts differ), 2 cannot migrate.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from dicomhub.cli.check import redact_url
from dicomhub.cli.common import setup_logging
from dicomhub.cli.fsck import format_report
from dicomhub.config import Settings
from dicomhub.errors import DicomhubError
from dicomhub.services.migrate import MigrateReport, Progress, migrate_store


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return int(value)


def add_parser(sub: Any) -> None:
    """Register the ``migrate-store`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "migrate-store",
        help="copy an archive (index + blobs) to another index and blob store",
        description="Copy every index row and every blob of the source archive to the target "
        "(typically SQLite + filesystem to PostgreSQL + S3). Blobs are verified against the "
        "index before their rows are written; a rerun resumes and skips what is done. The "
        "source is only read; stop writes to it first. S3 settings (endpoint, region, "
        "credentials) come from DICOMHUB_S3_* or the AWS variables and apply to both sides.",
    )
    p.add_argument("--from-index", required=True, help="source index URL (sqlite:///...)")
    p.add_argument("--from-blobs", required=True, help="source blob store URL (file:///...)")
    p.add_argument("--to-index", required=True, help="target index URL (postgresql://...)")
    p.add_argument("--to-blobs", required=True, help="target blob store URL (s3://bucket/prefix)")
    p.add_argument(
        "--work-dir",
        type=Path,
        help="folder for blobs on their way (default: a temporary folder)",
    )
    p.add_argument("--batch", type=_positive, default=100, help="instances per batch")
    p.add_argument("--limit", type=_positive, help="copy at most this many instances in this run")
    p.add_argument(
        "--verify",
        action="store_true",
        help="afterwards, check the target like `dicomhub fsck` (re-hashes every blob)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def _progress(p: Progress) -> None:
    pct = 100.0 * p.instances_done / p.instances_total if p.instances_total else 100.0
    print(
        f"migrate-store: {p.instances_done}/{p.instances_total} instances ({pct:.0f}%), "
        f"{p.copied} copied, {p.bytes_copied / 1e6:.1f} MB, {p.elapsed_s:.0f} s",
        file=sys.stderr,
        flush=True,
    )


def format_summary(report: MigrateReport) -> str:
    """The human-readable summary (counts only, no UIDs or patient data)."""
    lines = [
        f"instances: {report.instances_total} in source, {report.instances_copied} copied now, "
        f"{report.instances_present} already present, {report.blobs_reused} blob(s) reused, "
        f"{report.blobs_replaced} replaced, {report.damaged_source} damaged in source "
        f"(not copied); {report.bytes_copied / 1e6:.1f} MB in {report.elapsed_s:.1f} s",
        "rows (source -> target): "
        + ", ".join(f"{k} {s}->{d}" for k, (s, d) in report.counts.items()),
    ]
    if report.verify is not None:
        lines.append(format_report(report.verify))
    if report.stopped_early:
        lines.append("migrate-store: stopped at --limit; run again to continue")
    elif report.ok:
        lines.append("migrate-store: complete, counts match")
    else:
        lines.append("migrate-store: INCOMPLETE (see above); fix and run again")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the migration and print the summary."""
    setup_logging("warning")
    source = Settings(index=args.from_index, blobs=args.from_blobs)
    work: Path | None = args.work_dir
    # The target's data_dir only holds its tmp_dir, where blobs are staged on their way.
    data_dir = work if work is not None else Path(tempfile.mkdtemp(prefix="dicomhub-migrate-"))
    target = Settings(index=args.to_index, blobs=args.to_blobs, data_dir=data_dir)
    if not args.quiet:
        print(
            f"migrate-store: {redact_url(source.index_url)} + {redact_url(source.blobs_url)} -> "
            f"{redact_url(target.index_url)} + {redact_url(target.blobs_url)}",
            file=sys.stderr,
        )
    try:
        report = migrate_store(
            source,
            target,
            batch=args.batch,
            limit=args.limit,
            verify=args.verify,
            progress=None if args.quiet else _progress,
        )
    except DicomhubError as exc:
        print(f"migrate-store: {exc}", file=sys.stderr)
        return 2
    finally:
        if work is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_summary(report))
    return 0 if report.ok else 1
