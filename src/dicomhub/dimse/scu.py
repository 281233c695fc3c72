"""The DIMSE client side (SCU): send, query and retrieve against registered remote AEs.

* :func:`send` — C-STORE stored instances, as stored (PS3.4 B.2), to a registered AE.
* :func:`query` — C-FIND a remote AE (PS3.4 C.4.1), Patient or Study Root.
* :func:`retrieve` — C-GET into this archive through the ingest service (PS3.4 C.4.3), or
  C-MOVE with this archive's AE title as the destination (PS3.4 C.4.2; the running
  ``dicomhub serve`` receives the instances).

These are the one implementation of each operation: ``dicomhub send|query|retrieve`` run them
synchronously, the JSON API runs them as durable jobs (:mod:`dicomhub.jobs.scu_tasks`). Each
reports progress through a callback and returns a summary. Failures to reach the peer (no
association: refused, rejected, aborted, timed out) raise :class:`~dicomhub.errors.Unavailable`
(worth retrying); a peer's failure status raises :class:`~dicomhub.errors.RemoteFailure`
(permanent) except "out of resources" (A7xx, PS3.4 C.4), which is transient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom import datadict
from pydicom.dataset import Dataset

from dicomhub.dimse.status import PENDING, SUCCESS
from dicomhub.dimse.transfer import StoredRef, configure, contexts_for
from dicomhub.errors import DicomhubError, InvalidInput, NotFound, RemoteFailure, Unavailable
from dicomhub.services import ingest, peers
from dicomhub.services import retrieve as stored
from dicomhub.services.archive import Archive
from dicomhub.services.spool import Spool
from dicomhub.storage.index.records import InstanceRecord

FIND: Final = {
    "patient": "1.2.840.10008.5.1.4.1.2.1.1",
    "study": "1.2.840.10008.5.1.4.1.2.2.1",
}
MOVE: Final = {"patient": "1.2.840.10008.5.1.4.1.2.1.2", "study": "1.2.840.10008.5.1.4.1.2.2.2"}
GET: Final = {"patient": "1.2.840.10008.5.1.4.1.2.1.3", "study": "1.2.840.10008.5.1.4.1.2.2.3"}
LEVELS: Final = ("PATIENT", "STUDY", "SERIES", "IMAGE")
MODELS: Final = ("study", "patient")
METHODS: Final = ("get", "move")
#: Transfer syntaxes proposed, one context each, for instances received by C-GET.
GET_SYNTAXES: Final = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
#: C-FIND/C-MOVE/C-GET pending statuses (PS3.4 C.4.1.1.4: FF01 = optional keys unsupported).
_PENDING = (PENDING, 0xFF01)
_CANCEL = 0xFE00
#: Most failed sub-operations listed by UID in a summary.
MAX_LISTED_FAILURES: Final = 100


@dataclass(frozen=True, slots=True)
class Ref:
    """A study, a series of it, or an instance of that series, by UID."""

    study: str
    series: str | None = None
    instance: str | None = None

    @property
    def level(self) -> str:
        """The Query/Retrieve Level that names exactly this (PS3.4 C.6.2.1)."""
        return "IMAGE" if self.instance else "SERIES" if self.series else "STUDY"

    def keys(self) -> list[str]:
        """The unique keys as ``KEY=VALUE`` strings (see :func:`identifier_from_keys`)."""
        keys = [f"StudyInstanceUID={self.study}"]
        if self.series:
            keys.append(f"SeriesInstanceUID={self.series}")
        if self.instance:
            keys.append(f"SOPInstanceUID={self.instance}")
        return keys


Progress = Callable[["Summary"], None]


@dataclass
class Summary:
    """What an operation did, in sub-operation counts (PS3.4 C.4.2.1.5 for C-MOVE/C-GET)."""

    completed: int = 0
    failed: int = 0
    warnings: int = 0
    remaining: int = 0
    #: Human-readable failures (with the peer's Error Comment), for the command line.
    failures: list[str] = field(default_factory=list)
    #: Failed instances as (SOP Instance UID, status), at most :data:`MAX_LISTED_FAILURES`.
    failed_instances: list[tuple[str, int]] = field(default_factory=list)
    #: The association ended before the operation did (aborted, timed out, peer gone).
    aborted: bool = False
    #: The last final status of a C-MOVE/C-GET (None before one arrives).
    status: int | None = None

    @property
    def ok(self) -> bool:
        """Whether nothing failed."""
        return self.failed == 0 and not self.aborted

    @property
    def done(self) -> int:
        """Sub-operations finished so far, whatever their outcome."""
        return self.completed + self.failed + self.warnings

    def counts(self) -> dict[str, int]:
        """The counters as a JSON-friendly dict."""
        return {
            "completed": self.completed,
            "failed": self.failed,
            "warning": self.warnings,
            "remaining": self.remaining,
        }

    def add(self, other: Summary) -> None:
        """Fold a finished operation's counters into this one."""
        self.completed += other.completed
        self.failed += other.failed
        self.warnings += other.warnings
        self.failures += other.failures
        room = MAX_LISTED_FAILURES - len(self.failed_instances)
        self.failed_instances += other.failed_instances[: max(0, room)]
        self.aborted = self.aborted or other.aborted
        if other.status is not None:
            self.status = other.status


def is_out_of_resources(status: int | None) -> bool:
    """Whether a failure status is "Refused: Out of Resources" (A7xx, PS3.4 C.4): transient."""
    return status is not None and status >> 8 == 0xA7


def identifier_from_keys(level: str, keys: Iterable[str]) -> Dataset:
    """A C-FIND/C-MOVE/C-GET identifier from ``KEY[=VALUE]`` strings (PS3.4 C.4.1.1.3).

    ``KEY`` is an attribute keyword (``PatientName``) or a tag (``00100010``); a key without a
    value is a return key (universal matching).

    Raises:
        InvalidInput: unknown level or attribute, a sequence, or a value its VR refuses.
    """
    if level not in LEVELS:
        raise InvalidInput(f"the Query/Retrieve Level is one of {', '.join(LEVELS)}")
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key in keys:
        name, _, value = key.partition("=")
        keyword = _keyword(name.strip())
        if keyword == "QueryRetrieveLevel":
            raise InvalidInput("give the Query/Retrieve Level as the level, not as a key")
        if datadict.dictionary_VR(keyword) == "SQ":
            raise InvalidInput(f"sequence matching is not supported ({keyword})")
        try:
            setattr(ds, keyword, value)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            raise InvalidInput(f"bad value for key {keyword}") from exc
    return ds


def _keyword(name: str) -> str:
    """The keyword of an attribute given by keyword or as 8 hex digits (``0010,0010`` too)."""
    hexed = name.replace(",", "").replace("(", "").replace(")", "")
    if len(hexed) == 8 and all(c in "0123456789abcdefABCDEF" for c in hexed):
        keyword = datadict.keyword_for_tag(int(hexed, 16))
        if keyword:
            return str(keyword)
    elif datadict.tag_for_keyword(name) is not None:
        return name
    raise InvalidInput(f"unknown attribute {name[:64]!r} (a DICOM keyword or tag)")


def _remote(archive: Archive, tenant: int, ae_title: str) -> peers.RemoteAE:
    ae = peers.get(archive, tenant, ae_title)
    if ae is None:
        raise NotFound(f"AE {ae_title.strip()!r} is not registered (dicomhub ae add)")
    return ae


def _associate(archive: Archive, remote: peers.RemoteAE, contexts: list[Any], **kw: Any) -> Any:
    """An established association with ``remote`` (PS3.8 §7.1), or :class:`Unavailable`."""
    from pynetdicom import AE, evt

    configure()
    s = archive.settings
    ae = AE(ae_title=s.ae_title)
    ae.acse_timeout = s.dimse_acse_timeout_s
    ae.dimse_timeout = s.dimse_timeout_s
    ae.network_timeout = s.dimse_idle_timeout_s
    connected: list[bool] = []
    handlers = [*kw.pop("evt_handlers", []), (evt.EVT_CONN_OPEN, lambda _e: connected.append(True))]
    assoc = ae.associate(
        remote.host,
        remote.port,
        contexts=contexts,
        ae_title=remote.ae_title,
        evt_handlers=handlers,
        **kw,
    )
    if assoc.is_established:
        return assoc
    where = f"{remote.ae_title} at {remote.host}:{remote.port}"
    if not connected:
        raise Unavailable(f"no connection to {where} (connection refused or timed out)")
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        detail = ""
        if rj is not None:
            detail = f" (result {rj.result}, source {rj.result_source}, reason {rj.diagnostic})"
        raise Unavailable(f"association with {where} rejected{detail}")
    if assoc.is_aborted:
        raise Unavailable(f"association with {where} aborted")
    raise Unavailable(f"no association with {where} (timed out)")


def _release(assoc: Any) -> None:
    if assoc.is_established:
        assoc.release()


def send(
    archive: Archive,
    tenant: int,
    ae_title: str,
    refs: Sequence[Ref],
    on_progress: Progress | None = None,
) -> Summary:
    """C-STORE stored studies, series or instances to a registered AE, byte for byte.

    One association carries every instance of ``refs`` (each once), with one presentation
    context per (SOP Class, stored transfer syntax) (PS3.4 B.2, PS3.8 §9.3.2.2).

    Raises:
        NotFound: the AE is not registered, or a reference names nothing stored.
        Unavailable: no association.
    """
    remote = _remote(archive, tenant, ae_title)
    records = _records(archive, tenant, refs)
    assoc = _associate(archive, remote, contexts_for(records))
    summary = Summary(remaining=len(records))
    try:
        for i, rec in enumerate(records, start=1):
            try:
                status = assoc.send_c_store(StoredRef(archive, rec))
                code = int(status.Status) if "Status" in status else -1
            except Exception as exc:  # no accepted context for its encoding, aborted, ...
                code, status = -1, Dataset()
                status.ErrorComment = str(exc)[:64]
            summary.remaining = len(records) - i
            if code == SUCCESS:
                summary.completed += 1
            elif code >> 12 == 0xB:
                summary.warnings += 1
            else:
                summary.failed += 1
                comment = status.get("ErrorComment", "")
                summary.failures.append(f"{rec.sop_uid}: 0x{code & 0xFFFF:04X} {comment}")
                if len(summary.failed_instances) < MAX_LISTED_FAILURES:
                    summary.failed_instances.append((rec.sop_uid, code & 0xFFFF))
            if on_progress:
                on_progress(summary)
            if not assoc.is_established:
                summary.aborted = summary.remaining > 0
                break
    finally:
        _release(assoc)
    return summary


def _records(archive: Archive, tenant: int, refs: Sequence[Ref]) -> list[InstanceRecord]:
    """The stored instances of ``refs``, each once, in order."""
    seen: dict[str, InstanceRecord] = {}
    for ref in refs:
        for rec in stored.find_instances(archive, tenant, ref.study, ref.series, ref.instance):
            seen.setdefault(rec.sop_uid, rec)
    return list(seen.values())


def query(
    archive: Archive,
    tenant: int,
    ae_title: str,
    identifier: Dataset,
    model: str = "study",
    *,
    limit: int | None = None,
    on_match: Callable[[int], None] | None = None,
) -> list[Dataset]:
    """C-FIND ``identifier`` at a registered AE; the pending responses' identifiers.

    Args:
        archive: This archive (our AE title, timeouts).
        tenant: The tenant whose registry names the AE.
        ae_title: The remote AE.
        identifier: The C-FIND identifier (PS3.4 C.4.1.1.3).
        model: ``study`` (Study Root) or ``patient`` (Patient Root) Information Model.
        limit: Keep at most this many matches; past it, C-CANCEL the query (PS3.7 §9.3.2.3).
        on_match: Called with the number of matches so far.

    Raises:
        InvalidInput: unknown model.
        NotFound: the AE is not registered.
        Unavailable: no association, the association ended early, or the peer is out of
            resources (A700).
        RemoteFailure: any other failure status (e.g. A900 identifier does not match).
    """
    from pynetdicom import build_context

    if model not in FIND:
        raise InvalidInput("the model is 'patient' or 'study'")
    remote = _remote(archive, tenant, ae_title)
    assoc = _associate(archive, remote, [build_context(FIND[model])])
    out: list[Dataset] = []
    cancelled = False
    try:
        for status, found in assoc.send_c_find(identifier, FIND[model], msg_id=1):
            code = int(status.Status) if status is not None and "Status" in status else -1
            if code in _PENDING:
                if found is not None and not cancelled:
                    out.append(found)
                    if on_match:
                        on_match(len(out))
                if limit is not None and len(out) >= limit and not cancelled:
                    assoc.send_c_cancel(1, query_model=FIND[model])
                    cancelled = True
            elif code == -1:
                raise Unavailable(f"C-FIND at {remote.ae_title}: no response (association ended)")
            elif code not in (SUCCESS, _CANCEL):
                raise _failure("C-FIND", remote, code, status)
    finally:
        _release(assoc)
    return out


def _failure(op: str, remote: peers.RemoteAE, code: int, status: Dataset) -> DicomhubError:
    """The error for a failure status of the peer (no Error Comment: it may quote values)."""
    text = f"{op} at {remote.ae_title} failed with status 0x{code & 0xFFFF:04X}"
    return Unavailable(text) if is_out_of_resources(code) else RemoteFailure(text)


def retrieve_get(
    archive: Archive,
    tenant: int,
    ae_title: str,
    identifier: Dataset,
    sop_classes: list[str],
    model: str = "study",
    on_progress: Progress | None = None,
) -> Summary:
    """C-GET from a registered AE; each instance received goes through ingest, as C-STORE.

    ``sop_classes`` are proposed with the SCP role (PS3.4 C.4.3, PS3.7 D.3.3.4), one context
    per transfer syntax of :data:`GET_SYNTAXES`.
    """
    from pynetdicom import build_context, build_role, evt

    remote = _remote(archive, tenant, ae_title)
    classes = list(dict.fromkeys(sop_classes))[: 127 // len(GET_SYNTAXES)]
    contexts = [build_context(GET[model])]
    contexts += [build_context(c, [ts]) for c in classes for ts in GET_SYNTAXES]
    roles = [build_role(c, scp_role=True) for c in classes]
    summary = Summary()

    def on_store(event: Any) -> int:
        settings = archive.settings
        spool = Spool(settings.tmp_dir, settings.max_instance_bytes)
        try:
            spool.write(event.encoded_dataset(include_meta=True))
            ingest.store(archive, tenant, spool, spool.finish())
        except DicomhubError as exc:
            summary.failures.append(exc.reason)
            return 0xC000
        return SUCCESS

    assoc = _associate(
        archive, remote, contexts, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        for status, _ in assoc.send_c_get(identifier, GET[model]):
            _count(summary, status, on_progress)
    finally:
        _release(assoc)
    return summary


def retrieve_move(
    archive: Archive,
    tenant: int,
    ae_title: str,
    identifier: Dataset,
    model: str = "study",
    on_progress: Progress | None = None,
) -> Summary:
    """C-MOVE from a registered AE to this archive's AE title (``dicomhub serve`` receives)."""
    from pynetdicom import build_context

    remote = _remote(archive, tenant, ae_title)
    assoc = _associate(archive, remote, [build_context(MOVE[model])])
    summary = Summary()
    try:
        for status, _ in assoc.send_c_move(identifier, archive.settings.ae_title, MOVE[model]):
            _count(summary, status, on_progress)
    finally:
        _release(assoc)
    return summary


def retrieve(
    archive: Archive,
    tenant: int,
    ae_title: str,
    refs: Sequence[Ref],
    *,
    method: str = "get",
    model: str = "study",
    on_progress: Progress | None = None,
) -> Summary:
    """C-GET or C-MOVE each of ``refs`` from a registered AE into this archive.

    For C-GET the SOP classes are learnt first by a C-FIND at IMAGE level (a C-GET association
    needs a storage context, SCP role, per class it will receive); a reference the peer has no
    instance of is :class:`~dicomhub.errors.NotFound`. C-MOVE names this archive's AE title as
    the destination: the peer must know it, and ``dicomhub serve`` must be receiving.

    Raises:
        InvalidInput: unknown method or model.
        NotFound: the AE is not registered, or (C-GET) the peer has nothing for a reference.
        Unavailable: no association, or the peer is out of resources.
        RemoteFailure: the C-FIND probe got a failure status.
    """
    if method not in METHODS:
        raise InvalidInput("the method is 'get' or 'move'")
    if model not in MODELS:
        raise InvalidInput("the model is 'patient' or 'study'")
    total = Summary()
    for ref in refs:
        base = Summary(
            completed=total.completed,
            failed=total.failed,
            warnings=total.warnings,
        )

        def progress(s: Summary, base: Summary = base) -> None:
            if on_progress:
                view = Summary(
                    completed=base.completed + s.completed,
                    failed=base.failed + s.failed,
                    warnings=base.warnings + s.warnings,
                    remaining=s.remaining,
                )
                on_progress(view)

        identifier = identifier_from_keys(ref.level, ref.keys())
        if method == "move":
            one = retrieve_move(archive, tenant, ae_title, identifier, model, progress)
        else:
            probe = identifier_from_keys("IMAGE", [*ref.keys(), "SOPClassUID"])
            found = query(archive, tenant, ae_title, probe, model)
            classes = [str(d.SOPClassUID) for d in found if "SOPClassUID" in d]
            if not classes:
                raise NotFound(
                    f"{ae_title.strip()} has no instance of {ref.level.lower()} "
                    f"{ref.instance or ref.series or ref.study}"
                )
            one = retrieve_get(archive, tenant, ae_title, identifier, classes, model, progress)
        total.add(one)
        if one.aborted or is_out_of_resources(one.status):
            break
    return total


def _count(summary: Summary, status: Dataset | None, on_progress: Progress | None) -> None:
    """Fold one C-MOVE/C-GET response's sub-operation counters into ``summary``."""
    if status is None or "Status" not in status:
        summary.failures.append("no response (association aborted or timed out)")
        summary.failed = max(summary.failed, 1)
        summary.aborted = True
        return
    done = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
    failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
    warned = int(status.get("NumberOfWarningSuboperations", 0) or 0)
    left = int(status.get("NumberOfRemainingSuboperations", 0) or 0)
    summary.completed, summary.failed, summary.warnings = done, failed, warned
    summary.remaining = left
    code = int(status.Status)
    if code not in _PENDING:
        summary.status = code
    if code not in (SUCCESS, *_PENDING) and code >> 12 != 0xB:
        summary.failures.append(f"0x{code:04X} {status.get('ErrorComment', '')}".strip())
        summary.failed = max(summary.failed, 1)
    if on_progress:
        on_progress(summary)
