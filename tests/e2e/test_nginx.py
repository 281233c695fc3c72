"""The load-balancer recipe of docs/deployment.md, run for real: nginx in front of two nodes.

``deploy/nginx/dicomhub.conf`` is the configuration the docs show (the first test proves the
docs block is that file, byte for byte). The second runs it with real nginx, unprivileged
paths in a temporary prefix (``-p``/``-c``, ``daemon off``), TLS included: the test makes a
throwaway self-signed certificate with the ``openssl`` command. Only what a site must change
anyway is substituted (node addresses, listen addresses, certificate paths) plus a smaller
body limit, so that the limit can be exceeded cheaply; each substitution must apply exactly
once, so an edit to the recipe that the test no longer covers fails here.

Through nginx: STOW-RS of a multi-MB body (streamed: nginx must not spool it to a temporary
file) is stored, one over the limit is refused with 413, QIDO-RS answers with URLs of the TLS
endpoint (Host and X-Forwarded-Proto reach the nodes), WADO-RS returns the files byte-identical
(streamed too), plain HTTP redirects to HTTPS, and GETs keep working when a node is down.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom.uid import generate_uid

from tests.conftest import Backend, free_port
from tests.e2e.nodes import Node, start_nodes, stop_nodes
from tests.helpers import (
    ct_image,
    dicom_multipart_type,
    multipart_body,
    part10_bytes,
    single_part,
    zeroed,
)

pytestmark = [pytest.mark.slow, pytest.mark.pg_only]

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "deploy" / "nginx" / "dicomhub.conf"
DOCS = REPO / "docs" / "deployment.md"
DOCS_MARKER = "<!-- deploy/nginx/dicomhub.conf (verbatim; tests/e2e/test_nginx.py) -->"
BODY_LIMIT_MB = 16
DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


def nginx_binary() -> Path:
    """The nginx executable; the test fails (not skips) without it."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail("nginx is not installed: run scripts/install.sh --test (Debian package nginx)")
    return Path(found)


def docs_block() -> str:
    """The nginx configuration shown in docs/deployment.md after :data:`DOCS_MARKER`."""
    text = DOCS.read_text()
    assert text.count(DOCS_MARKER) == 1, "the recipe marker must appear once in the docs"
    after = text.split(DOCS_MARKER, 1)[1]
    m = re.match(r"\s*```nginx\n(.*?)```\n", after, re.S)
    assert m is not None, "the marker must be followed by an ```nginx block"
    return m.group(1)


def test_docs_show_the_tested_recipe() -> None:
    assert docs_block() == RECIPE.read_text()


def substitute(recipe: str, replacements: list[tuple[str, str]]) -> str:
    """Apply each (regex, replacement) exactly once."""
    for pattern, repl in replacements:
        recipe, n = re.subn(pattern, repl, recipe, flags=re.M)
        assert n == 1, f"recipe changed: {pattern!r} matched {n} times"
    return recipe


@dataclass
class Proxy:
    https: str
    http: str
    cert: Path
    prefix: Path

    @property
    def error_log(self) -> str:
        return (self.prefix / "error.log").read_text()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (openssl CLI)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    res = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return cert, key


@pytest.fixture
def nodes(tmp_path: Path, storage: Backend) -> Iterator[list[Node]]:
    """Two nodes on this test's PostgreSQL database and S3 prefix."""
    if storage.s3 is None:  # DICOMHUB_TEST_BACKENDS without pg+s3
        pytest.skip("needs the pg+s3 backend set (PostgreSQL and S3)")
    started = [Node(f"node{k}", tmp_path / f"node{k}", tmp_path / f"node{k}.log") for k in (0, 1)]
    try:
        start_nodes(started)
        yield started
    finally:
        stop_nodes(started)


@pytest.fixture
def proxy(tmp_path: Path, nodes: list[Node]) -> Iterator[Proxy]:
    """nginx with the recipe, in front of ``nodes``, as the current user in a temporary prefix."""
    binary = nginx_binary()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    cert, key = self_signed(prefix)
    https_port, http_port = free_port(), free_port()
    upstreams = "".join(
        f"    server 127.0.0.1:{n.port} max_fails=3 fail_timeout=10s;\n" for n in nodes
    )
    site = substitute(
        RECIPE.read_text(),
        [
            ("".join(rf"^    server 10\.0\.0\.{n}:.*\n" for n in (11, 12, 13)), upstreams),
            (r"^    listen 80;$", f"    listen 127.0.0.1:{http_port};"),
            (r"^    listen 443 ssl http2;$", f"    listen 127.0.0.1:{https_port} ssl http2;"),
            (r"^    ssl_certificate     \S+;$", f"    ssl_certificate     {cert};"),
            (r"^    ssl_certificate_key \S+;$", f"    ssl_certificate_key {key};"),
            (r"^    client_max_body_size 4g;", f"    client_max_body_size {BODY_LIMIT_MB}m;"),
        ],
    )  # fmt: skip
    (prefix / "dicomhub.conf").write_text(site)
    # Workers of a root master switch to an unprivileged user unless told otherwise: keep them
    # as the current user, who owns the temporary prefix.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n    access_log {prefix / 'access.log'};\n{temp_paths}"
        f"    include {prefix / 'dicomhub.conf'};\n}}\n"
    )
    cmd = [str(binary), "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
           "-e", str(prefix / "error.log")]  # fmt: skip
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    log = (prefix / "stdout.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        https = f"https://127.0.0.1:{https_port}"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (prefix / "error.log").read_text()[-2000:]
            try:
                if (
                    httpx.get(
                        https + "/health",
                        verify=ssl.create_default_context(cafile=str(cert)),
                        timeout=2,
                    ).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
        yield Proxy(https, f"http://127.0.0.1:{http_port}", cert, prefix)
    finally:
        proc.terminate()  # SIGTERM: fast shutdown
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def big_instances(n: int, size: int) -> list[tuple[str, str, str, bytes]]:
    """``n`` CT-like instances of ``size`` x ``size`` 16-bit pixels (2 MiB at 1024)."""
    study, series = str(generate_uid()), str(generate_uid())
    out: list[tuple[str, str, str, bytes]] = []
    for i in range(n):
        sop = str(generate_uid())
        pixels = np.random.default_rng(i).integers(0, 4096, (size, size), dtype=np.uint16)
        ds = ct_image(
            sop=sop, study=study, series=series, patient_name="Proxy^Test", patient_id="NGINX-1",
            size=size, bits_allocated=16, bits_stored=12, pixel_data=pixels.tobytes(),
        )  # fmt: skip
        ds.InstanceNumber = i + 1
        out.append((study, series, sop, part10_bytes(ds)))
    return out


def post(client: httpx.Client, url: str, parts: list[bytes]) -> httpx.Response:
    boundary = uuid.uuid4().hex
    return client.post(
        url + "/dicomweb/studies",
        content=multipart_body(parts, boundary),
        headers={"Content-Type": dicom_multipart_type(boundary)},
        timeout=120,
    )


def test_two_nodes_behind_nginx(proxy: Proxy, nodes: list[Node]) -> None:
    started = time.monotonic()
    stored = big_instances(3, 1024)  # about 6 MB in one request
    with httpx.Client(verify=ssl.create_default_context(cafile=str(proxy.cert))) as client:
        # Plain HTTP is only a redirect to HTTPS.
        r = client.get(proxy.http + "/dicomweb/studies")
        assert r.status_code == 301 and r.headers["location"].startswith("https://127.0.0.1/")

        r = post(client, proxy.https, [data for *_, data in stored])
        assert r.status_code == 200, r.text[:500]
        refs = r.json()["00081199"]["Value"]
        assert {item["00081155"]["Value"][0] for item in refs} == {sop for _, _, sop, _ in stored}
        # The answer's URLs name the TLS endpoint, not the node (Host and X-Forwarded-Proto).
        assert all(
            item["00081190"]["Value"][0].startswith(proxy.https + "/dicomweb/") for item in refs
        )

        # Over the limit: nginx refuses before any node sees it.
        too_big = big_instances(1, 3000)[0][3]  # 18 MB
        assert len(too_big) > BODY_LIMIT_MB * 1024 * 1024
        assert post(client, proxy.https, [too_big]).status_code == 413

        # QIDO and WADO through the proxy, several times (both nodes answer).
        study = stored[0][0]
        for _ in range(4):
            r = client.get(proxy.https + f"/dicomweb/studies/{study}/instances")
            assert r.status_code == 200
            assert len(r.json()) == 3
            assert r.json()[0]["00081190"]["Value"][0].startswith(proxy.https + "/dicomweb/")
        for study, series, sop, data in stored:
            url = f"{proxy.https}/dicomweb/studies/{study}/series/{series}/instances/{sop}"
            r = client.get(url, headers=DICOM, timeout=60)
            assert r.status_code == 200
            assert single_part(r) == zeroed(data)

        # Both directions were streamed, never spooled to nginx's temporary files.
        log = proxy.error_log
        assert "buffered to a temporary file" not in log, log[-2000:]
        assert not any((proxy.prefix / "client_body").rglob("*[0-9]"))

        # A node goes down: reads keep working through the other one.
        nodes[1].stop()
        for _ in range(4):
            r = client.get(proxy.https + f"/dicomweb/studies/{study}/instances")
            assert r.status_code == 200 and len(r.json()) == 3
    assert time.monotonic() - started < 60
