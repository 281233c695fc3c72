"""Bulk import of files, folders, ZIP archives and DICOM media (``dicomhub import``).

Every instance goes through :func:`~dicomhub.services.spool.spool_file` (or a
:class:`~dicomhub.services.spool.Spool` fed from a ZIP member), then
:func:`dicomhub.services.ingest.prepare` (in a pool of ``jobs`` threads) and
:func:`dicomhub.services.ingest.commit` (one thread, batches of :data:`COMMIT_BATCH`: group
commit), the path STOW-RS uses: same validation, durability and duplicate policy. The importer
only finds the instances:

* folders are walked recursively; symbolic links are followed only while they stay inside the
  given roots, and a file reached twice (link, overlapping inputs, DICOMDIR) is imported once;
* a folder holding a ``DICOMDIR`` (PS3.10 §8, media interchange; PS3.3 F.5 Directory Records)
  is read with pydicom and the files its records reference (Referenced File ID, relative to the
  DICOMDIR's folder, matched case-insensitively as CD file systems upper-case names) are
  imported; a DICOMDIR itself is never stored;
* ZIP archives (given, or found in folders) are read member by member as streams straight into a
  spool: nothing is extracted to disk by name, so a member name such as ``../../x`` or ``/etc/x``
  is only a label. Members, total bytes, compression ratio and nesting depth are bounded;
* anything without ``DICM`` at offset 128 (PS3.10 §7.1) is rejected at once, with a reason.

Reports name files relative to the input (never by patient data) and give PHI-free reasons.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import pydicom

from dicomhub.dicom.offsets import read_file_meta
from dicomhub.errors import DicomhubError, InvalidDicom, PayloadTooLarge
from dicomhub.services import ingest
from dicomhub.services.archive import DEFAULT_TENANT, Archive
from dicomhub.services.spool import Spool, spool_file

log = logging.getLogger(__name__)

__all__ = ["ImportLimits", "ImportReport", "Importer", "import_paths"]

#: Media Storage Directory Storage SOP Class (PS3.10 §8, PS3.4 Annex I).
DICOMDIR_SOP_CLASS: Final = "1.2.840.10008.1.3.10"
_PREAMBLE: Final = 128
_HEAD: Final = 4096  # enough for the preamble, 'DICM' and the File Meta Information
_ZIP_MAGIC: Final = (b"PK\x03\x04", b"PK\x05\x06")
_CHUNK: Final = 1024 * 1024
_SEP: Final = "!"  # archive!member in reported names
COMMIT_BATCH: Final = 32  # instances per index transaction (group commit)

NOT_DICOM: Final = "not a DICOM file (no 'DICM' prefix at offset 128, PS3.10 §7.1)"
DICOMDIR_READ: Final = "DICOMDIR (PS3.10 §8): the files it references were imported, not itself"
DICOMDIR_SKIPPED: Final = "DICOMDIR (media directory, PS3.10 §8): not an instance, not stored"


@dataclass(frozen=True, slots=True)
class ImportLimits:
    """Bounds on archives (ZIP bombs, member floods).

    Attributes:
        max_members: Members of one ZIP archive (nested archives count separately).
        max_total_bytes: Uncompressed bytes read from one top-level archive, nested included.
        max_ratio: Largest uncompressed/compressed ratio of a member ...
        ratio_floor_bytes: ... once more than this many bytes of it have been read (small
            members of zeros legitimately compress very well).
        max_zip_depth: ZIP archives inside a ZIP archive are opened to this depth.
    """

    max_members: int = 100_000
    max_total_bytes: int = 256 * 1024**3
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 16 * 1024**2
    max_zip_depth: int = 1


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for progress display."""

    done: int
    total: int
    stored: int
    duplicate: int
    rejected: int


@dataclass
class ImportReport:
    """Outcome of an import: counts, and file names grouped by reason. Thread-safe."""

    outcomes: dict[str, int] = field(
        default_factory=lambda: {"stored": 0, "duplicate": 0, "overwritten": 0}
    )
    rejected: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    total: int = 0
    done: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def found(self, n: int = 1) -> None:
        """Announce ``n`` more items to process (for progress)."""
        with self._lock:
            self.total += n

    def add(self, outcome: str) -> None:
        """Count a stored / duplicate / overwritten instance."""
        with self._lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.done += 1

    def reject(self, name: str, reason: str, *, counted: bool = True) -> None:
        """Record a rejected item (``counted``: it was announced with :meth:`found`)."""
        with self._lock:
            self.rejected.setdefault(reason, []).append(name)
            self._finish(counted)

    def skip(self, name: str, reason: str, *, counted: bool = True) -> None:
        """Record an item deliberately not stored (a DICOMDIR); not an error."""
        with self._lock:
            self.skipped.setdefault(reason, []).append(name)
            self._finish(counted)

    def settle(self) -> None:
        """Mark the end of the import (items never reached no longer count as to do)."""
        with self._lock:
            self.total = self.done

    def _finish(self, counted: bool) -> None:
        if not counted:
            self.total += 1
        self.done += 1

    @property
    def n_rejected(self) -> int:
        """Number of rejected items."""
        with self._lock:
            return sum(len(v) for v in self.rejected.values())

    def snapshot(self) -> Progress:
        """Current counts for a progress display."""
        with self._lock:
            return Progress(
                done=self.done,
                total=max(self.total, self.done),
                stored=self.outcomes["stored"] + self.outcomes.get("overwritten", 0),
                duplicate=self.outcomes["duplicate"],
                rejected=sum(len(v) for v in self.rejected.values()),
            )

    @property
    def exit_code(self) -> int:
        """0 when nothing was rejected, 1 otherwise."""
        return 1 if self.n_rejected else 0

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data (names sorted within each reason)."""
        with self._lock:
            return {
                **self.outcomes,
                "rejected": sum(len(v) for v in self.rejected.values()),
                "skipped": sum(len(v) for v in self.skipped.values()),
                "rejected_by_reason": {k: sorted(v) for k, v in sorted(self.rejected.items())},
                "skipped_by_reason": {k: sorted(v) for k, v in sorted(self.skipped.items())},
            }


def display_name(text: str) -> str:
    """A report-safe rendering of a file or member name (no control characters)."""
    return "".join(c if c.isprintable() else "?" for c in text)


class _BudgetExceeded(Exception):
    """The archive's total uncompressed byte budget is spent."""


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise _BudgetExceeded


class _MemberRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Importer:
    """Finds instances under the given paths and stores them with a pool of threads."""

    def __init__(
        self,
        archive: Archive,
        tenant_id: int = DEFAULT_TENANT,
        *,
        jobs: int = 2,
        limits: ImportLimits | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        if jobs < 1:
            raise ValueError("jobs must be >= 1")
        self.archive = archive
        self.tenant_id = tenant_id
        self.jobs = jobs
        self.limits = limits or ImportLimits()
        self.report = ImportReport()
        self._on_progress = on_progress
        self._tmp = archive.settings.tmp_dir
        self._max_bytes = archive.settings.max_instance_bytes
        self._roots: list[Path] = []
        self._seen: set[tuple[int, int]] = set()
        self._slots = threading.BoundedSemaphore(2 * jobs)
        self._pool: ThreadPoolExecutor | None = None
        self._commits: queue.Queue[tuple[str, ingest.Prepared] | None] = queue.Queue(
            maxsize=2 * COMMIT_BATCH
        )

    # -----------------------------------------------------------------------------------------
    # driver: discovery in the calling thread, spool + parse in a pool, one committing thread

    def run(self, paths: Sequence[Path]) -> ImportReport:
        """Import everything under ``paths``; return the report (also on partial failure)."""
        self._roots = [Path(os.path.realpath(_root_of(Path(p)))) for p in paths]
        plan: list[tuple[str, Path, str]] = []
        for p in paths:
            plan.extend(self._plan_input(Path(p)))
        committer = threading.Thread(target=self._commit_loop, name="dicomhub-import-commit")
        committer.start()
        try:
            with ThreadPoolExecutor(self.jobs, thread_name_prefix="dicomhub-import") as pool:
                self._pool = pool
                for kind, path, name in plan:
                    if kind == "zip":
                        self._import_zip_file(path, name)
                    else:
                        self._submit(self._ingest_path, path, name)
        finally:
            self._pool = None
            self._commits.put(None)
            committer.join()
        self.report.settle()
        self._progress()
        return self.report

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.report.snapshot())

    def _submit(self, fn: Callable[[Any, str], None], item: Any, name: str) -> None:
        assert self._pool is not None
        self._slots.acquire()  # bounds the spools in flight (and so the temporary disk use)
        self._pool.submit(self._guarded, fn, item, name)

    def _guarded(self, fn: Callable[[Any, str], None], item: Any, name: str) -> None:
        try:
            fn(item, name)
        except Exception as exc:
            log.exception("unexpected error while importing")
            self.report.reject(name, f"internal error ({type(exc).__name__}); see the log")
        finally:
            self._slots.release()
            self._progress()

    # -----------------------------------------------------------------------------------------
    # discovery: what to import, classified by the first bytes of each file

    def _plan_input(self, path: Path) -> Iterator[tuple[str, Path, str]]:
        absolute = Path(os.path.normpath(Path.cwd() / path))
        label = display_name(absolute.name or str(absolute))
        if not path.exists():
            self.report.reject(label, "no such file or directory", counted=False)
        elif path.is_dir():
            yield from self._plan_dir(path, label)
        elif not _is_regular(path):
            self.report.reject(label, "not a regular file", counted=False)
        elif path.name.upper() == "DICOMDIR":
            shown = Path(display_name(absolute.parent.name or "media"))
            yield from self._plan_media(path.parent, path, str(shown / path.name), shown)
        elif self._first_visit(path):
            yield from self._plan_file(path, label)

    def _inside_roots(self, path: Path) -> bool:
        real = os.path.realpath(path)
        return any(real == str(r) or real.startswith(str(r) + os.sep) for r in self._roots)

    def _first_visit(self, path: Path) -> bool:
        st = path.stat()
        ident = (st.st_dev, st.st_ino)
        if ident in self._seen:
            return False
        self._seen.add(ident)
        return True

    def _plan_dir(self, top: Path, label: str) -> Iterator[tuple[str, Path, str]]:
        if not self._first_visit(top):
            return
        stack: list[tuple[Path, Path]] = [(top, Path(label))]
        while stack:
            folder, shown = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as exc:
                self.report.reject(display_name(str(shown)), _os_reason(exc), counted=False)
                continue
            subdirs: list[tuple[Path, Path]] = []
            media = [e for e in entries if e.name.upper() == "DICOMDIR"]
            for e in media + [e for e in entries if e.name.upper() != "DICOMDIR"]:
                path, name = Path(e.path), shown / e.name
                if e.is_symlink() and not self._inside_roots(path):
                    self.report.reject(
                        display_name(str(name)),
                        "symbolic link leads outside the import roots (not followed)",
                        counted=False,
                    )
                    continue
                try:
                    if e in media and e.is_file():
                        yield from self._plan_media(folder, path, str(name), shown)
                    elif e.is_dir():
                        if self._first_visit(path):
                            subdirs.append((path, name))
                    elif e.is_file() and self._first_visit(path):
                        yield from self._plan_file(path, display_name(str(name)))
                except OSError as exc:
                    self.report.reject(display_name(str(name)), _os_reason(exc), counted=False)
            stack.extend(reversed(subdirs))

    def _plan_file(self, path: Path, name: str) -> Iterator[tuple[str, Path, str]]:
        try:
            with path.open("rb") as f:
                head = f.read(_HEAD)
        except OSError as exc:
            self.report.reject(name, _os_reason(exc), counted=False)
            return
        kind = _classify(head)
        if kind == "dicom":
            self.report.found()
            yield "dicom", path, name
        elif kind == "dicomdir":
            self.report.skip(name, DICOMDIR_SKIPPED, counted=False)
        elif kind == "zip":
            yield "zip", path, name
        else:
            self.report.reject(name, NOT_DICOM, counted=False)

    def _plan_media(
        self, folder: Path, dicomdir: Path, name: str, shown: Path
    ) -> Iterator[tuple[str, Path, str]]:
        """Files referenced by a DICOMDIR (PS3.3 F.5: Referenced File ID (0004,1500))."""
        self._first_visit(dicomdir)
        try:
            if dicomdir.stat().st_size > self._max_bytes:
                raise PayloadTooLarge("DICOMDIR larger than the instance size limit")
            ds = pydicom.dcmread(dicomdir, stop_before_pixels=True)
            records = ds.get("DirectoryRecordSequence") or []
            file_ids = [r.get("ReferencedFileID") for r in records]
        except Exception as exc:  # pydicom raises many kinds for a corrupt file
            log.info("unreadable DICOMDIR: %s", type(exc).__name__)
            reason = "unreadable DICOMDIR (PS3.10 §8); its folder is imported file by file"
            self.report.reject(display_name(name), reason, counted=False)
            return
        self.report.skip(display_name(name), DICOMDIR_READ, counted=False)
        listing: dict[Path, list[str]] = {}
        for file_id in file_ids:
            if file_id is None or file_id == "":
                continue
            parts = [str(file_id)] if isinstance(file_id, str) else [str(x) for x in file_id]
            parts = [c for p in parts for c in p.split("\\")]
            ref_name = display_name(
                str(shown.joinpath(*[p for p in parts if p]) if parts else shown)
            )
            if not all(_valid_component(p) for p in parts):
                self.report.reject(
                    ref_name, "invalid Referenced File ID in DICOMDIR (PS3.10 §8.5)", counted=False
                )
                continue
            found = _resolve_case_insensitive(folder, parts, listing)
            if found is None or not found.is_file():
                self.report.reject(
                    ref_name, "file referenced by the DICOMDIR is missing", counted=False
                )
                continue
            if not self._inside_roots(found):
                self.report.reject(
                    ref_name,
                    "symbolic link leads outside the import roots (not followed)",
                    counted=False,
                )
                continue
            rel = found.relative_to(folder)
            if self._first_visit(found):
                yield from self._plan_file(found, display_name(str(shown / rel)))

    # -----------------------------------------------------------------------------------------
    # storing

    def _ingest_path(self, path: Path, name: str) -> None:
        try:
            spool, sha = spool_file(path, self._tmp, self._max_bytes)
        except DicomhubError as exc:
            self.report.reject(name, exc.reason)
            return
        except OSError as exc:
            self.report.reject(name, _os_reason(exc))
            return
        self._prepare(spool, name, sha)

    def _prepare(self, spool: Spool, name: str, sha: str | None = None) -> None:
        """Parse and validate (in the pool), then queue for the group commit."""
        try:
            prepared = ingest.prepare(self.archive, spool, sha)
        except DicomhubError as exc:
            self.report.reject(name, exc.reason)
            return
        self._commits.put((name, prepared))

    def _commit_loop(self) -> None:
        """Commit prepared instances in batches (group commit, see :mod:`ingest`)."""
        finished = False
        while not finished:
            first = self._commits.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < COMMIT_BATCH:
                try:
                    item = self._commits.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    finished = True
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[tuple[str, ingest.Prepared]]) -> None:
        try:
            outcomes = ingest.commit(self.archive, self.tenant_id, [p for _, p in batch])
        except Exception as exc:  # index or blob store failure: the whole batch failed
            log.exception("could not commit imported instances")
            reason = (
                f"not stored: {exc.reason}"
                if isinstance(exc, DicomhubError)
                else (f"internal error ({type(exc).__name__}); see the log")
            )
            for name, prepared in batch:
                prepared.spool.discard()
                self.report.reject(name, reason)
        else:
            for (name, _), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, DicomhubError):
                    self.report.reject(name, outcome.reason)
                else:
                    self.report.add(outcome.outcome)
        self._progress()

    # -----------------------------------------------------------------------------------------
    # ZIP archives: members are streamed into spools, never extracted by name

    def _import_zip_file(self, path: Path, name: str) -> None:
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            self.report.reject(name, "corrupt or unsupported ZIP archive", counted=False)
            return
        with zf:
            try:
                self._import_zip(zf, name, 0, _Budget(self.limits.max_total_bytes))
            except _BudgetExceeded:
                self.report.reject(
                    name,
                    f"ZIP archive larger than {self.limits.max_total_bytes} bytes uncompressed; "
                    "rest not read",
                    counted=False,
                )

    def _import_zip(self, zf: zipfile.ZipFile, name: str, depth: int, budget: _Budget) -> None:
        try:
            infos = [i for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, ValueError):
            self.report.reject(name, "corrupt or unsupported ZIP archive", counted=False)
            return
        if len(infos) > self.limits.max_members:
            self.report.reject(
                name, f"ZIP archive has more than {self.limits.max_members} members", counted=False
            )
            return
        self.report.found(len(infos))
        for info in infos:
            member = f"{name}{_SEP}{display_name(info.filename)}"
            if info.flag_bits & 0x1:
                self.report.reject(member, "encrypted ZIP member")
                continue
            try:
                with zf.open(info) as stream:
                    self._import_member(stream, info, member, depth, budget)
            except _MemberRejected as exc:
                self.report.reject(member, exc.reason)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
                log.info("bad ZIP member: %s", type(exc).__name__)
                self.report.reject(member, "corrupt or unsupported ZIP member")
            except _BudgetExceeded:
                self.report.reject(member, "ZIP archive byte budget exhausted")
                raise

    def _import_member(
        self, stream: IO[bytes], info: zipfile.ZipInfo, member: str, depth: int, budget: _Budget
    ) -> None:
        reader = _BoundedReader(stream, info.compress_size, budget, self.limits)
        head = reader.read_exactly(_HEAD)
        kind = _classify(head)
        if kind == "dicomdir":
            self.report.skip(member, DICOMDIR_SKIPPED)
        elif kind == "zip":
            if depth >= self.limits.max_zip_depth:
                raise _MemberRejected(
                    f"ZIP archive nested deeper than {self.limits.max_zip_depth} level(s)"
                )
            self._import_nested_zip(reader, head, member, depth, budget)
        elif kind != "dicom":
            raise _MemberRejected(NOT_DICOM)
        else:
            spool = Spool(self._tmp, self._max_bytes, hash_on_write=False)  # hashed in the pool
            try:
                spool.write(head)
                while chunk := reader.read(_CHUNK):
                    spool.write(chunk)
            except PayloadTooLarge as exc:
                raise _MemberRejected(exc.reason) from None
            except BaseException:
                spool.discard()
                raise
            spool.finish()
            self._submit(self._prepare, spool, member)

    def _import_nested_zip(
        self, reader: _BoundedReader, head: bytes, member: str, depth: int, budget: _Budget
    ) -> None:
        self.report.found(-1)  # the nested archive is replaced by its members
        with tempfile.TemporaryFile(prefix="zip-", dir=self._tmp) as tmp:
            tmp.write(head)
            while chunk := reader.read(_CHUNK):
                tmp.write(chunk)
            tmp.seek(0)
            try:
                inner = zipfile.ZipFile(tmp)
            except (zipfile.BadZipFile, ValueError, EOFError):
                self.report.found()
                raise _MemberRejected("corrupt or unsupported ZIP archive") from None
            with inner:
                self._import_zip(inner, member, depth + 1, budget)


class _BoundedReader:
    """Reads a ZIP member counting the real uncompressed bytes (headers may lie)."""

    def __init__(
        self, stream: IO[bytes], compressed: int, budget: _Budget, limits: ImportLimits
    ) -> None:
        self.stream = stream
        self.compressed = max(compressed, 1)
        self.budget = budget
        self.limits = limits
        self.count = 0

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        self.count += len(data)
        self.budget.take(len(data))
        if (
            self.count > self.limits.ratio_floor_bytes
            and self.count > self.limits.max_ratio * self.compressed
        ):
            raise _MemberRejected(
                f"compression ratio above {self.limits.max_ratio:g}:1 (possible ZIP bomb); "
                "not read further"
            )
        return data

    def read_exactly(self, n: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < n:
            data = self.read(n - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)


def _classify(head: bytes) -> str:
    """'dicom', 'dicomdir', 'zip' or 'other' from the first bytes of a file.

    ``DICM`` is checked first: a DICOM file whose preamble holds a ZIP header (PS3.10 §7.5
    dual-personality files) is a DICOM file.
    """
    if len(head) >= _PREAMBLE + 4 and head[_PREAMBLE : _PREAMBLE + 4] == b"DICM":
        try:
            meta = read_file_meta(head, len(head))
        except InvalidDicom:
            return "dicom"  # truncated head or odd meta: ingest gives the precise reason
        return "dicomdir" if meta.text(0x00020002) == DICOMDIR_SOP_CLASS else "dicom"
    if head[:4] in _ZIP_MAGIC:
        return "zip"
    return "other"


def _valid_component(part: str) -> bool:
    return bool(part) and part not in (".", "..") and "/" not in part and "\x00" not in part


def _resolve_case_insensitive(
    base: Path, parts: Iterable[str], listing: dict[Path, list[str]]
) -> Path | None:
    """Resolve ``parts`` below ``base``, matching each component case-insensitively."""
    current = base
    for part in parts:
        exact = current / part
        if os.path.lexists(exact):
            current = exact
            continue
        if current not in listing:
            try:
                listing[current] = sorted(p.name for p in current.iterdir())
            except OSError:
                return None
        wanted = part.casefold()
        match = next((n for n in listing[current] if n.casefold() == wanted), None)
        if match is None:
            return None
        current = current / match
    return current


def _root_of(path: Path) -> Path:
    """The folder an input confines symbolic links to (a DICOMDIR's folder, else itself)."""
    if path.name.upper() == "DICOMDIR" and path.is_file():
        return path.parent
    return path


def _os_reason(exc: OSError) -> str:
    # strerror only: the message of an OSError repeats the path.
    return f"cannot read: {exc.strerror or type(exc).__name__}"


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def import_paths(
    archive: Archive,
    paths: Sequence[Path],
    *,
    tenant_id: int = DEFAULT_TENANT,
    jobs: int = 2,
    limits: ImportLimits | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> ImportReport:
    """Import files, folders, ZIP archives and DICOMDIR media; see :class:`Importer`."""
    importer = Importer(archive, tenant_id, jobs=jobs, limits=limits, on_progress=on_progress)
    return importer.run(paths)
