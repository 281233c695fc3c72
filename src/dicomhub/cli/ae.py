"""``dicomhub ae add|list|remove``: the registry of known remote application entities.

Exit codes: 0 done, 1 refused (conflicting registration, unknown AE), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dicomhub.cli.common import add_storage_args, settings_from
from dicomhub.errors import DicomhubError
from dicomhub.services import peers
from dicomhub.services.archive import Archive


def add_parser(sub: Any) -> None:
    """Register the ``ae`` subcommand and its actions."""
    p: argparse.ArgumentParser = sub.add_parser(
        "ae", help="manage known remote DICOM application entities (DIMSE peers)"
    )
    actions = p.add_subparsers(dest="ae_action", required=True)

    a = actions.add_parser("add", help="register a remote AE")
    add_storage_args(a)
    a.add_argument("ae_title", metavar="AE_TITLE")
    a.add_argument("--host", required=True, help="host name or IP address of the AE")
    a.add_argument("--port", type=int, required=True, help="its DIMSE port")
    a.add_argument("--tenant", help="tenant name (default: the default tenant)")
    for flag, what in (
        ("store", "send us instances (C-STORE)"),
        ("query", "query us (C-FIND)"),
        ("retrieve", "retrieve from us (C-MOVE, C-GET)"),
        ("move-destination", "be named as a C-MOVE destination"),
    ):
        a.add_argument(f"--no-{flag}", action="store_true", help=f"may not {what}")
    a.set_defaults(func=run_add)

    ls = actions.add_parser("list", help="list registered AEs")
    add_storage_args(ls)
    ls.add_argument("--tenant", help="only this tenant")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=run_list)

    rm = actions.add_parser("remove", help="forget a remote AE")
    add_storage_args(rm)
    rm.add_argument("ae_title", metavar="AE_TITLE")
    rm.add_argument("--tenant", help="tenant name (default: the default tenant)")
    rm.set_defaults(func=run_remove)


def _fail(err: DicomhubError) -> int:
    print(f"dicomhub ae: error: {err.reason}", file=sys.stderr)
    return 1


def run_add(args: argparse.Namespace) -> int:
    """Register an AE."""
    archive = Archive.open(settings_from(args))
    try:
        ae = peers.RemoteAE(
            tenant_id=peers.tenant_id(archive, args.tenant),
            ae_title=args.ae_title,
            host=args.host,
            port=args.port,
            may_store=not args.no_store,
            may_query=not args.no_query,
            may_retrieve=not args.no_retrieve,
            is_move_destination=not args.no_move_destination,
        )
        new = peers.add(archive, ae)
    except DicomhubError as err:
        return _fail(err)
    finally:
        archive.close()
    print(f"{'added' if new else 'already registered'}: {ae.ae_title.strip()}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print the registered AEs."""
    archive = Archive.open(settings_from(args))
    try:
        tenant = peers.tenant_id(archive, args.tenant) if args.tenant else None
        aes = peers.list_aes(archive, tenant)
    except DicomhubError as err:
        return _fail(err)
    finally:
        archive.close()
    if args.json:
        print(json.dumps([ae.to_dict() for ae in aes], indent=2))
        return 0
    print(f"{'TENANT':>6}  {'AE TITLE':16}  {'HOST:PORT':28}  RIGHTS")
    for ae in aes:
        rights = ",".join(
            name
            for name, ok in (
                ("store", ae.may_store),
                ("query", ae.may_query),
                ("retrieve", ae.may_retrieve),
                ("move-dest", ae.is_move_destination),
            )
            if ok
        )
        print(f"{ae.tenant_id:>6}  {ae.ae_title:16}  {ae.host + ':' + str(ae.port):28}  {rights}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """Forget an AE."""
    archive = Archive.open(settings_from(args))
    try:
        peers.remove(archive, peers.tenant_id(archive, args.tenant), args.ae_title)
    except DicomhubError as err:
        return _fail(err)
    finally:
        archive.close()
    print(f"removed: {args.ae_title.strip()}")
    return 0
