"""``dicomhub ae``, ``send``, ``query`` and ``retrieve`` against live SCPs (dicomhub, storescp)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicomhub.config import Settings
from dicomhub.dimse.server import DimseServer
from dicomhub.services import peers
from dicomhub.services.archive import Archive
from tests.conftest import free_port
from tests.helpers import ingest_file, run_cli
from tests.integration.dimse_support import AET, Scp, dataset_bytes, dcmtk, dcmtk_tool, scp
from tests.samples import CT_SMALL, SAMPLES, STUDY_133

__all__ = ["scp"]


@pytest.fixture
def other(tmp_path: Path, scp: Scp) -> Iterator[tuple[Path, Archive, DimseServer]]:
    """A second dicomhub (``HUB2``) that knows the first as ``DICOMHUB`` and vice versa."""
    d = tmp_path / "hub2"
    settings = Settings(  # its own SQLite index and folder, whatever the backend under test
        data_dir=d,
        index=f"sqlite:///{d / 'index.db'}",
        blobs=f"file://{d / 'blobs'}",
        run_workers=False,
        dimse_port=free_port(),
        ae_title="HUB2",
    )
    archive = Archive.open(settings)
    server = DimseServer(archive, settings)
    server.start()
    peers.add(archive, peers.RemoteAE(1, AET, "127.0.0.1", scp.port))
    peers.add(scp.archive, peers.RemoteAE(1, "HUB2", "127.0.0.1", server.port))
    yield settings.data_dir, archive, server
    server.stop()
    archive.close()


def test_ae_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "d")
    code, out = run_cli(
        capsys, "ae", "add", "BENCHSCU", "--host", "127.0.0.1", "--port", "104", "--data-dir", d
    )
    assert code == 0 and "added" in out
    assert (
        run_cli(
            capsys, "ae", "add", "BENCHSCU", "--host", "127.0.0.1", "--port", "104", "--data-dir", d
        )[0]
        == 0
    )  # identical: a no-op
    assert (
        run_cli(
            capsys, "ae", "add", "BENCHSCU", "--host", "10.0.0.1", "--port", "104", "--data-dir", d
        )[0]
        == 1
    )
    assert (
        run_cli(
            capsys,
            "ae",
            "add",
            "WAY_TOO_LONG_AE_TITLE",
            "--host",
            "h",
            "--port",
            "1",
            "--data-dir",
            d,
        )[0]
        == 1
    )
    code, out = run_cli(capsys, "ae", "list", "--json", "--data-dir", d)
    assert [a["ae_title"] for a in json.loads(out)] == ["BENCHSCU"]
    assert run_cli(capsys, "ae", "remove", "BENCHSCU", "--data-dir", d)[0] == 0
    assert run_cli(capsys, "ae", "remove", "BENCHSCU", "--data-dir", d)[0] == 1


def test_send_study_to_storescp(
    scp: Scp, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "received"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [dcmtk_tool("storescp"), "-aet", "STORESCP", "+xa", "+B", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while dcmtk(["echoscu", "-aec", "STORESCP", "127.0.0.1", str(port)]).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        peers.add(scp.archive, peers.RemoteAE(1, "STORESCP", "127.0.0.1", port))
        for f in STUDY_133:
            ingest_file(scp.archive, 1, SAMPLES / f)
        study = pydicom.dcmread(SAMPLES / STUDY_133[0]).StudyInstanceUID
        data_dir = str(scp.archive.settings.data_dir)
        code, text = run_cli(capsys, "send", "STORESCP", "--study", study, "--data-dir", data_dir)
        assert code == 0, text
        assert "completed: 4" in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    received = sorted(out.iterdir())
    assert len(received) == len(STUDY_133)
    originals = {dataset_bytes(SAMPLES / f) for f in STUDY_133}
    assert {dataset_bytes(p) for p in received} == originals


def test_query_and_retrieve_between_two_hubs(
    scp: Scp,
    other: tuple[Path, Archive, DimseServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub2_dir, hub2, _ = other
    for f in [*STUDY_133, CT_SMALL]:
        ingest_file(scp.archive, 1, SAMPLES / f)
    study = pydicom.dcmread(SAMPLES / STUDY_133[0]).StudyInstanceUID
    d = str(hub2_dir)
    own = [
        "--index",
        f"sqlite:///{hub2_dir / 'index.db'}",
        "--blobs",
        f"file://{hub2_dir / 'blobs'}",
    ]
    code, out = run_cli(
        capsys,
        "query",
        AET,
        "-k",
        "StudyInstanceUID",
        "-k",
        "PatientID",
        "--json",
        "--data-dir",
        d,
        *own,
        "--ae-title",
        "HUB2",
    )
    assert code == 0
    assert len(json.loads(out)) == 2

    code, out = run_cli(
        capsys, "retrieve", AET, "--study", study, "--data-dir", d, *own, "--ae-title", "HUB2"
    )
    assert code == 0, out
    assert "completed: 4" in out
    with hub2.db.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM instance").scalar_one() == 4

    ct_study = pydicom.dcmread(SAMPLES / CT_SMALL).StudyInstanceUID
    code, out = run_cli(
        capsys,
        "retrieve",
        AET,
        "--study",
        ct_study,
        "--method",
        "move",
        "--data-dir",
        d,
        *own,
        "--ae-title",
        "HUB2",
    )
    assert code == 0, out
    with hub2.db.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM instance").scalar_one() == 5


def test_send_to_unregistered_ae_fails(scp: Scp, capsys: pytest.CaptureFixture[str]) -> None:
    ingest_file(scp.archive, 1, SAMPLES / CT_SMALL)
    study = pydicom.dcmread(SAMPLES / CT_SMALL).StudyInstanceUID
    d = str(scp.archive.settings.data_dir)
    assert run_cli(capsys, "send", "NOBODY", "--study", study, "--data-dir", d)[0] == 1
