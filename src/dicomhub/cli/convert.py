"""``dicomhub convert``: DICOM files, folders or stored studies to PNG, JPEG or GIF.

For sites whose terminals cannot display DICOM: every frame of every instance, windowed
(stored window, ``--window C,W[,FUNCTION]`` or ``--preset NAME``, PS3.3 C.11.2), optionally
resized. Multi-frame instances give one image per frame (``NAME-f0001.png``...) or one animated
GIF. Exit codes: 0 all converted, 1 some inputs could not be converted, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dicomhub.cli.common import add_storage_args, settings_from
from dicomhub.config import Settings
from dicomhub.errors import DicomhubError
from dicomhub.imaging import encode as enc
from dicomhub.imaging.pipeline import RenderOptions, parse_window, preset_window
from dicomhub.imaging.source import read_dataset
from dicomhub.services import render

FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "gif": "image/gif"}
STUDY_PREFIX = "study:"


def add_parser(sub: Any) -> None:
    """Register the ``convert`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "convert",
        help="convert DICOM images to PNG/JPEG/GIF",
        description="Render DICOM files, folders (recursively) or stored studies "
        f"('{STUDY_PREFIX}UID', with the storage flags) as PNG, JPEG or GIF images.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="file, folder or study:UID")
    p.add_argument("--to", choices=sorted(FORMATS), default="png", help="output format")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--window", help="center,width[,linear|linear-exact|sigmoid]")
    group.add_argument("--preset", help="named window (lung, mediastinum, bone, brain, ...)")
    p.add_argument("--frames", default="all", help="all (default) or e.g. 1,5-9")
    p.add_argument("--size", help="fit into WxH pixels (aspect ratio kept), e.g. 512x512")
    p.add_argument("--quality", type=int, default=None, help="JPEG quality 1..100")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_storage_args(p)
    p.set_defaults(func=run)


class Progress:
    """A one-line progress bar on stderr (only on a terminal unless forced)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self._lock = threading.Lock()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more frames done and redraw."""
        with self._lock:
            self.done += n
            if self.enabled:
                width = 30
                filled = width * self.done // max(self.total, 1)
                bar = "#" * filled + "." * (width - filled)
                sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} frames")
                sys.stderr.flush()

    def close(self) -> None:
        """End the progress line."""
        if self.enabled:
            sys.stderr.write("\n")


def _files(inputs: list[str]) -> Iterator[Path]:
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def _request(args: argparse.Namespace, settings: Settings) -> render.RenderRequest:
    window = None
    if args.window:
        window = parse_window(args.window)
    elif args.preset:
        window = preset_window(args.preset, settings.window_presets)
    viewport = enc.parse_viewport(args.size) if args.size else None
    quality = enc.parse_quality(str(args.quality)) if args.quality is not None else None
    return render.RenderRequest(
        FORMATS[args.to], RenderOptions(window=window), viewport, quality, args.frames
    )


def _write(out: Path, stem: str, results: list[tuple[int, bytes]], media: str, multi: bool) -> int:
    ext = enc.EXTENSIONS[media]
    for number, data in results:
        name = f"{stem}-f{number:04d}.{ext}" if multi and media != "image/gif" else f"{stem}.{ext}"
        (out / name).write_bytes(data)
    return len(results)


def _unique(stem: str, used: set[str]) -> str:
    candidate, i = stem, 2
    while candidate in used:
        candidate, i = f"{stem}-{i}", i + 1
    used.add(candidate)
    return candidate


def run(args: argparse.Namespace) -> int:
    """Convert every input; report failures on stderr and carry on."""
    settings = settings_from(args)
    try:
        req = _request(args, settings)
    except DicomhubError as exc:
        print(f"dicomhub convert: {exc.reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    studies = [i[len(STUDY_PREFIX) :] for i in args.inputs if i.startswith(STUDY_PREFIX)]
    files = list(_files([i for i in args.inputs if not i.startswith(STUDY_PREFIX)]))
    progress = Progress(0, not args.quiet and sys.stderr.isatty())
    used: set[str] = set()
    written = failed = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            try:
                ds = read_dataset(str(path))
                frames = int(ds.get("NumberOfFrames", 1) or 1)
                progress.total += frames
                results = render.render_dataset(ds, req, progress.advance)
            except (DicomhubError, OSError, ValueError) as exc:
                reason = exc.reason if isinstance(exc, DicomhubError) else str(exc)
                print(f"\nskipped {path}: {reason}", file=sys.stderr)
                failed += 1
                continue
            stem = _unique(path.stem if path.suffix.lower() == ".dcm" else path.name, used)
            written += _write(args.out, stem, results, req.media_type, frames > 1)
        if studies:
            written_s, failed_s = _convert_studies(settings, studies, req, args.out, used)
            written, failed = written + written_s, failed + failed_s
    progress.close()
    print(
        f"wrote {written} image(s) to {args.out}"
        + (f"; {failed} input(s) skipped" if failed else "")
    )
    return 1 if failed else 0


def _convert_studies(
    settings: Settings, studies: list[str], req: render.RenderRequest, out: Path, used: set[str]
) -> tuple[int, int]:
    from dicomhub.services import retrieve
    from dicomhub.services.archive import DEFAULT_TENANT, Archive

    written = failed = 0
    archive = Archive.open(settings, migrate=False)
    try:
        for study in studies:
            try:
                records = retrieve.find_instances(archive, DEFAULT_TENANT, study)
            except DicomhubError as exc:
                print(f"skipped study {study}: {exc.reason}", file=sys.stderr)
                failed += 1
                continue
            for rec in records:
                try:
                    module = render.module_for(archive, rec)
                    numbers = render.parse_frame_ranges(req.frames, module.number_of_frames, [1])
                    images = render.rendered_frames(archive, rec, numbers, req)
                except DicomhubError as exc:
                    print(f"skipped instance {rec.sop_uid}: {exc.reason}", file=sys.stderr)
                    failed += 1
                    continue
                stem = _unique(rec.sop_uid, used)
                results = list(zip(numbers, images, strict=False))
                written += _write(out, stem, results, req.media_type, module.number_of_frames > 1)
    finally:
        archive.close()
    return written, failed
