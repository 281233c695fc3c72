"""``dicomhub import``: store files, folders, ZIP archives and DICOM media (PS3.10 §8).

Exit codes: 0 everything found was stored (or was already there), 1 some items were rejected,
2 usage error (bad flag, missing path).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

from dicomhub.cli.common import add_storage_args, settings_from, setup_logging
from dicomhub.services.archive import Archive
from dicomhub.services.importer import ImportReport, Progress, import_paths

MAX_LISTED = 20  # names shown per reason in the text summary (--json lists them all)


def _jobs(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return n


def add_parser(sub: Any) -> None:
    """Register the ``import`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "import",
        help="import DICOM files, folders, ZIP archives and DICOMDIR media",
        description="Import DICOM files, folders (recursively), ZIP archives and copies of "
        "DICOM media (a folder with a DICOMDIR). Each instance is validated and stored like a "
        "STOW-RS upload.",
    )
    add_storage_args(p)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="file, folder or ZIP")
    p.add_argument("--jobs", type=_jobs, default=2, help="parallel ingest threads (default 2)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the import; print progress on stderr and a summary on stdout."""
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        for name in missing:
            print(f"dicomhub import: error: no such file or directory: {name}", file=sys.stderr)
        return 2
    settings = settings_from(args)
    setup_logging("warning")
    # pydicom warns about odd values per file, quoting them (possibly PHI): the summary reports
    # every file that matters, with a PHI-free reason.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    archive = Archive.open(settings)
    bar = ProgressBar(sys.stderr)
    try:
        report = import_paths(archive, args.paths, jobs=args.jobs, on_progress=bar.update)
    finally:
        archive.close()
    bar.close(report.snapshot())
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_summary(report))
    return report.exit_code


def format_summary(report: ImportReport) -> str:
    """The human-readable summary: counts, then rejected names grouped by reason."""
    data = report.to_dict()
    lines = [
        f"import: {data['stored']} stored, {data['duplicate']} duplicate"
        + (f", {data['overwritten']} overwritten" if data["overwritten"] else "")
        + f", {data['rejected']} rejected, {data['skipped']} skipped"
    ]
    for title, groups in (
        ("rejected", data["rejected_by_reason"]),
        ("skipped", data["skipped_by_reason"]),
    ):
        for reason, names in groups.items():
            lines.append(f"{title} ({len(names)}): {reason}")
            lines.extend(f"    {n}" for n in names[:MAX_LISTED])
            if len(names) > MAX_LISTED:
                lines.append(f"    ... and {len(names) - MAX_LISTED} more (see --json)")
    return "\n".join(lines)


class ProgressBar:
    """A one-line progress bar on a terminal; periodic plain lines otherwise.

    Thread-safe: ``update`` is called from the ingest threads.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        tty_interval_s: float = 0.1,
        line_interval_s: float = 10.0,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = tty_interval_s if self.tty else line_interval_s
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def update(self, p: Progress) -> None:
        """Redraw if the interval has passed."""
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        with self._lock:
            if now - self._last < self.interval:
                return
            self._last = now
            self._draw(p)

    def close(self, p: Progress) -> None:
        """Draw the final state and end the line."""
        with self._lock:
            if self.tty:
                self._draw(p)
                self.stream.write("\n")
                self.stream.flush()

    def _draw(self, p: Progress) -> None:
        counts = f"{p.done}/{p.total}  stored {p.stored}  dup {p.duplicate}  rejected {p.rejected}"
        if not self.tty:
            self.stream.write(f"import: {counts}\n")
            self.stream.flush()
            return
        width = shutil.get_terminal_size((80, 24)).columns
        bar_width = max(10, min(40, width - len(counts) - 10))
        filled = bar_width * p.done // p.total if p.total else 0
        bar = "#" * filled + "-" * (bar_width - filled)
        self.stream.write(f"\r[{bar}] {counts}\x1b[K")
        self.stream.flush()
