"""``dicomhub db upgrade``: migrate the index schema explicitly (``serve`` also does at start)."""

from __future__ import annotations

import argparse
from typing import Any

from dicomhub.cli.common import add_storage_args, settings_from, setup_logging
from dicomhub.storage.index.engine import IndexDatabase, redact
from dicomhub.storage.index.migrate import current_revision, head_revision, upgrade


def add_parser(sub: Any) -> None:
    """Register the ``db`` subcommand group."""
    p: argparse.ArgumentParser = sub.add_parser("db", help="index database maintenance")
    actions = p.add_subparsers(dest="db_command", required=True)
    up: argparse.ArgumentParser = actions.add_parser(
        "upgrade",
        help="migrate the index schema to the newest revision",
        description="Create or migrate the index schema (idempotent). Run it once before "
        "starting new node versions; several nodes migrating at once are serialised.",
    )
    add_storage_args(up)
    up.add_argument("--log-level", help="debug|info|warning|error")
    up.set_defaults(func=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> int:
    """Migrate the configured index to the head revision; print the revisions."""
    settings = settings_from(args)
    setup_logging(settings.log_level)
    db = IndexDatabase(settings.index_url)
    try:
        before = current_revision(db)
        upgrade(db)
        after = current_revision(db)
    finally:
        db.dispose()
    print(f"index {redact(settings.index_url)}: {before or 'empty'} -> {after}")
    return 0 if after == head_revision() else 1
