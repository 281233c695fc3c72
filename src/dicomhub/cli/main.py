"""The ``dicomhub`` command."""

from __future__ import annotations

import argparse
import sys

from dicomhub import __version__
from dicomhub.cli import (
    ae,
    check,
    convert,
    db,
    dimse_cli,
    fsck,
    import_,
    migrate,
    serve,
    tags,
    worker,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="dicomhub", description="PACS on demand")
    parser.add_argument("--version", action="version", version=f"dicomhub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)
    import_.add_parser(sub)
    fsck.add_parser(sub)
    ae.add_parser(sub)
    dimse_cli.add_parsers(sub)
    worker.add_parser(sub)
    db.add_parser(sub)
    check.add_parser(sub)
    convert.add_parser(sub)
    tags.add_parser(sub)
    migrate.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments and run the subcommand."""
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
