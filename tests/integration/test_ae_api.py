"""The AE registry in the JSON API (``/api/aes``) and the request checks of the SCU job routes.

The registry is the one ``dicomhub ae`` manages: what the API registers, the command line lists.
Every refusal is a JSON ``{"status", "error"}`` body from the web error table.
"""

from __future__ import annotations

import json
from typing import Any

import pydicom
import pytest
from starlette.testclient import TestClient

from dicomhub.services.archive import Archive
from tests.helpers import ingest_file, run_cli
from tests.samples import CT_SMALL, SAMPLES

API = "/api/aes"
PACS = {"ae_title": "PACS1", "host": "10.1.2.3", "port": 104}


def error_of(resp: Any, status: int) -> str:
    """The reason of a JSON error response with ``status``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    return str(body["error"])


def test_crud_and_shared_with_the_cli(
    client: TestClient, archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    assert client.get(API).json() == []

    resp = client.post(API, json={**PACS, "permissions": ["store", "query"]})
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"].endswith("/api/aes/PACS1")
    want = {**PACS, "tenant": "default", "permissions": ["store", "query"]}
    assert resp.json() == want
    assert client.get(resp.headers["location"]).json() == want
    # identical again: 200, no change; other settings under the same title: 409
    assert client.post(API, json={**PACS, "permissions": ["store", "query"]}).status_code == 200
    assert "already registered" in error_of(client.post(API, json={**PACS, "port": 105}), 409)
    # default permissions: all four; title padded with insignificant spaces
    resp = client.post(
        API, json={"ae_title": " MODALITY ", "host": "ct1.example.org", "port": 11112}
    )
    assert resp.status_code == 201
    assert resp.json()["ae_title"] == "MODALITY"
    resp = client.post(API, json={"ae_title": "CT 2/B", "host": "::1", "port": 104})
    assert resp.headers["location"].endswith("/api/aes/CT%202%2FB")
    assert client.delete("/api/aes/CT%202").status_code == 404
    assert client.get("/api/aes/CT%202%2FB").status_code == 404  # "/" cannot be in a path
    assert (
        run_cli(capsys, "ae", "remove", "CT 2/B", "--data-dir", str(archive.settings.data_dir))[0]
        == 0
    )
    resp = client.post(API, json={"ae_title": "CT 2", "host": "::1", "port": 104})
    assert resp.headers["location"].endswith("/api/aes/CT%202")
    assert client.get(resp.headers["location"]).json()["ae_title"] == "CT 2"
    assert client.delete(resp.headers["location"]).status_code == 204
    assert resp.json()["permissions"] == ["store", "query", "retrieve", "move-destination"]

    listed = client.get(API).json()
    assert [a["ae_title"] for a in listed] == ["MODALITY", "PACS1"]

    # the command line sees the same registry
    data_dir = str(archive.settings.data_dir)
    code, out = run_cli(capsys, "ae", "list", "--json", "--data-dir", data_dir)
    assert code == 0
    cli = {a["ae_title"]: a for a in json.loads(out)}
    assert cli["PACS1"]["may_query"] is True and cli["PACS1"]["may_retrieve"] is False
    assert cli["MODALITY"]["port"] == 11112

    # PUT replaces host, port and permissions
    resp = client.put(
        f"{API}/PACS1", json={"host": "10.1.2.4", "port": 4242, "permissions": ["retrieve"]}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {**want, "host": "10.1.2.4", "port": 4242, "permissions": ["retrieve"]}
    assert client.get(f"{API}/PACS1").json()["port"] == 4242
    code, out = run_cli(capsys, "ae", "list", "--json", "--data-dir", data_dir)
    assert {a["ae_title"]: a["port"] for a in json.loads(out)}["PACS1"] == 4242

    # a CLI registration shows in the API; a CLI removal too
    assert (
        run_cli(
            capsys,
            "ae",
            "add",
            "FROMCLI",
            "--host",
            "127.0.0.1",
            "--port",
            "1",
            "--data-dir",
            data_dir,
        )[0]
        == 0
    )
    assert client.get(f"{API}/FROMCLI").json()["port"] == 1
    assert run_cli(capsys, "ae", "remove", "MODALITY", "--data-dir", data_dir)[0] == 0
    error_of(client.get(f"{API}/MODALITY"), 404)

    assert client.delete(f"{API}/PACS1").status_code == 204
    error_of(client.get(f"{API}/PACS1"), 404)
    error_of(client.delete(f"{API}/PACS1"), 404)
    error_of(client.put(f"{API}/PACS1", json={"host": "h", "port": 1}), 404)
    assert [a["ae_title"] for a in client.get(API).json()] == ["FROMCLI"]


CREATE_REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({**PACS, "ae_title": "A" * 17}, "1 to 16 characters"),
    ({**PACS, "ae_title": "BACK\\SLASH"}, "no backslash"),
    ({**PACS, "ae_title": "BELL\x07"}, "printable"),
    ({**PACS, "ae_title": "TAB\tAE"}, "printable"),
    ({**PACS, "ae_title": "    "}, "1 to 16 characters"),
    ({**PACS, "ae_title": ""}, "1 to 16 characters"),
    ({**PACS, "ae_title": 7}, "must be a string"),
    ({"host": "h", "port": 104}, "'ae_title' is required"),
    ({**PACS, "host": "two words"}, "host"),
    ({**PACS, "host": "a;rm -rf"}, "host"),
    ({**PACS, "host": ""}, "host"),
    ({**PACS, "host": "h" * 256}, "host"),
    ({"ae_title": "X", "port": 104}, "'host' is required"),
    ({**PACS, "port": 0}, "between 1 and 65535"),
    ({**PACS, "port": 65536}, "between 1 and 65535"),
    ({**PACS, "port": -1}, "between 1 and 65535"),
    ({**PACS, "port": "104"}, "must be an integer"),
    ({**PACS, "port": True}, "must be an integer"),
    ({**PACS, "port": 104.5}, "must be an integer"),
    ({"ae_title": "X", "host": "h"}, "'port' is required"),
    ({**PACS, "permissions": "store"}, "list of strings"),
    ({**PACS, "permissions": ["store", "fly"]}, "unknown permission"),
    ({**PACS, "tenant": "nobody"}, "no tenant named"),
    ({**PACS, "colour": "blue"}, "unknown member"),
]


def test_create_refusals(client: TestClient) -> None:
    for body, reason in CREATE_REFUSALS:
        assert reason in error_of(client.post(API, json=body), 400), body
    assert client.get(API).json() == []


def test_malformed_bodies_and_paths(client: TestClient) -> None:
    headers = {"Content-Type": "application/json"}
    assert "not valid JSON" in error_of(client.post(API, content=b"{", headers=headers), 400)
    assert "JSON object" in error_of(client.post(API, content=b"[1]", headers=headers), 400)
    deep = b"[" * 50000 + b"]" * 50000
    error_of(client.post(API, content=deep[:60000], headers=headers), 400)
    error_of(client.post(API, content=b'{"a": "' + b"x" * 70000 + b'"}', headers=headers), 413)
    error_of(client.post(API, content=json.dumps(PACS).encode()), 415)
    error_of(
        client.post(API, content=json.dumps(PACS).encode(), headers={"Content-Type": "text/plain"}),
        415,
    )
    # the AE title in the path is checked like one in a body
    assert "16 characters" in error_of(client.get(f"{API}/{'A' * 17}"), 400)
    assert "backslash" in error_of(client.get(f"{API}/A%5CB"), 400)
    client.post(API, json=PACS)
    assert "differs" in error_of(
        client.put(f"{API}/PACS1", json={**PACS, "ae_title": "OTHER"}), 400
    )
    assert "between 1 and 65535" in error_of(
        client.put(f"{API}/PACS1", json={"host": "h", "port": 0}), 400
    )
    assert error_of(client.patch(f"{API}/PACS1", json={}), 405)
    assert client.get(f"{API}/PACS1").json()["port"] == 104


def test_job_request_refusals(client: TestClient, archive: Archive) -> None:
    """Send, query and retrieve requests are checked before any job is created."""
    ingest_file(archive, 1, SAMPLES / CT_SMALL)
    ds = pydicom.dcmread(SAMPLES / CT_SMALL, stop_before_pixels=True)
    study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    assert client.post(API, json=PACS).status_code == 201
    send, query, get = f"{API}/PACS1/send", f"{API}/PACS1/query", f"{API}/PACS1/retrieve"

    error_of(client.post(f"{API}/NOBODY/send", json={"study": study}), 404)
    error_of(client.post(f"{API}/NOBODY/query", json={}), 404)
    error_of(client.post(f"{API}/NOBODY/retrieve", json={"study": study}), 404)
    assert "no such study" in error_of(client.post(send, json={"study": "1.2.3.4"}), 404)
    assert "no such series" in error_of(
        client.post(send, json={"study": study, "series": "1.2.3"}), 404
    )
    bad_refs: list[dict[str, Any]] = [
        {"study": "1.2.x"},
        {"study": 12},
        {},
        {"items": []},
        {"items": "x"},
        {"items": [{"series": series}]},
        {"items": [{"study": study, "instance": "1.2"}]},
        {"items": [{"study": study, "extra": 1}]},
        {"study": study, "items": [{"study": study}]},
        {"items": [{"study": study}] * 101},
        {"study": study, "priority": "high"},
    ]
    for bad in bad_refs:
        error_of(client.post(send, json=bad), 400)
        error_of(client.post(get, json=bad), 400)
    bad_queries: list[dict[str, Any]] = [
        {"level": "WORLD"},
        {"level": "STUDY", "keys": {"NoSuchKeyword": ""}},
        {"level": "STUDY", "keys": {"99999999": ""}},
        {"level": "STUDY", "keys": ["PatientID"]},
        {"level": "STUDY", "keys": {"PatientID": 5}},
        {"level": "STUDY", "keys": {"ReferencedStudySequence": ""}},
        {"level": "STUDY", "keys": {"QueryRetrieveLevel": "STUDY"}},
        {"level": "STUDY", "keys": {f"Keyword{i}": "" for i in range(65)}},
        {"level": "STUDY", "keys": {"PatientID": "x" * 1025}},
        {"level": "STUDY", "model": "world"},
        {"level": "STUDY", "limit": 0},
        {"level": "STUDY", "limit": 1001},
    ]
    for bad_query in bad_queries:
        error_of(client.post(query, json=bad_query), 400)
    for bad_get in ({"study": study, "method": "teleport"}, {"study": study, "model": "x"}):
        error_of(client.post(get, json=bad_get), 400)
    # C-MOVE from an AE that may not store here could never deliver
    client.put(f"{API}/PACS1", json={**PACS, "permissions": ["query", "retrieve"]})
    assert "may not store" in error_of(
        client.post(get, json={"study": study, "method": "move"}), 409
    )
    # nothing was enqueued
    assert client.get("/api/jobs").json()["total"] == 0
    # job routes
    error_of(client.get("/api/jobs/12345"), 404)
    error_of(client.delete("/api/jobs/12345"), 404)
    error_of(client.get(f"/api/jobs/{2**70}"), 404)
    error_of(client.get("/api/jobs/abc"), 404)
    for params in ("limit=0", "limit=501", "limit=x", "offset=-1", "state=sleeping", "colour=1"):
        error_of(client.get(f"/api/jobs?{params}"), 400)
