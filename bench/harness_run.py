#!/usr/bin/env python3
"""Run the shared benchmark harness (``<repo>/../shared/bench/run_all.py``) against one target,
with capability guards so that a server that lacks a feature gets "unsupported" entries instead of
bogus figures or a crash.

The harness is imported, not copied: this file only wraps some of its functions before handing
the command line to ``run_all.main``:

* ``bench_cstore.run`` / ``bench_qido.run_cfind`` (DIMSE C-STORE / C-FIND): with ``--dimse auto``
  (default) the target's DIMSE port is probed once with a C-ECHO association; if no association can
  be established, every DIMSE case returns ``{"unsupported": true, ...}`` and is not run.
  Without this guard ``storescu`` against a closed port "finishes" 2,000 instances in a few
  milliseconds and the harness would report an absurd rate; and the harness's table printer crashes
  on a C-FIND result without ``per_query``.
* ``bench_qido.run`` / ``bench_wado.run``: the first request of every QIDO query kind and of every
  WADO case is probed; a 404/405/406/501 answer marks that kind / case ``unsupported`` (its
  latencies would be those of an error page).  5xx answers stay errors.
* ``bench_render.run`` (``/rendered``): one CT instance is fetched as ``image/png`` first; if the
  answer is not a 200 PNG the phase returns ``{"unsupported": true, "cases": {}}``.

Probe outcomes, the repo commit and the server version are added to the JSON as ``bench_meta``.

It also pre-loads the main corpus (reset + STOW c4) when data-dependent phases are requested without
the ``ingest`` phase, so ``--only qido`` works from any state.

Every argument other than the ones below goes to ``run_all.py`` unchanged
(``--target-file``, ``--only``, ``--skip``, ``--repeats``, ``--corpus``, ``--out``, ...).

* ``bench_render.run`` also gets two extra cases measured here (the harness has no such case):
  all frames of each 76-frame instance as PNG in ONE request (``/rendered?frames=all`` with
  ``Accept: multipart/related; type="image/png"``) and the same frames fetched one by one
  (``/frames/{n}/rendered``), both timed per whole instance (see ``all_frames_cases``).

  harness_run.py [--harness DIR] [--dimse auto|on|off] [--render auto|on|off]
                 [--allframes N] [--backend-label L] [--version-cmd CMD] -- <run_all args>
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_HARNESS = str(REPO.parent / "shared" / "bench")

UNSUPPORTED = "not supported by the target (probe failed)"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] harness_run: {msg}", flush=True)


def probe_dimse(target, timeout=5.0) -> tuple[bool, str]:
    """C-ECHO association to the target's DIMSE SCP."""
    import logging

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    ae = AE(ae_title=target.calling_aet)
    ae.acse_timeout = timeout
    ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    try:
        assoc = ae.associate(target.host, int(target.port), ae_title=target.aet)
    except Exception as e:
        return False, f"associate raised {e!r}"
    if not assoc.is_established:
        return False, f"no association with {target.aet}@{target.host}:{target.port}"
    try:
        st = assoc.send_c_echo()
        ok = bool(st) and st.Status == 0x0000
    finally:
        assoc.release()
    return True, "C-ECHO ok" if ok else "association ok, C-ECHO not successful"


def probe_render(target, m) -> tuple[bool, str]:
    import httpx
    from benchlib import wado_path

    cts = [i for i in m["instances"] if i["kind"] == "ct"] or m["instances"]
    url = f"{wado_path(target.base_url, cts[0])}/rendered"
    try:
        r = httpx.get(
            url, headers={"Accept": "image/png", "Accept-Encoding": "identity"}, timeout=60
        )
    except Exception as e:
        return False, f"GET {url} raised {e!r}"
    ctype = r.headers.get("content-type", "")
    if r.status_code == 200 and ctype.startswith("image/png"):
        return True, "200 image/png"
    return False, f"GET .../rendered -> HTTP {r.status_code} {ctype}"


PROBES: dict = {}
UNSUPPORTED_STATUS = (
    404,
    405,
    406,
    501,
)  # "no such endpoint / not implemented"; 5xx stays an error


def http_status(url, accept) -> int:
    import httpx

    try:
        r = httpx.get(url, headers={"Accept": accept, "Accept-Encoding": "identity"}, timeout=120)
        return r.status_code
    except Exception:
        return 0


def probe_qido_kinds(target, m, n_values) -> dict:
    """Status of the first query of every QIDO kind: {kind: status}."""
    from urllib.parse import urlencode

    import bench_qido

    out = {}
    for kind, qs in bench_qido.build_mix(m, n_values).items():
        path, params = qs[0]
        url = target.base_url + path + ("?" + urlencode(params, safe="*,") if params else "")
        out[kind] = http_status(url, "application/dicom+json")
    return out


def probe_wado_cases(target, m) -> dict:
    """Status of one request per WADO case: {case: status}."""
    import bench_wado
    from benchlib import wado_path

    cts = [i for i in m["instances"] if i["kind"] == "ct"] or m["instances"]
    mfs = [i for i in m["instances"] if i["frames"] > 1]
    ct = cts[0]
    b = target.base_url
    out = dict(
        study=http_status(f"{b}/studies/{ct['study_uid']}", bench_wado.ACCEPT_DICOM),
        series_metadata=http_status(
            f"{b}/studies/{ct['study_uid']}/series/{ct['series_uid']}/metadata",
            "application/dicom+json",
        ),
        frame_ct=http_status(f"{wado_path(b, ct)}/frames/1", bench_wado.ACCEPT_FRAME),
    )
    if mfs:
        out["frame_mf"] = http_status(
            f"{wado_path(b, mfs[0])}/frames/{mfs[0]['frames']}", bench_wado.ACCEPT_FRAME
        )
    return out


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ACCEPT_MULTIPART_PNG = 'multipart/related; type="image/png"'


def _case(name, fmt, frames, lat_s, wall, nbytes, n_inst, **extra):
    """A render case in the harness's shape (its table printer reads frames_per_s, latency)."""
    from benchlib import lat_stats

    return dict(
        endpoint=name,
        format=fmt,
        concurrency=1,
        frames=frames,
        instances=n_inst,
        wall_s=round(wall, 3),
        frames_per_s=round(frames / wall, 1) if wall > 0 else None,
        latency=lat_stats(lat_s),  # per whole instance (all of its frames)
        avg_bytes=int(nbytes / max(1, n_inst)),
        **extra,
    )


def _unsupported_case(name, why):
    return dict(
        endpoint=name, unsupported=True, reason=why, frames_per_s=None, latency={"p50_ms": None}
    )


def count_parts(r) -> tuple[int, int]:
    """(multipart parts, PNG images) of a multipart/related answer."""
    ctype = r.headers.get("content-type", "")
    boundary = None
    for p in ctype.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    body = r.content
    parts = body.count(b"--" + boundary.encode() + b"\r\n") if boundary else 0
    return parts, body.count(PNG_SIGNATURE)


def all_frames_cases(target, m, n_instances=4, reps=1) -> dict:
    """Every frame of a multi-frame instance as PNG, timed per whole instance.

    * ``mf_allframes_one_request|png``: ONE request,
      ``GET .../instances/{sop}/rendered?frames=all`` with
      ``Accept: multipart/related; type="image/png"`` (dicomhub's ``frames`` parameter; without
      it an instance-level PNG is frame 1 only). The answer must hold one PNG part per frame,
      else the case is "unsupported". One untimed warm-up pass first (its times are kept as
      ``cold_ms``), then ``reps`` timed passes, like the harness's warm-cache render cases.
    * ``mf_allframes_sequential|png``: the frames fetched one by one,
      ``GET .../frames/{n}/rendered`` (``Accept: image/png``) for n = 1..N, sequentially: what a
      client of Orthanc's DICOMweb plugin has to do. The warm-up is one frame per instance
      (each request re-parses the whole file on Orthanc anyway).
    """
    import time as _t

    from benchlib import http_client, wado_path

    mfs = [i for i in m["instances"] if i["frames"] > 1][:n_instances]
    out: dict = {}
    if not mfs:
        return out
    client = http_client(1)
    base = target.base_url
    one = "mf_allframes_one_request"
    try:
        lat, nbytes, frames, cold, bad = [], 0, 0, [], None
        for rep in range(reps + 1):
            for inst in mfs:
                url = f"{wado_path(base, inst)}/rendered?frames=all"
                t0 = _t.perf_counter()
                r = client.get(url, headers={"Accept": ACCEPT_MULTIPART_PNG})
                body = r.content
                dt_ = _t.perf_counter() - t0
                if rep == 0:
                    parts, pngs = count_parts(r) if r.status_code == 200 else (0, 0)
                    if r.status_code != 200 or parts != inst["frames"] or pngs != inst["frames"]:
                        bad = (
                            f"HTTP {r.status_code} {r.headers.get('content-type', '')[:60]}, "
                            f"{parts} parts / {pngs} PNGs for {inst['frames']} frames"
                        )
                        break
                    cold.append(dt_)
                    continue
                lat.append(dt_)
                nbytes += len(body)
                frames += inst["frames"]
            if bad:
                break
        if bad:
            out[f"{one}|png|c1"] = _unsupported_case(one, bad)
        else:
            out[f"{one}|png|c1"] = _case(
                one,
                "image/png",
                frames,
                lat,
                sum(lat),
                nbytes,
                len(lat),
                cold_ms=[round(x * 1000, 1) for x in cold],
                request="GET .../rendered?frames=all, " + ACCEPT_MULTIPART_PNG,
            )
        seq = "mf_allframes_sequential"
        lat, nbytes, frames, errors = [], 0, 0, []
        for inst in mfs:  # warm-up: one frame each
            client.get(
                f"{wado_path(base, inst)}/frames/1/rendered", headers={"Accept": "image/png"}
            )
        for _ in range(reps):
            for inst in mfs:
                t0 = _t.perf_counter()
                size = 0
                for n in range(1, inst["frames"] + 1):
                    r = client.get(
                        f"{wado_path(base, inst)}/frames/{n}/rendered",
                        headers={"Accept": "image/png"},
                    )
                    size += len(r.content)
                    if r.status_code != 200 or not r.content.startswith(PNG_SIGNATURE):
                        errors.append(f"frame {n}: HTTP {r.status_code}")
                lat.append(_t.perf_counter() - t0)
                nbytes += size
                frames += inst["frames"]
        if errors and len(errors) == frames:
            out[f"{seq}|png|c1"] = _unsupported_case(seq, errors[0])
        else:
            out[f"{seq}|png|c1"] = _case(
                seq,
                "image/png",
                frames,
                lat,
                sum(lat),
                nbytes,
                len(lat),
                n_errors=len(errors),
                errors=errors[:3],
                request="GET .../frames/{n}/rendered, n = 1..N in sequence, Accept: image/png",
            )
    finally:
        client.close()
    return out


def install_guards(dimse_mode: str, render_mode: str, allframes_n: int = 4):
    import bench_cstore
    import bench_qido
    import bench_render
    import bench_wado

    state: dict = {}
    orig_cstore, orig_cfind, orig_render = bench_cstore.run, bench_qido.run_cfind, bench_render.run
    orig_qido, orig_wado = bench_qido.run, bench_wado.run

    def qido(target, m, n_values=10, *a, **kw):
        st = probe_qido_kinds(target, m, n_values)
        unsup = {k: v for k, v in st.items() if v in UNSUPPORTED_STATUS}
        PROBES.setdefault("qido", {}).update({k: v for k, v in st.items()})
        if unsup:
            log(f"QIDO probe: unsupported kinds {unsup}")
        if len(unsup) == len(st):
            return dict(
                bench="qido",
                unsupported=True,
                reason=f"every query kind answered {sorted(set(unsup.values()))}",
                per_query={k: dict(unsupported=True, status=v) for k, v in st.items()},
                n_errors=0,
            )
        r = orig_qido(target, m, n_values, *a, **kw)
        for k, v in unsup.items():
            r["per_query"][k] = dict(r["per_query"].get(k, {}), unsupported=True, status=v)
        if unsup:
            r["overall_includes_unsupported"] = sorted(unsup)
        return r

    def wado(target, m, *a, **kw):
        st = probe_wado_cases(target, m)
        PROBES["wado"] = st
        unsup = {k: v for k, v in st.items() if v in UNSUPPORTED_STATUS}
        if unsup:
            log(f"WADO probe: unsupported cases {unsup}")
        r = orig_wado(target, m, *a, **kw)
        for k, v in unsup.items():
            if k == "study":
                r["study"] = {
                    c: dict(unsupported=True, status=v) for c in r.get("study", {"c1": 0, "c4": 0})
                }
            else:
                r[k] = dict(unsupported=True, status=v)
        return r

    def dimse_ok(target):
        if dimse_mode == "on":
            return True, "forced on"
        if dimse_mode == "off":
            return False, "disabled with --dimse off"
        if "dimse" not in state:
            state["dimse"] = probe_dimse(target)
            log(f"DIMSE probe {target.aet}@{target.host}:{target.port}: {state['dimse'][1]}")
            PROBES["dimse"] = state["dimse"][1]
        return state["dimse"]

    def cstore(target, m, tool="storescu", concurrency=1, *a, **kw):
        ok, why = dimse_ok(target)
        if not ok:
            return dict(
                bench="cstore",
                tool=tool,
                concurrency=concurrency,
                unsupported=True,
                reason=why,
                instances_per_s=None,
                mb_per_s=None,
                rss_peak_mb=None,
            )
        return orig_cstore(target, m, tool, concurrency, *a, **kw)

    def cfind(target, m, *a, **kw):
        ok, why = dimse_ok(target)
        if not ok:
            return dict(bench="cfind", unsupported=True, reason=why, per_query={})
        return orig_cfind(target, m, *a, **kw)

    def render(target, m, *a, **kw):
        if render_mode == "off":
            return dict(
                bench="render", unsupported=True, reason="disabled with --render off", cases={}
            )
        if render_mode == "auto":
            ok, why = probe_render(target, m)
            log(f"render probe: {why}")
            PROBES["render"] = why
            if not ok:
                return dict(bench="render", unsupported=True, reason=why, cases={})
        r = orig_render(target, m, *a, **kw)
        if allframes_n > 0:
            r.setdefault("cases", {}).update(all_frames_cases(target, m, allframes_n))
        return r

    bench_cstore.run = cstore
    bench_qido.run_cfind = cfind
    bench_qido.run = qido
    bench_wado.run = wado
    bench_render.run = render


def preload_if_needed(run_all, argv):
    """--only/--skip without ingest: load the main corpus first (reset + STOW c4), untimed."""
    import bench_stow
    from benchlib import load_manifest, target_from_args

    ap = argparse.ArgumentParser(add_help=False)
    from benchlib import add_target_args

    add_target_args(ap)
    ap.add_argument("--corpus", default="/tmp/bench-corpus/main")
    ap.add_argument("--corpus-args", default="--instances 2000")
    ap.add_argument("--stow-batch", type=int, default=10)
    ap.add_argument("--skip", default="")
    ap.add_argument("--only", default="")
    a, _ = ap.parse_known_args(argv)
    phases = [p for p in run_all.PHASES if p not in a.skip.split(",")]
    if a.only:
        phases = [p for p in run_all.PHASES if p in a.only.split(",")]
    if "ingest" in phases or not set(phases) & {"storage", "qido", "wado", "render", "large"}:
        return
    t = target_from_args(a)
    if not t.reset_cmd:
        log("no ingest phase and no reset command: using whatever the archive holds")
        return
    run_all.ensure_corpus(a.corpus, a.corpus_args.split())
    m = load_manifest(a.corpus)
    log(f"pre-loading {m['n_instances']} instances (reset + STOW c4, untimed for the report)")
    r = bench_stow.run(t, m, 4, a.stow_batch, reset=True)
    log(
        f"   pre-load: {r['instances_per_s']} inst/s, {r['n_http_errors']} HTTP errors, "
        f"{r['failed_instances']} failed instances"
    )


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--harness", default=os.environ.get("BENCH_HARNESS", DEFAULT_HARNESS))
    ap.add_argument("--dimse", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--render", choices=["auto", "on", "off"], default="auto")
    ap.add_argument(
        "--version-cmd", help="shell command printing the server version (recorded in the JSON)"
    )
    ap.add_argument(
        "--allframes",
        type=int,
        default=4,
        help="render phase: multi-frame instances for the all-frames PNG cases (0 = off)",
    )
    ap.add_argument("--backend-label", help="recorded in bench_meta (e.g. embedded, pg+s3)")
    if "--" not in argv and ("-h" in argv or "--help" in argv):
        ap.print_help()
        print("\nrun_all.py arguments (after --): see `run_all.py --help` in the harness folder")
        return 0
    if "--" in argv:
        k = argv.index("--")
        mine, rest = argv[:k], argv[k + 1 :]
    else:
        mine, rest = [], argv
    a = ap.parse_args(mine)
    harness = Path(a.harness).resolve()
    if not (harness / "run_all.py").exists():
        sys.exit(f"harness not found at {harness} (expected <repo>/../shared/bench)")
    sys.path.insert(0, str(harness))
    import run_all

    install_guards(a.dimse, a.render, a.allframes)
    preload_if_needed(run_all, rest)
    rc = run_all.main(rest)
    add_meta(rest, a)
    return rc


def add_meta(rest, a):
    """Record what the harness JSON does not: probe outcomes, repo commit, server version."""
    import subprocess

    if "--out" not in rest:
        return
    out = rest[rest.index("--out") + 1]
    try:
        with open(out) as f:
            res = json.load(f)
    except (OSError, ValueError):
        return

    def sh(cmd):
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=REPO, timeout=30)
        return r.stdout.strip()

    meta = dict(
        probes=PROBES,
        dimse_mode=a.dimse,
        render_mode=a.render,
        harness=str(Path(a.harness).resolve()),
        backend=a.backend_label,
        run_sh_args=os.environ.get("BENCH_RUN_ARGS"),
        git_head=sh("git rev-parse HEAD 2>/dev/null"),
        git_dirty=bool(sh("git status --porcelain 2>/dev/null")),
    )
    if a.version_cmd:
        meta["server_version"] = sh(a.version_cmd + " 2>&1 | head -1") or None
    res["bench_meta"] = meta
    with open(out, "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    sys.exit(main())
