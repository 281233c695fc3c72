"""``dicomhub check``: what is configured, whether it is reachable, whether the schema is current.

Exit codes: 0 everything reachable and the index schema current, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dicomhub.cli.common import add_storage_args, settings_from
from dicomhub.config import Settings
from dicomhub.services.archive import blob_store_of
from dicomhub.storage.blobs.keys import new_key
from dicomhub.storage.index.engine import IndexDatabase, redact
from dicomhub.storage.index.migrate import current_revision, head_revision


def add_parser(sub: Any) -> None:
    """Register the ``check`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "check",
        help="show the configured index and blob store and whether they are reachable",
    )
    add_storage_args(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def redact_url(url: str) -> str:
    """``url`` without secrets: a password in the authority, credentials in the query."""
    if url.startswith(("sqlite:", "postgresql", "postgres:")):
        return redact(url)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else netloc
    query = "&".join(
        f"{k}=***" if any(s in k.lower() for s in ("secret", "password", "token", "key")) else kv
        for kv in parts.query.split("&")
        if kv
        for k in [kv.split("=", 1)[0]]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def check_index(url: str) -> dict[str, Any]:
    """Reachability and schema revision of the index database at ``url``."""
    out: dict[str, Any] = {"url": redact_url(url), "reachable": False}
    try:
        db = IndexDatabase(url)
    except Exception as exc:
        out["error"] = _error(exc)
        return out
    try:
        head = head_revision()
        current = current_revision(db)
        out.update(reachable=True, dialect=db.dialect, revision=current, head=head)
        out["current"] = current == head
    except Exception as exc:
        out["error"] = _error(exc)
    finally:
        db.dispose()
    return out


def check_blobs(settings: Settings) -> dict[str, Any]:
    """Reachability of the configured blob store (a lookup of a key that does not exist)."""
    out: dict[str, Any] = {"url": redact_url(settings.blobs_url), "reachable": False}
    try:
        store = blob_store_of(settings)
        if settings.s3_endpoint and settings.blobs_url.startswith("s3:"):
            out["endpoint"] = redact_url(settings.s3_endpoint)
        probe = getattr(store, "check", None)
        if callable(probe):
            probe()
        else:
            store.size(new_key())
        out["reachable"] = True
        close = getattr(store, "close", None)
        if callable(close):
            close()
    except Exception as exc:
        out["error"] = _error(exc)
    return out


def run(args: argparse.Namespace) -> int:
    """Print the configuration check; exit 1 unless everything is reachable and current."""
    settings = settings_from(args)
    index = check_index(settings.index_url)
    blobs = check_blobs(settings)
    ok = bool(index.get("current")) and bool(blobs["reachable"])
    if args.json:
        print(json.dumps({"ok": ok, "index": index, "blobs": blobs}, indent=2))
        return 0 if ok else 1
    if not index["reachable"]:
        state = f"UNREACHABLE ({index.get('error', '')})"
    elif index.get("current"):
        state = f"ok, schema {index['revision']} (current)"
    else:
        state = f"reachable, schema {index.get('revision') or 'empty'}, needs {index.get('head')}"
        state += " (run: dicomhub db upgrade)"
    print(f"index  {index['url']}: {state}")
    bstate = "ok" if blobs["reachable"] else f"UNREACHABLE ({blobs.get('error', '')})"
    print(f"blobs  {blobs['url']}: {bstate}")
    return 0 if ok else 1
