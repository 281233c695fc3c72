"""SCU operations as durable jobs: ``POST /api/aes/{title}/send|query|retrieve`` and ``/api/jobs``.

Real peers only: DCMTK's ``storescp`` receives sends, a second dicomhub (its own SQLite index,
its own DIMSE server) answers queries and retrievals. The worker is driven step by step
(``run_one``/``drain``), as the in-process worker thread of ``serve``, and as a separate
``dicomhub worker`` process.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from starlette.testclient import TestClient

from dicomhub.config import Settings
from dicomhub.dimse.server import DimseServer
from dicomhub.jobs.worker import drain, run_one
from dicomhub.services import peers
from dicomhub.services.archive import Archive
from dicomhub.storage.index import jobs
from dicomhub.web.app import create_app
from tests.conftest import free_port
from tests.helpers import ingest_file, multipart_parts, run_dicomhub
from tests.integration.dimse_support import AET, Scp, dataset_bytes, dcmtk, dcmtk_tool, scp
from tests.samples import CT_SMALL, SAMPLES, STUDY_133

__all__ = ["scp"]

STUDY = str(pydicom.dcmread(SAMPLES / STUDY_133[0], stop_before_pixels=True).StudyInstanceUID)
CT_STUDY = str(pydicom.dcmread(SAMPLES / CT_SMALL, stop_before_pixels=True).StudyInstanceUID)
ORIGINALS = {dataset_bytes(SAMPLES / f) for f in STUDY_133}
#: Small retry settings, so that backoff is observable in a test's time.
FAST = {"job_retry_base_s": 0.3, "job_retry_max_s": 0.6, "job_max_attempts": 20}


def tune(archive: Archive, **changes: Any) -> Settings:
    """Change the archive's settings (the app and the worker read ``archive.settings``)."""
    archive.settings = archive.settings.model_copy(update=changes)
    return archive.settings


@pytest.fixture
def api(archive: Archive) -> Iterator[TestClient]:
    """The app over the test archive, without its worker thread (tests run the worker)."""
    tune(archive, run_workers=False, **FAST)
    with TestClient(create_app(archive.settings, archive), raise_server_exceptions=False) as c:
        yield c


@dataclass
class StoreScp:
    """A DCMTK ``storescp`` writing what it receives into a folder."""

    port: int
    out: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers C-ECHO."""
        self.proc = subprocess.Popen(
            [
                dcmtk_tool("storescp"),
                "-aet",
                "STORESCP",
                "+B",
                "-od",
                str(self.out),
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while dcmtk(["echoscu", "-aec", "STORESCP", "127.0.0.1", str(self.port)]).returncode:
            assert time.monotonic() < deadline, "storescp did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop it."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def received(self) -> set[bytes]:
        """The data sets of the files received (the File Meta differs by design)."""
        return {dataset_bytes(p) for p in self.out.iterdir()}


@pytest.fixture
def storescp(tmp_path: Path, archive: Archive) -> Iterator[StoreScp]:
    """A storescp (not started) registered in the test archive as ``STORESCP``."""
    out = tmp_path / "received"
    out.mkdir()
    s = StoreScp(free_port(), out)
    peers.add(archive, peers.RemoteAE(1, "STORESCP", "127.0.0.1", s.port))
    yield s
    s.stop()


@dataclass
class Hub:
    """A second dicomhub (``HUB2``) with its DIMSE server, known to the test archive."""

    archive: Archive
    server: DimseServer


@pytest.fixture
def hub2(tmp_path: Path, archive: Archive) -> Iterator[Hub]:
    """HUB2 holding STUDY_133 and CT_small, knowing our AE title at 127.0.0.1."""
    d = tmp_path / "hub2"
    settings = Settings(
        data_dir=d,
        index=f"sqlite:///{d / 'index.db'}",
        blobs=f"file://{d / 'blobs'}",
        run_workers=False,
        dimse_port=free_port(),
        ae_title="HUB2",
    )
    other = Archive.open(settings)
    for f in [*STUDY_133, CT_SMALL]:
        ingest_file(other, 1, SAMPLES / f)
    server = DimseServer(other, settings)
    server.start()
    our_port = archive.settings.dimse_port or 1
    peers.add(other, peers.RemoteAE(1, AET, "127.0.0.1", our_port))
    peers.add(archive, peers.RemoteAE(1, "HUB2", "127.0.0.1", server.port))
    yield Hub(other, server)
    server.stop()
    other.close()


def submit(api: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST an SCU operation: 202 with the job, whose URL is the Location."""
    resp = api.post(path, json=body)
    assert resp.status_code == 202, resp.text
    job: dict[str, Any] = resp.json()
    assert resp.headers["location"].endswith(f"/api/jobs/{job['id']}")
    assert job["state"] == "queued" and job["attempts"] == 0
    return job


def job_of(api: TestClient, job_id: int) -> dict[str, Any]:
    """GET /api/jobs/{id}."""
    resp = api.get(f"/api/jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``check`` until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ingest_study(archive: Archive) -> None:
    for f in STUDY_133:
        ingest_file(archive, 1, SAMPLES / f)


def test_send_job_to_storescp(api: TestClient, archive: Archive, storescp: StoreScp) -> None:
    ingest_study(archive)
    storescp.start()
    job = submit(api, "/api/aes/STORESCP/send", {"study": STUDY})
    assert job["operation"] == "send" and job["ae_title"] == "STORESCP"
    assert job["request"] == {"items": [{"study": STUDY}]}
    assert drain(archive) == 1
    done = job_of(api, job["id"])
    assert done["state"] == "succeeded", done
    assert done["attempts"] == 1 and done["last_error"] is None
    assert done["progress"] == {"completed": 4, "failed": 0, "warning": 0, "remaining": 0}
    assert done["result"]["completed"] == 4 and done["result"]["failed_instances"] == []
    assert done["finished_at"] and done["next_attempt_at"] is None
    assert storescp.received() == ORIGINALS

    # several references in one job: each instance is sent once
    first = pydicom.dcmread(SAMPLES / STUDY_133[1], stop_before_pixels=True)
    items = [
        {"study": STUDY, "series": str(first.SeriesInstanceUID)},
        {
            "study": STUDY,
            "series": str(first.SeriesInstanceUID),
            "instance": str(first.SOPInstanceUID),
        },
    ]
    job = submit(api, "/api/aes/STORESCP/send", {"items": items})
    assert drain(archive) == 1
    done = job_of(api, job["id"])
    assert done["state"] == "succeeded" and done["result"]["completed"] == 3, done


def test_query_job_returns_matches(api: TestClient, archive: Archive, hub2: Hub) -> None:
    keys = {"StudyInstanceUID": "", "PatientID": None, "00080061": "", "StudyDate": ""}
    job = submit(api, "/api/aes/HUB2/query", {"level": "STUDY", "keys": keys})
    limited = submit(api, "/api/aes/HUB2/query", {"level": "SERIES", "keys": {}, "limit": 1})
    by_key = submit(
        api,
        "/api/aes/HUB2/query",
        {
            "level": "SERIES",
            "model": "patient",
            "keys": {
                "StudyInstanceUID": STUDY,
                "PatientID": pydicom.dcmread(SAMPLES / STUDY_133[0]).PatientID,
                "Modality": "",
            },
        },
    )
    assert drain(archive) == 3

    done = job_of(api, job["id"])
    assert done["state"] == "succeeded", done
    result = done["result"]
    assert result["count"] == 2 and result["truncated"] is False
    uids = {m["0020000D"]["Value"][0] for m in result["matches"]}
    assert uids == {STUDY, CT_STUDY}
    for match in result["matches"]:  # DICOM JSON (PS3.18 F.2) with the requested keys
        assert match["00080052"] == {"vr": "CS", "Value": ["STUDY"]}
        assert {"00100020", "00080061", "00080020"} <= set(match)
    assert done["progress"]["completed"] == 2

    cut = job_of(api, limited["id"])
    assert cut["state"] == "succeeded", cut
    assert cut["result"]["count"] == 1 and cut["result"]["truncated"] is True

    series = job_of(api, by_key["id"])["result"]
    assert series["count"] == 2  # STUDY_133 has two series
    assert {m["00080060"]["Value"][0] for m in series["matches"]} == {"MR"}


def test_retrieve_jobs_get_and_move(api: TestClient, archive: Archive, scp: Scp, hub2: Hub) -> None:
    # HUB2 sends C-MOVE sub-operations to our DIMSE server (the scp fixture)
    peers.remove(hub2.archive, 1, AET)
    peers.add(hub2.archive, peers.RemoteAE(1, AET, "127.0.0.1", scp.port))
    got = submit(api, "/api/aes/HUB2/retrieve", {"study": STUDY})
    assert got["request"] == {"items": [{"study": STUDY}], "method": "get", "model": "study"}
    moved = submit(api, "/api/aes/HUB2/retrieve", {"study": CT_STUDY, "method": "move"})
    assert drain(archive) == 2

    done = job_of(api, got["id"])
    assert done["state"] == "succeeded", done
    assert done["progress"]["completed"] == 4 and done["result"]["failed"] == 0
    resp = api.get(
        f"/dicomweb/studies/{STUDY}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert resp.status_code == 200
    assert {dataset_bytes(body) for _, body in multipart_parts(resp)} == ORIGINALS

    done = job_of(api, moved["id"])
    assert done["state"] == "succeeded", done
    assert done["progress"]["completed"] == 1
    resp = api.get(
        f"/dicomweb/studies/{CT_STUDY}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert resp.status_code == 200
    assert [dataset_bytes(b) for _, b in multipart_parts(resp)] == [
        dataset_bytes(SAMPLES / CT_SMALL)
    ]


def test_retry_with_backoff_until_storescp_listens(
    api: TestClient, archive: Archive, storescp: StoreScp
) -> None:
    ingest_study(archive)
    # A base delay well above the time one attempt takes on a loaded CI machine, so "not due
    # before its backoff" is checked inside the backoff, not after it.
    tune(archive, job_retry_base_s=1.5, job_retry_max_s=3.0)
    job = submit(api, "/api/aes/STORESCP/send", {"study": STUDY})

    assert run_one(archive)  # nothing listens: connection refused, a transient failure
    first = job_of(api, job["id"])
    assert first["state"] == "retrying" and first["attempts"] == 1, first
    assert "connection refused" in first["last_error"]
    assert STUDY not in first["last_error"]
    assert not run_one(archive)  # not due before its backoff
    with archive.db.read() as conn:
        row = jobs.get(conn, 1, job["id"])
    assert row is not None and row.updated_at is not None
    assert row.run_at - row.updated_at == pytest.approx(1.5, abs=0.05)  # base delay

    wait_for(lambda: run_one(archive))  # attempt 2, as soon as due: fails again
    with archive.db.read() as conn:
        row = jobs.get(conn, 1, job["id"])
    assert row is not None and row.updated_at is not None
    assert row.state == "retrying" and row.attempts == 2
    assert row.run_at - row.updated_at == pytest.approx(3.0, abs=0.05)  # doubled

    storescp.start()
    wait_for(lambda: run_one(archive))
    done = job_of(api, job["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 3, done
    assert done["last_error"] is None
    assert storescp.received() == ORIGINALS


def test_in_process_worker_retries_until_the_peer_is_up(
    archive: Archive, storescp: StoreScp
) -> None:
    """``serve``'s own worker thread runs the jobs (and their retries)."""
    ingest_study(archive)
    tune(archive, run_workers=True, worker_poll_s=0.05, **FAST)
    with TestClient(create_app(archive.settings, archive)) as api:
        job = submit(api, "/api/aes/STORESCP/send", {"study": STUDY})
        wait_for(lambda: job_of(api, job["id"])["attempts"] >= 2)
        assert job_of(api, job["id"])["state"] in ("retrying", "running")
        storescp.start()
        wait_for(lambda: job_of(api, job["id"])["state"] == "succeeded")
    assert storescp.received() == ORIGINALS


def test_attempts_are_bounded(api: TestClient, archive: Archive, storescp: StoreScp) -> None:
    ingest_study(archive)
    tune(archive, job_max_attempts=2, job_retry_base_s=0.0)
    job = submit(
        api,
        "/api/aes/STORESCP/send",
        {"study": STUDY},
    )
    assert drain(archive) == 2  # attempt 1 (retry at once), attempt 2: the last
    done = job_of(api, job["id"])
    assert done["state"] == "failed" and done["attempts"] == 2, done
    assert "connection refused" in done["last_error"]
    assert not run_one(archive)


def test_permanent_errors_fail_without_retry(
    api: TestClient, archive: Archive, storescp: StoreScp, hub2: Hub
) -> None:
    ingest_file(archive, 1, SAMPLES / CT_SMALL)
    storescp.start()
    # the AE is removed after the job was accepted: unknown AE
    gone = submit(api, "/api/aes/STORESCP/send", {"study": CT_STUDY})
    assert api.delete("/api/aes/STORESCP").status_code == 204
    # the study is deleted after the job was accepted: nothing to send
    ingest_study(archive)
    peers.add(archive, peers.RemoteAE(1, "STORESCP2", "127.0.0.1", storescp.port))
    deleted = submit(api, "/api/aes/STORESCP2/send", {"study": STUDY})
    assert api.delete(f"/dicomweb/studies/{STUDY}").status_code == 204
    # the peer answers a failure status: PATIENT level in the Study Root model is A900
    refused = submit(api, "/api/aes/HUB2/query", {"level": "PATIENT", "keys": {"PatientID": ""}})
    # the peer has no such study (C-GET needs its SOP classes)
    missing = submit(api, "/api/aes/HUB2/retrieve", {"study": "1.2.3.4.5"})
    assert drain(archive) == 5  # each ran once (and a blob removal); none is due again

    done = job_of(api, gone["id"])
    assert done["state"] == "failed" and done["attempts"] == 1, done
    assert "not registered" in done["last_error"]
    done = job_of(api, deleted["id"])
    assert done["state"] == "failed" and done["attempts"] == 1, done
    assert "no such resource" in done["last_error"]
    done = job_of(api, refused["id"])
    assert done["state"] == "failed" and done["attempts"] == 1, done
    assert "0xA900" in done["last_error"]
    done = job_of(api, missing["id"])
    assert done["state"] == "failed" and done["attempts"] == 1, done
    assert "has no instance" in done["last_error"]
    assert storescp.received() == set()


def test_job_survives_restart_and_a_dead_workers_claim(
    archive: Archive, storescp: StoreScp
) -> None:
    ingest_study(archive)
    tune(archive, run_workers=False)
    with TestClient(create_app(archive.settings, archive)) as api:
        queued = [submit(api, "/api/aes/STORESCP/send", {"study": STUDY})["id"] for _ in range(2)]
    archive.close()  # the serving process is gone, its jobs queued

    storescp.start()
    # a new process, `dicomhub worker --once`, finds and runs them
    proc = run_dicomhub("worker", "--once", "--data-dir", str(archive.settings.data_dir))
    assert proc.returncode == 0, proc.stderr
    reopened = Archive.open(archive.settings)
    try:
        with reopened.db.read() as conn:
            rows = [jobs.get(conn, 1, i) for i in queued]
        assert [(r.state, r.attempts) for r in rows if r] == [("succeeded", 1)] * 2
        assert storescp.received() == ORIGINALS

        # a worker claims a job and dies without a word: state running, lease held
        with TestClient(create_app(reopened.settings, reopened)) as api:
            orphan = submit(api, "/api/aes/STORESCP/send", {"study": STUDY})["id"]
            with reopened.db.write() as conn:
                claimed = jobs.claim(conn, lease_s=2.0)
            assert claimed is not None and claimed.id == orphan
            assert job_of(api, orphan)["state"] == "running"
            assert not run_one(reopened)  # its lease is not over
            # once the lease has expired, the job is claimed again and completes
            wait_for(lambda: run_one(reopened), timeout=10)
            done = job_of(api, orphan)
            assert (done["state"], done["attempts"]) == ("succeeded", 2), done
    finally:
        reopened.close()


def test_cancel_and_list(api: TestClient, archive: Archive, storescp: StoreScp) -> None:
    ingest_study(archive)
    ids = [submit(api, "/api/aes/STORESCP/send", {"study": STUDY})["id"] for _ in range(3)]
    resp = api.delete(f"/api/jobs/{ids[0]}")
    assert resp.status_code == 200 and resp.json()["state"] == "cancelled"
    assert api.delete(f"/api/jobs/{ids[0]}").json()["state"] == "cancelled"  # idempotent
    # a running job cannot be cancelled
    with archive.db.write() as conn:
        claimed = jobs.claim(conn)
    assert claimed is not None and claimed.id == ids[1]
    resp = api.delete(f"/api/jobs/{ids[1]}")
    assert resp.status_code == 409 and "running" in resp.json()["error"]

    page = api.get("/api/jobs?limit=2").json()
    assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 0
    assert [j["id"] for j in page["jobs"]] == [ids[2], ids[1]]
    assert "result" not in page["jobs"][0] and page["jobs"][0]["url"].endswith(f"/{ids[2]}")
    assert [j["id"] for j in api.get("/api/jobs?offset=2").json()["jobs"]] == [ids[0]]
    assert [j["id"] for j in api.get("/api/jobs?state=cancelled").json()["jobs"]] == [ids[0]]
    assert [j["id"] for j in api.get("/api/jobs?state=running").json()["jobs"]] == [ids[1]]

    storescp.start()
    assert drain(archive) == 1  # the third; the cancelled one never runs
    assert job_of(api, ids[0])["attempts"] == 0
    assert job_of(api, ids[2])["state"] == "succeeded"
    resp = api.delete(f"/api/jobs/{ids[2]}")
    assert resp.status_code == 409 and "succeeded" in resp.json()["error"]
    # internal jobs (blob removal after a delete) are not the tenant's
    assert api.delete(f"/dicomweb/studies/{STUDY}").status_code == 204
    assert api.get("/api/jobs").json()["total"] == 3
