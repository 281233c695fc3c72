"""``dicomhub send|query|retrieve``: DIMSE client operations against registered remote AEs.

Exit codes: 0 everything succeeded, 1 some instances (or the operation) failed, 2 usage error.
Progress goes to stderr, the summary (or the query results) to stdout. The operations are those
of :mod:`dicomhub.dimse.scu`, which the JSON API runs as durable jobs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dicomhub.cli.common import add_storage_args, settings_from, setup_logging
from dicomhub.dimse import scu
from dicomhub.errors import DicomhubError
from dicomhub.services import peers
from dicomhub.services.archive import Archive

LEVELS = scu.LEVELS


def add_parsers(sub: Any) -> None:
    """Register ``send``, ``query`` and ``retrieve``."""
    s: argparse.ArgumentParser = sub.add_parser(
        "send", help="C-STORE a stored study, series or instance to a registered AE"
    )
    _common(s)
    _uids(s)
    s.set_defaults(func=run_send)

    q: argparse.ArgumentParser = sub.add_parser("query", help="C-FIND a registered remote AE")
    _common(q)
    q.add_argument("--level", choices=LEVELS, default="STUDY", help="Query/Retrieve Level")
    q.add_argument("--model", choices=("study", "patient"), default="study")
    q.add_argument(
        "-k",
        "--key",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="matching or return key by keyword, e.g. -k PatientName=DOE* -k StudyDate",
    )
    q.add_argument("--json", action="store_true", help="print DICOM JSON")
    q.set_defaults(func=run_query)

    r: argparse.ArgumentParser = sub.add_parser(
        "retrieve", help="C-GET or C-MOVE a study, series or instance from a registered AE"
    )
    _common(r)
    _uids(r)
    r.add_argument(
        "--method",
        choices=("get", "move"),
        default="get",
        help="get: over this association into the archive; move: to our AE title "
        "(needs a running `dicomhub serve` known to the remote as a destination)",
    )
    r.add_argument("--model", choices=("study", "patient"), default="study")
    r.set_defaults(func=run_retrieve)


def _common(p: argparse.ArgumentParser) -> None:
    add_storage_args(p)
    p.add_argument("ae_title", metavar="AE_TITLE", help="the registered remote AE")
    p.add_argument("--tenant", help="tenant name (default: the default tenant)")
    p.add_argument("--ae-title", dest="our_ae_title", help="our calling AE title")


def _uids(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="Study Instance UID")
    p.add_argument("--series", help="Series Instance UID")
    p.add_argument("--instance", help="SOP Instance UID")


def _archive(args: argparse.Namespace) -> Archive:
    extra = {"ae_title": args.our_ae_title} if args.our_ae_title else {}
    setup_logging("warning")
    return Archive.open(settings_from(args, **extra))


def _progress(summary: scu.Summary) -> None:
    total = summary.done + summary.remaining
    print(f"\r{summary.done}/{total}", end="", file=sys.stderr, flush=True)


def _report(summary: scu.Summary) -> int:
    print(file=sys.stderr)
    print(f"completed: {summary.completed}, warnings: {summary.warnings}, failed: {summary.failed}")
    for line in summary.failures[:20]:
        print(f"  {line}")
    return 0 if summary.ok else 1


def _fail(err: DicomhubError) -> int:
    print(f"dicomhub: error: {err.reason}", file=sys.stderr)
    return 1


def run_send(args: argparse.Namespace) -> int:
    """C-STORE to a registered AE."""
    archive = _archive(args)
    try:
        tenant = peers.tenant_id(archive, args.tenant)
        ref = scu.Ref(args.study, args.series, args.instance)
        summary = scu.send(archive, tenant, args.ae_title, [ref], _progress)
    except DicomhubError as err:
        return _fail(err)
    finally:
        archive.close()
    return _report(summary)


def run_query(args: argparse.Namespace) -> int:
    """C-FIND a registered AE and print the answers."""
    archive = _archive(args)
    try:
        tenant = peers.tenant_id(archive, args.tenant)
        identifier = scu.identifier_from_keys(args.level, args.key)
        found = scu.query(archive, tenant, args.ae_title, identifier, args.model)
    except DicomhubError as err:
        return _fail(err)
    finally:
        archive.close()
    if args.json:
        print(json.dumps([ds.to_json_dict() for ds in found], indent=2))
    else:
        for ds in found:
            print(" | ".join(f"{e.keyword}={e.value}" for e in ds if e.keyword))
    print(f"{len(found)} match(es)", file=sys.stderr)
    return 0


def run_retrieve(args: argparse.Namespace) -> int:
    """C-GET or C-MOVE from a registered AE."""
    archive = _archive(args)
    try:
        tenant = peers.tenant_id(archive, args.tenant)
        summary = scu.retrieve(
            archive,
            tenant,
            args.ae_title,
            [scu.Ref(args.study, args.series, args.instance)],
            method=args.method,
            model=args.model,
            on_progress=_progress,
        )
    except DicomhubError as err:
        return _fail(err)
    finally:
        archive.close()
    return _report(summary)
