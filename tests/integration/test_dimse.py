"""The DIMSE gateway driven by real clients: DCMTK tools and pynetdicom.

Each test runs dicomhub's SCP in-process over a fresh archive, on a free port.
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from sqlalchemy import text
from starlette.testclient import TestClient

from dicomhub.dimse.transfer import configure
from dicomhub.services import peers
from dicomhub.services.archive import Archive
from dicomhub.services.delete import delete
from tests.conftest import free_port
from tests.helpers import ingest_file, single_part
from tests.integration.dimse_support import AET, SCU, Scp, dataset_bytes, dcmtk, dcmtk_tool, scp
from tests.samples import CT_SMALL, MANIFEST, SAMPLES, STUDY_133, is_storable

__all__ = ["scp"]

Verification = "1.2.840.10008.1.1"
PatientRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.1.1"
StudyRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.2.1"
StudyRootQueryRetrieveInformationModelMove = "1.2.840.10008.5.1.4.1.2.2.2"
StudyRootQueryRetrieveInformationModelGet = "1.2.840.10008.5.1.4.1.2.2.3"
# the fixture

VALID = [e for e in MANIFEST if is_storable(e)]
BLOB_KEY = text("SELECT blob_key FROM instance WHERE sop_uid = :sop")

#: getscu's flag to accept each transfer syntax for its incoming C-STORE sub-operations.
GETSCU_PREFER = {
    "1.2.840.10008.1.2": "+xi",
    "1.2.840.10008.1.2.1": "+xe",
    "1.2.840.10008.1.2.2": "+xb",
    "1.2.840.10008.1.2.1.99": "+xd",
    "1.2.840.10008.1.2.4.50": "+xy",
    "1.2.840.10008.1.2.4.51": "+xx",
    "1.2.840.10008.1.2.4.70": "+xs",
    "1.2.840.10008.1.2.4.80": "+xt",
    "1.2.840.10008.1.2.4.81": "+xu",
    "1.2.840.10008.1.2.4.90": "+xv",
    "1.2.840.10008.1.2.4.91": "+xw",
    "1.2.840.10008.1.2.5": "+xr",
}


#: Samples whose SOP Class or transfer syntax DCMTK's getscu/storescp do not negotiate (their
#: built-in storage class lists predate them, and storescp +xa has no deflate); pynetdicom's
#: C-GET still checks these byte for byte.
DCMTK_CANNOT_RECEIVE = {
    "files/pydicom-data/liver_deflate.dcm",
    "files/pydicom-data/parametric_map_float.dcm",
    "files/pydicom-data/parametric_map_double_float.dcm",
    "files/highdicom/seg_image_sm_control_labelmap_palette_color.dcm",
    "files/highdicom/sm_annotations.dcm",
}


@pytest.fixture(autouse=True)
def _pynetdicom() -> None:
    configure()  # TCP_NODELAY, raw sends (as the server and the CLI use pynetdicom)


@pytest.fixture
def storescp(tmp_path: Path, scp: Scp) -> Iterator[tuple[str, Path]]:
    """DCMTK ``storescp`` as a registered C-MOVE destination ``STORESCP``."""
    out = tmp_path / "storescp"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [dcmtk_tool("storescp"), "-aet", "STORESCP", "+xa", "+B", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peers.add(scp.archive, peers.RemoteAE(1, "STORESCP", "127.0.0.1", port))
    deadline = time.monotonic() + 10
    while dcmtk(["echoscu", "-aec", "STORESCP", "127.0.0.1", str(port)]).returncode != 0:
        assert time.monotonic() < deadline, "storescp did not start"
        time.sleep(0.05)
    yield "STORESCP", out
    proc.terminate()
    proc.wait(timeout=10)


def associate(scp: Scp, *contexts: Any, aet: str = SCU, **kwargs: Any) -> Any:
    ae = AE(ae_title=aet)
    for cx in contexts or (Verification,):
        ae.add_requested_context(cx)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET, **kwargs)
    return assoc


def count_instances(archive: Archive) -> int:
    with archive.db.read() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM instance").scalar_one())


# ---------------------------------------------------------------------------------------------
# association policy


def test_echoscu(scp: Scp) -> None:
    res = scp.dcmtk("echoscu")
    assert res.returncode == 0, res.stderr


def test_unknown_ae_is_rejected(scp: Scp) -> None:
    res = scp.dcmtk("echoscu", aet="STRANGER")
    assert res.returncode != 0
    assert "Calling AE Title Not Recognized" in res.stdout + res.stderr
    assoc = associate(scp, aet="STRANGER")
    assert assoc.is_rejected
    assert (assoc.acceptor.primitive.result, assoc.acceptor.primitive.diagnostic) == (1, 3)


def test_registered_ae_from_wrong_host_is_rejected(scp: Scp) -> None:
    peers.add(scp.archive, peers.RemoteAE(1, "FARAWAY", "10.11.12.13", 104))
    assert scp.dcmtk("echoscu", aet="FARAWAY").returncode != 0


def test_open_ingest_stores_from_unknown_ae_but_nothing_else(scp: Scp) -> None:
    scp.server.gateway.settings = scp.server.settings.model_copy(update={"dimse_open_ingest": True})
    res = scp.dcmtk("storescu", aet="MODALITY", files=(str(SAMPLES / CT_SMALL),))
    assert res.returncode == 0, res.stdout + res.stderr
    assert count_instances(scp.archive) == 1
    assoc = associate(scp, StudyRootQueryRetrieveInformationModelFind, aet="MODALITY")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    rsp = list(assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind))
    assoc.release()
    assert rsp[-1][0].Status == 0x0124 and rsp[-1][0].ErrorComment


def test_called_ae_title_must_be_ours(scp: Scp) -> None:
    res = dcmtk(["echoscu", "-aet", SCU, "-aec", "SOMEONE", "127.0.0.1", str(scp.port)])
    assert res.returncode != 0


# ---------------------------------------------------------------------------------------------
# C-STORE


def test_pynetdicom_store_keeps_every_sample_byte_identical(scp: Scp) -> None:
    failures: list[str] = []
    for entry in VALID:
        path = SAMPLES / entry["file"]
        meta = pydicom.dcmread(path, stop_before_pixels=True)
        ae = AE(ae_title=SCU)
        ae.add_requested_context(meta.SOPClassUID, [meta.file_meta.TransferSyntaxUID])
        assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET)
        assert assoc.is_established
        status = assoc.send_c_store(path)
        assoc.release()
        if status.Status != 0:
            failures.append(f"{entry['file']}: 0x{status.Status:04X} {status.get('ErrorComment')}")
            continue
        if dataset_bytes(stored_bytes(scp, str(meta.SOPInstanceUID))) != dataset_bytes(path):
            failures.append(f"{entry['file']}: stored data set differs")
        delete(scp.archive, 1, meta.StudyInstanceUID)
    assert not failures, "\n".join(failures[:40])


def malformed_datasets() -> list[tuple[str, Dataset]]:
    base = pydicom.dcmread(SAMPLES / CT_SMALL)
    bad_uid = base.copy()
    bad_uid.StudyInstanceUID = "1.2.abc"
    no_study = base.copy()
    del no_study.StudyInstanceUID
    return [("bad StudyInstanceUID", bad_uid), ("no StudyInstanceUID", no_study)]


@pytest.mark.parametrize("case", [0, 1], ids=["bad-uid", "missing-study-uid"])
def test_malformed_dataset_fails_with_comment_and_stores_nothing(scp: Scp, case: int) -> None:
    _, ds = malformed_datasets()[case]
    assoc = associate(scp, ds.SOPClassUID)
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0xC000
    assert status.ErrorComment
    assert count_instances(scp.archive) == 0
    with scp.archive.db.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM pending_blob").scalar_one() == 0
    assert list(scp.archive.settings.tmp_dir.iterdir()) == []


def test_conflicting_duplicate_fails_with_comment(scp: Scp) -> None:
    ds = pydicom.dcmread(SAMPLES / CT_SMALL)
    assoc = associate(scp, ds.SOPClassUID)
    assert assoc.send_c_store(ds).Status == 0
    assert assoc.send_c_store(ds).Status == 0  # identical: idempotent success
    ds.PatientID = "OTHER"
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0xC001
    assert "already stored" in status.ErrorComment


def test_store_refused_without_the_right(scp: Scp) -> None:
    peers.add(scp.archive, peers.RemoteAE(1, "READER", "127.0.0.1", 104, may_store=False))
    ds = pydicom.dcmread(SAMPLES / CT_SMALL)
    assoc = associate(scp, ds.SOPClassUID, aet="READER")
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0x0124 and status.ErrorComment
    assert count_instances(scp.archive) == 0


# ---------------------------------------------------------------------------------------------
# storescu -> getscu, movescu, WADO-RS, per sample


def retrieve_everything(
    scp: Scp, client: TestClient, move_dest: tuple[str, Path], tmp_path: Path, path: Path
) -> list[str]:
    """Store ``path`` with storescu, fetch it back 3 ways; describe any difference."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    res = scp.dcmtk("storescu", "-R", files=(str(path),))
    dcmtk_reads_it = res.returncode == 0
    if not dcmtk_reads_it:
        # A few samples are beyond DCMTK's reader (e.g. native OW pixel data under a JPEG 2000
        # transfer syntax); pynetdicom sends them raw.
        store_raw(scp, path)
    problems: list[str] = []
    r = client.get(
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert r.status_code == 200, r.text
    wado = single_part(r)
    stored = stored_bytes(scp, sop)
    assert stored == wado, "WADO-RS differs from the stored file"
    stored_ts = pydicom.dcmread(io.BytesIO(stored), stop_before_pixels=True).file_meta
    expected = dataset_bytes(wado)
    keys = ["-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study}"]
    keys += ["-k", f"SeriesInstanceUID={series}", "-k", f"SOPInstanceUID={sop}"]
    flag = GETSCU_PREFER.get(str(stored_ts.TransferSyntaxUID))
    dcmtk_receives = dcmtk_reads_it and str(path.relative_to(SAMPLES)) not in DCMTK_CANNOT_RECEIVE
    if flag is not None and dcmtk_receives:
        out = tmp_path / f"get-{sop}"
        out.mkdir()
        res = scp.dcmtk("getscu", "-S", flag, "+B", "-od", str(out), *keys)
        got = list(out.iterdir())
        if res.returncode != 0 or len(got) != 1:
            problems.append(f"getscu: rc {res.returncode}, {len(got)} files")
        elif dataset_bytes(got[0]) != expected:
            problems.append("getscu: data set differs")
    aem, move_dir = move_dest
    if dcmtk_receives:
        res = scp.dcmtk("movescu", "-S", "-aem", aem, *keys)
        moved = [p for p in move_dir.iterdir() if p.name.endswith(sop)]
        if res.returncode != 0 or len(moved) != 1:
            problems.append(f"movescu: rc {res.returncode}, {len(moved)} files")
        elif dataset_bytes(moved[0]) != expected:
            problems.append("movescu: data set differs")
        for p in moved:
            p.unlink()
    if pynetdicom_get(scp, study, sop, stored_ts.TransferSyntaxUID, ds.SOPClassUID) != expected:
        problems.append("pynetdicom C-GET: data set differs")
    delete(scp.archive, 1, study)
    return problems


def store_raw(scp: Scp, path: Path) -> None:
    """C-STORE ``path`` as it is, with pynetdicom."""
    meta = pydicom.dcmread(path, stop_before_pixels=True)
    ae = AE(ae_title=SCU)
    ae.add_requested_context(meta.SOPClassUID, [meta.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET)
    assert assoc.is_established
    status = assoc.send_c_store(path)
    assoc.release()
    assert status.Status == 0, f"0x{status.Status:04X} {status.get('ErrorComment')}"


def stored_bytes(scp: Scp, sop: str) -> bytes:
    """The stored Part-10 file of ``sop`` (from whichever blob store the backend uses)."""
    with scp.archive.db.read() as conn:
        key = conn.execute(BLOB_KEY, {"sop": sop}).scalar_one()
    return b"".join(scp.archive.blobs.open_range(key))


def pynetdicom_get(scp: Scp, study: str, sop: str, ts: str, sop_class: str) -> bytes | None:
    received: list[bytes] = []

    def on_store(event: Any) -> int:
        received.append(event.encoded_dataset(include_meta=False))
        return 0

    ae = AE(ae_title=SCU)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(sop_class, [ts])
    assoc = ae.associate(
        "127.0.0.1",
        scp.port,
        ae_title=AET,
        ext_neg=[build_role(sop_class, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = study
    identifier.SOPInstanceUID = sop
    statuses = [
        s.Status for s, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
    ]
    assoc.release()
    if statuses[-1] != 0 or len(received) != 1:
        return None
    return received[0]


# Every sample through DCMTK on the embedded backend only: the DIMSE layer does not depend on
# the backend, and the same ingest and retrieval services are covered on PostgreSQL + S3 by the
# STOW-RS sample round trip and by the whole-study C-MOVE test below.
@pytest.mark.slow
@pytest.mark.sqlite_only
@pytest.mark.parametrize("entry", VALID, ids=[e["file"] for e in VALID])
def test_storescu_sample_round_trips_through_get_move_and_wado(
    scp: Scp,
    client: TestClient,
    storescp: tuple[str, Path],
    tmp_path: Path,
    entry: dict[str, Any],
) -> None:
    problems = retrieve_everything(scp, client, storescp, tmp_path, SAMPLES / entry["file"])
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# C-FIND = QIDO-RS


FIND_CASES: list[tuple[str, str, list[str], str]] = [
    # (model flag, level, keys, QIDO resource)
    (
        "-S",
        "STUDY",
        [
            "PatientName",
            "PatientID",
            "StudyInstanceUID",
            "StudyDate",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
            "AccessionNumber",
        ],
        "/studies",
    ),
    ("-S", "STUDY", ["PatientName=*^*", "StudyInstanceUID", "StudyDescription"], "/studies"),
    ("-S", "STUDY", ["ModalitiesInStudy=MR", "StudyInstanceUID"], "/studies"),
    (
        "-S",
        "SERIES",
        [
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "Modality",
            "SeriesNumber",
            "NumberOfSeriesRelatedInstances",
        ],
        "/series",
    ),
    ("-S", "SERIES", ["Modality=CT", "SeriesInstanceUID", "PatientName"], "/series"),
    (
        "-S",
        "IMAGE",
        [
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "SOPClassUID",
            "InstanceNumber",
            "Rows",
        ],
        "/instances",
    ),
    ("-P", "IMAGE", ["PatientID", "SOPInstanceUID", "InstanceNumber=2"], "/instances"),
]


def findscu(scp: Scp, tmp_path: Path, model: str, level: str, keys: list[str]) -> list[Dataset]:
    out = tmp_path / f"find-{time.monotonic_ns()}"
    out.mkdir()
    args = [model, "-X", "-od", str(out), "-k", f"QueryRetrieveLevel={level}"]
    for k in keys:
        args += ["-k", k]
    res = scp.dcmtk("findscu", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def qido(client: TestClient, resource: str, keys: list[str]) -> list[Dataset]:
    params = [tuple(k.split("=", 1)) if "=" in k else ("includefield", k) for k in keys]
    r = client.get(f"/dicomweb{resource}", params=[*params, ("limit", "1000")])
    assert r.status_code in (200, 204), r.text
    return [Dataset.from_json(item) for item in (r.json() if r.status_code == 200 else [])]


def answers(datasets: list[Dataset], keys: list[str]) -> list[tuple[str, ...]]:
    names = [k.split("=", 1)[0] for k in keys]
    return sorted(tuple(str(ds.get(n, "") or "") for n in names) for ds in datasets)


@pytest.fixture
def find_archive(scp: Scp) -> Scp:
    for f in [*STUDY_133, CT_SMALL]:
        ingest_file(scp.archive, 1, SAMPLES / f)
    return scp


@pytest.mark.parametrize("case", FIND_CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(FIND_CASES)])
def test_findscu_answers_equal_qido(
    find_archive: Scp, client: TestClient, tmp_path: Path, case: tuple[str, str, list[str], str]
) -> None:
    model, level, keys, resource = case
    found = findscu(find_archive, tmp_path, model, level, keys)
    assert found, "no C-FIND answers"
    for ds in found:
        assert ds.QueryRetrieveLevel == level
        assert {e.keyword for e in ds} >= {k.split("=")[0] for k in keys}
    assert answers(found, keys) == answers(qido(client, resource, keys), keys)


def test_findscu_patient_level(find_archive: Scp, client: TestClient, tmp_path: Path) -> None:
    keys = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex"]
    found = findscu(find_archive, tmp_path, "-P", "PATIENT", keys)
    expected = sorted(set(answers(qido(client, "/studies", keys), keys)))
    assert answers(found, keys) == expected


def test_cfind_study_root_has_no_patient_level(find_archive: Scp) -> None:
    assoc = associate(find_archive, StudyRootQueryRetrieveInformationModelFind)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    identifier.PatientID = ""
    rsp = list(assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind))
    assoc.release()
    status = rsp[-1][0]
    assert status.Status == 0xA900 and status.ErrorComment


def test_cfind_pynetdicom_patient_root(find_archive: Scp) -> None:
    assoc = associate(find_archive, PatientRootQueryRetrieveInformationModelFind)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = pydicom.dcmread(SAMPLES / CT_SMALL).PatientID
    identifier.StudyInstanceUID = ""
    rsp = list(assoc.send_c_find(identifier, PatientRootQueryRetrieveInformationModelFind))
    assoc.release()
    pending = [ds for status, ds in rsp if status.Status == 0xFF00]
    assert len(pending) == 1 and rsp[-1][0].Status == 0
    assert pending[0].StudyInstanceUID == pydicom.dcmread(SAMPLES / CT_SMALL).StudyInstanceUID


# ---------------------------------------------------------------------------------------------
# C-MOVE policy


def test_move_to_unregistered_destination_fails_with_a801(find_archive: Scp) -> None:
    res = find_archive.dcmtk(
        "movescu",
        "-S",
        "-aem",
        "NOWHERE",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={pydicom.dcmread(SAMPLES / CT_SMALL).StudyInstanceUID}",
    )
    assert "MoveDestinationUnknown" in res.stdout + res.stderr
    assoc = associate(find_archive, StudyRootQueryRetrieveInformationModelMove)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = pydicom.dcmread(SAMPLES / CT_SMALL).StudyInstanceUID
    rsp = list(assoc.send_c_move(identifier, "NOWHERE", StudyRootQueryRetrieveInformationModelMove))
    assoc.release()
    status = rsp[-1][0]
    assert status.Status == 0xA801
    assert "NOWHERE" in status.ErrorComment


def test_move_whole_study_to_storescp(find_archive: Scp, storescp: tuple[str, Path]) -> None:
    aem, out = storescp
    study = pydicom.dcmread(SAMPLES / STUDY_133[0]).StudyInstanceUID
    res = find_archive.dcmtk(
        "movescu",
        "-S",
        "-aem",
        aem,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study}",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(list(out.iterdir())) == len(STUDY_133)


def test_get_without_unique_key_fails_with_comment(find_archive: Scp) -> None:
    assoc = associate(find_archive, StudyRootQueryRetrieveInformationModelGet)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = pydicom.dcmread(SAMPLES / CT_SMALL).StudyInstanceUID
    rsp = list(assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet))
    assoc.release()
    status = rsp[-1][0]
    assert status.Status == 0xA900
    assert "SeriesInstanceUID" in status.ErrorComment
