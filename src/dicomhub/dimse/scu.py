"""The DIMSE client side (SCU): send, query and retrieve against registered remote AEs.

* :func:`send` — C-STORE stored instances, as stored (PS3.4 B.2), to a registered AE.
* :func:`query` — C-FIND a remote AE (PS3.4 C.4.1), Patient or Study Root.
* :func:`retrieve` — C-GET into this archive through the ingest service (PS3.4 C.4.3), or
  C-MOVE with this archive's AE title as the destination (PS3.4 C.4.2; the running
  ``dicomhub serve`` receives the instances).

Each reports progress through a callback and returns a summary. (Exposing them in the JSON
API as durable, retried jobs is a later step.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom.dataset import Dataset

from dicomhub.dimse.status import PENDING, SUCCESS
from dicomhub.dimse.transfer import StoredRef, configure, contexts_for
from dicomhub.errors import DicomhubError, InvalidInput, NotFound, Unavailable
from dicomhub.services import ingest, peers, retrieve
from dicomhub.services.archive import Archive
from dicomhub.services.spool import Spool

Progress = Callable[[int, int], None]  # (done, total)

FIND: Final = {
    "patient": "1.2.840.10008.5.1.4.1.2.1.1",
    "study": "1.2.840.10008.5.1.4.1.2.2.1",
}
MOVE: Final = {"patient": "1.2.840.10008.5.1.4.1.2.1.2", "study": "1.2.840.10008.5.1.4.1.2.2.2"}
GET: Final = {"patient": "1.2.840.10008.5.1.4.1.2.1.3", "study": "1.2.840.10008.5.1.4.1.2.2.3"}
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


@dataclass
class Summary:
    """What an operation did."""

    completed: int = 0
    failed: int = 0
    warnings: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing failed."""
        return self.failed == 0


def _remote(archive: Archive, tenant: int, ae_title: str) -> peers.RemoteAE:
    ae = peers.get(archive, tenant, ae_title)
    if ae is None:
        raise NotFound(f"AE {ae_title!r} is not registered (dicomhub ae add)")
    return ae


def _associate(archive: Archive, remote: peers.RemoteAE, contexts: list[Any], **kw: Any) -> Any:
    from pynetdicom import AE

    configure()
    s = archive.settings
    ae = AE(ae_title=s.ae_title)
    ae.acse_timeout = s.dimse_acse_timeout_s
    ae.dimse_timeout = s.dimse_timeout_s
    ae.network_timeout = s.dimse_idle_timeout_s
    assoc = ae.associate(
        remote.host, remote.port, contexts=contexts, ae_title=remote.ae_title, **kw
    )
    if not assoc.is_established:
        raise Unavailable(f"association with {remote.ae_title} failed (rejected or unreachable)")
    return assoc


def send(
    archive: Archive,
    tenant: int,
    ae_title: str,
    study: str,
    series: str | None = None,
    sop: str | None = None,
    on_progress: Progress | None = None,
) -> Summary:
    """C-STORE a stored study, series or instance to a registered AE, byte for byte."""
    remote = _remote(archive, tenant, ae_title)
    records = retrieve.find_instances(archive, tenant, study, series, sop)
    assoc = _associate(archive, remote, contexts_for(records))
    summary = Summary()
    try:
        for i, rec in enumerate(records, start=1):
            try:
                status = assoc.send_c_store(StoredRef(archive, rec))
                code = int(status.Status) if "Status" in status else -1
            except Exception as exc:  # no accepted context for its encoding, aborted, ...
                code, status = -1, Dataset()
                status.ErrorComment = str(exc)[:64]
            if code == SUCCESS:
                summary.completed += 1
            elif code >> 12 == 0xB:
                summary.warnings += 1
            else:
                summary.failed += 1
                comment = status.get("ErrorComment", "")
                summary.failures.append(f"{rec.sop_uid}: 0x{code & 0xFFFF:04X} {comment}")
            if on_progress:
                on_progress(i, len(records))
            if not assoc.is_established:
                summary.failed += len(records) - i
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return summary


def query(
    archive: Archive, tenant: int, ae_title: str, identifier: Dataset, model: str = "study"
) -> list[Dataset]:
    """C-FIND ``identifier`` at a registered AE; the pending responses' identifiers."""
    from pynetdicom import build_context

    if model not in FIND:
        raise InvalidInput("the model is 'patient' or 'study'")
    remote = _remote(archive, tenant, ae_title)
    assoc = _associate(archive, remote, [build_context(FIND[model])])
    out: list[Dataset] = []
    try:
        for status, found in assoc.send_c_find(identifier, FIND[model]):
            code = int(status.Status) if status is not None and "Status" in status else -1
            if code in (PENDING, 0xFF01) and found is not None:
                out.append(found)
            elif code not in (SUCCESS, PENDING, 0xFF01):
                comment = status.get("ErrorComment", "") if status is not None else ""
                raise Unavailable(f"C-FIND failed: 0x{code & 0xFFFF:04X} {comment}".strip())
    finally:
        if assoc.is_established:
            assoc.release()
    return out


def retrieve_get(
    archive: Archive,
    tenant: int,
    ae_title: str,
    identifier: Dataset,
    sop_classes: list[str],
    model: str = "study",
    on_progress: Progress | None = None,
) -> Summary:
    """C-GET from a registered AE; each instance received goes through ingest, as C-STORE."""
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
        if assoc.is_established:
            assoc.release()
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
        if assoc.is_established:
            assoc.release()
    return summary


def _count(summary: Summary, status: Dataset | None, on_progress: Progress | None) -> None:
    """Fold one C-MOVE/C-GET response's sub-operation counters into ``summary``."""
    if status is None or "Status" not in status:
        summary.failures.append("no response (association aborted or timed out)")
        summary.failed = max(summary.failed, 1)
        return
    done = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
    failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
    warned = int(status.get("NumberOfWarningSuboperations", 0) or 0)
    left = int(status.get("NumberOfRemainingSuboperations", 0) or 0)
    summary.completed, summary.failed, summary.warnings = done, failed, warned
    code = int(status.Status)
    if code not in (SUCCESS, PENDING) and code >> 12 != 0xB:
        summary.failures.append(f"0x{code:04X} {status.get('ErrorComment', '')}".strip())
        summary.failed = max(summary.failed, 1)
    if on_progress:
        on_progress(done + failed + warned, done + failed + warned + left)
