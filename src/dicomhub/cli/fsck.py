"""``dicomhub fsck``: check the index against the blob store, optionally repair.

Exit codes: 0 consistent (or every problem found was repaired), 1 problems remain, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from typing import Any

from dicomhub.cli.common import add_storage_args, settings_from, setup_logging
from dicomhub.services.archive import Archive
from dicomhub.services.fsck import FsckReport, fsck


def _seconds(value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not n >= 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


def _jobs(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError("must be an integer between 1 and 64")
    return int(value)


def add_parser(sub: Any) -> None:
    """Register the ``fsck`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "fsck",
        help="check the index against the blob store",
        description="Check that every instance's blob exists with the indexed size and "
        "SHA-256 and parses with its SOP Instance UID; find orphan blobs, stale pending "
        "reservations and wrong counters.",
    )
    add_storage_args(p)
    p.add_argument(
        "--repair",
        action="store_true",
        help="delete orphan blobs and stale reservations, fix counters "
        "(never deletes an instance whose blob is missing or damaged)",
    )
    p.add_argument("--quick", action="store_true", help="skip hashing and parsing the blobs")
    p.add_argument(
        "--pending-age",
        type=_seconds,
        metavar="SECONDS",
        help="pending reservations older than this are stale (default: the pending timeout, "
        "DICOMHUB_PENDING_TIMEOUT_S; use 0 only when no server writes to the archive)",
    )
    p.add_argument("--jobs", type=_jobs, default=2, help="verification threads (default 2)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the check and print the report."""
    settings = settings_from(args)
    setup_logging("warning")
    # pydicom warns about odd values, quoting them (possibly PHI); problems carry the reason.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    archive = Archive.open(settings)
    try:
        report = fsck(
            archive,
            repair=args.repair,
            quick=args.quick,
            pending_age_s=args.pending_age,
            jobs=args.jobs,
        )
    finally:
        archive.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def format_report(report: FsckReport) -> str:
    """A human-readable report: what was checked, one line per problem."""
    checked = ", ".join(f"{k} {v}" for k, v in report.checked.items())
    lines = [f"fsck: checked {checked}"]
    repaired = {id(p) for p in report.repaired}
    for p in report.problems:
        details = " ".join(f"{k}={v}" for k, v in p.items() if k != "kind")
        mark = " [repaired]" if id(p) in repaired else ""
        lines.append(f"  {p['kind']}{mark}: {details}")
    lines.append(
        "fsck: consistent"
        if report.ok
        else f"fsck: {len(report.problems) - len(report.repaired)} problem(s) remain"
    )
    return "\n".join(lines)
