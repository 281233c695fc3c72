#!/usr/bin/env python3
"""Compare two raw results of the shared harness (Orthanc = reference, dicomhub = candidate)
and write RESULTS.md: one table per phase plus a table of the issue's performance bars.

Ratio convention: every ratio is oriented so that **> 1 means dicomhub is better**:
  throughput (inst/s, MB/s, frames/s): dicomhub / Orthanc
  latency, size, memory (ms, bytes, MB):  Orthanc / dicomhub

  report.py          newest orthanc-full-*.json and dicomhub-full-*.json in results/raw
  report.py --mode quick --out results/raw/RESULTS-quick.md
  report.py --orthanc A.json --dicomhub B.json --out RESULTS.md
  report.py --orthanc A.json --dicomhub A.json   (self-comparison, to test the report)

The PostgreSQL + S3 run (``--pgs3``, raw ``dicomhub-pgs3-<mode>-*.json``) and the index-scale
bench (``--scale``, raw ``index-scale-<mode>-*.json``) add their sections and bars when present.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
from pathlib import Path

BENCH_DIR = str(Path(__file__).resolve().parent)
NA_UNSUP = "n/a (not supported yet)"
NA_NOTRUN = "not run"

QIDO_KINDS = [
    "by_patient_id",
    "by_name_wildcard",
    "by_date_range",
    "by_modality",
    "by_accession",
    "studies_page",
    "series_of_study",
    "instances_of_series",
]
QIDO_LABEL = {
    "by_patient_id": "PatientID=",
    "by_name_wildcard": "PatientName=FAM*",
    "by_date_range": "StudyDate half-year, limit 100",
    "by_modality": "ModalitiesInStudy, limit 100",
    "by_accession": "AccessionNumber=",
    "studies_page": "/studies?limit=25&offset=k",
    "series_of_study": "/studies/{uid}/series",
    "instances_of_series": ".../series/{uid}/instances",
}
INGEST_LABEL = {
    "stow_c1": "STOW-RS c1 (1 client)",
    "stow_c4": "STOW-RS c4 (4 clients)",
    "storescu_c1": "C-STORE storescu, 1 association",
    "storescu_c4": "C-STORE storescu, 4 associations",
    "pynetdicom_c1": "C-STORE pynetdicom, 1 association",
}


# ------------------------------------------------------------------ helpers --
class NA:
    """A cell that has no number: not supported, not run, or failed."""

    def __init__(self, why):
        self.why = why

    def __str__(self):
        return self.why


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def med(vals):
    """Median over repeats of numbers; NA if none is a number."""
    nums = [v for v in vals if is_num(v)]
    if not nums:
        nas = [v for v in vals if isinstance(v, NA)]
        return nas[0] if nas else NA(NA_NOTRUN)
    return statistics.median(nums)


def spread(vals):
    nums = [v for v in vals if is_num(v)]
    return (min(nums), max(nums)) if len(nums) > 1 else None


def fnum(v, nd=None, short=False):
    if isinstance(v, NA):
        if short:  # secondary cells: the main cell of the row already says why
            return "n/a" if v.why == NA_UNSUP else "–"
        return str(v)
    if not is_num(v):
        return "–"
    if nd is None:
        a = abs(v)
        nd = 0 if a >= 100 else 1 if a >= 10 else 2
    return f"{v:,.{nd}f}"


def fcell(vals, nd=None, short=False):
    """median (min–max) of the repeats."""
    m = med(vals)
    s = spread(vals)
    if isinstance(m, NA) or not s or fnum(s[0], nd) == fnum(s[1], nd):
        return fnum(m, nd, short)
    return f"{fnum(m, nd)} ({fnum(s[0], nd)}–{fnum(s[1], nd)})"


def ratio(o, d, higher_better):
    if not (is_num(o) and is_num(d)) or o <= 0 or d <= 0:
        return None
    return d / o if higher_better else o / d


def fratio(r):
    return "–" if r is None else f"{r:.2f}×"


def verdict(r, need, aim=None, caveat=None):
    if r is None:
        return caveat or "n/a"
    if r >= need:
        v = "**PASS**" + (
            " (aim met)" if aim and r >= aim else (f" (aim {aim}× not met)" if aim else "")
        )
    elif r >= need * 0.85:
        v = "**FAIL** (marginal: within the ±15 % noise, re-run before concluding)"
    else:
        v = "**FAIL**"
    return v + (f" — {caveat}" if caveat else "")


def md_table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def abs_verdict(value, limit):
    """PASS when value < limit (an absolute latency budget)."""
    if not is_num(value):
        return str(value) if isinstance(value, NA) else "n/a"
    if value < limit:
        return "**PASS**"
    if value < limit * 1.15:
        return "**FAIL** (marginal: within 15 % of the budget, re-run before concluding)"
    return "**FAIL**"


def ingest_table(a, b, an, bn):
    """Ingest cases of two runs side by side (inst/s, ratio b/a, MB/s, RSS, CPU, errors)."""
    cases = list(INGEST_LABEL.items())
    li = a.r.get("large_ingest") or b.r.get("large_ingest")
    if li:
        n = li.get("instances")
        label = f"STOW-RS c4, 50/request, tiny 8×8 (index growth, {n:,} inst)"
        cases.append(("large", label))
    rows = []
    for pfx, label in cases:
        av, bv = a.ingest(pfx, "instances_per_s"), b.ingest(pfx, "instances_per_s")
        cpu_nd = 2 if pfx == "large" else 1
        rows.append(
            [
                label,
                fcell(av),
                fcell(bv),
                fratio(ratio(med(av), med(bv), True)),
                fcell(a.ingest(pfx, "mb_per_s"), short=True),
                fcell(b.ingest(pfx, "mb_per_s"), short=True),
                f"{fnum(med(a.ingest(pfx, 'rss_peak_mb')), 0, True)} / "
                f"{fnum(med(b.ingest(pfx, 'rss_peak_mb')), 0, True)}",
                f"{fnum(med(a.ingest(pfx, 'cpu_ms_per_inst')), cpu_nd, True)} / "
                f"{fnum(med(b.ingest(pfx, 'cpu_ms_per_inst')), cpu_nd, True)}",
                f"{a.ingest_errors(pfx)} / {b.ingest_errors(pfx)}",
            ]
        )
    ai, bi = an[0], bn[0]
    head = ["client", f"{an} inst/s", f"{bn} inst/s", "ratio", f"{an} MB/s", f"{bn} MB/s"]
    head += [f"server RSS peak MB ({ai} / {bi})", f"server CPU ms/inst ({ai} / {bi})"]
    head += [f"errors ({ai} / {bi})"]
    return md_table(head, rows)


def query_table(a, b, an, bn, key, bench):
    """QIDO or C-FIND latency per query kind, two runs side by side (ratio = a / b)."""
    rows, mism = [], []
    kinds = (
        QIDO_KINDS
        if bench == "qido"
        else [k for k in QIDO_KINDS if k not in ("by_modality", "studies_page")]
    )
    for k in [*kinds, "_overall"]:
        cells = [QIDO_LABEL.get(k, "**all queries pooled**")]
        if k != "_overall":
            ra, rb = (
                med(a.q(key, bench, k, "results_mean")),
                med(b.q(key, bench, k, "results_mean")),
            )
            cells.append(f"{fnum(ra, 1, True)} / {fnum(rb, 1, True)}")
            if is_num(ra) and is_num(rb) and abs(ra - rb) > 0.05:
                mism.append(f"{k}: {an} {ra}, {bn} {rb}")
        else:
            cells.append("")
        for f in ("p50_ms", "p95_ms", "p99_ms"):
            av, bv = a.q(key, bench, k, f), b.q(key, bench, k, f)
            cells += [fcell(av, short=f == "p99_ms"), fcell(bv, short=f == "p99_ms")]
            if f != "p99_ms":
                cells.append(fratio(ratio(med(av), med(bv), False)))
        rows.append(cells)
    head = ["query", f"results ({an[0]} / {bn[0]})"]
    for p in ("p50", "p95", "p99"):
        head += [f"{an} {p}", f"{bn} {p}"] + ([f"ratio {p}"] if p != "p99" else [])
    out = [md_table(head, rows), ""]
    if mism:
        out += [
            "**Answer sizes differ** (mean results per query; both servers hold the same data, "
            "so this is a matching difference — check before trusting the latency ratio): "
            + "; ".join(mism)
            + ".",
            "",
        ]
    return out


def wado_table(a, b, an, bn):
    """WADO-RS cases of two runs side by side (MB/s ratio b/a; latency ratio a/b)."""
    rows = []
    for c in ("c1", "c4"):
        av, bv = a.wado(f"study_{c}", "mb_per_s"), b.wado(f"study_{c}", "mb_per_s")
        avg = med(a.wado(f"study_{c}", "avg_study_mb"))
        rows.append(
            [
                f"whole study {c}, MB/s (avg study {fnum(avg, 1)} MB)",
                fcell(av),
                fcell(bv),
                fratio(ratio(med(av), med(bv), True)),
            ]
        )
    for case, label in (
        ("series_metadata", "series /metadata"),
        ("frame_ct", "frames/1 of a CT instance"),
        ("frame_mf", "frames/N of a 76-frame instance"),
    ):
        for f in ("p50_ms", "p95_ms"):
            av, bv = a.wado(case, f), b.wado(case, f)
            rows.append(
                [
                    f"{label}, {f[:3]} ms",
                    fcell(av),
                    fcell(bv),
                    fratio(ratio(med(av), med(bv), False)),
                ]
            )
    return md_table(["case", an, bn, "ratio"], rows)


# ------------------------------------------------------------------ result access --
class Run:
    def __init__(self, path):
        self.path = path
        with open(path) as f:
            self.r = json.load(f)
        self.name = self.r.get("target", {}).get("name", Path(path).name)

    def ran(self, phase):
        return phase in self.r.get("phases", []) and (
            phase in self.r or (phase == "large" and "large_qido" in self.r)
        )

    # ingest
    def ingest_case_key(self, prefix):
        for k in self.r.get("ingest", {}):
            if k == prefix or k.startswith(prefix + "_b"):
                return k
        return None

    def ingest_runs(self, prefix):
        """Repeats of one ingest case; "large" is the tiny-corpus load of the large phase."""
        if prefix == "large":
            li = self.r.get("large_ingest")
            return [li] if li else None
        k = self.ingest_case_key(prefix) if self.ran("ingest") else None
        return self.r["ingest"][k] if k else None

    def ingest(self, prefix, field):
        runs = self.ingest_runs(prefix)
        if not runs:
            return [NA(NA_NOTRUN)]
        out = []
        for run in runs:
            if run.get("unsupported"):
                disabled = str(run.get("reason", "")).startswith("disabled")
                out.append(NA("skipped (--dimse off)" if disabled else NA_UNSUP))
            elif field == "cpu_ms_per_inst":
                cpu, n = run.get("server_cpu_s"), run.get("instances")
                out.append(cpu * 1000 / n if is_num(cpu) and n else None)
            else:
                out.append(run.get(field))
        return out

    def ingest_errors(self, prefix):
        return sum(
            (run.get("n_http_errors") or 0)
            + (run.get("n_errors") or 0)
            + (run.get("failed_instances") or 0)
            for run in self.ingest_runs(prefix) or []
            if not run.get("unsupported")
        )

    # query
    def q(self, key, bench, kind, field):
        """key: 'qido' | 'large_qido'; bench: 'qido' | 'cfind'; kind: a query kind or '_overall'."""
        if key not in self.r:
            return [NA(NA_NOTRUN)]
        out = []
        for rep in self.r[key]:
            b = rep.get(bench)
            if b is None:
                out.append(NA(NA_NOTRUN))
            elif b.get("unsupported") or b.get("error"):
                out.append(NA(NA_UNSUP) if b.get("unsupported") else NA(f"error: {b.get('error')}"))
            elif kind == "_overall":
                if b.get("overall_includes_unsupported"):
                    out.append(NA("partial: some kinds unsupported"))
                else:
                    out.append(b.get("overall", {}).get(field))
            else:
                pq = b.get("per_query", {}).get(kind)
                if not pq:
                    out.append(NA("–"))
                elif pq.get("unsupported"):
                    out.append(NA(NA_UNSUP))
                elif is_num(pq.get("results_mean")) and pq["results_mean"] < 0:
                    out.append(NA("error (HTTP ≠ 200)"))
                else:
                    out.append(pq.get(field))
        return out

    def q_errors(self, key):
        return sum(
            (rep.get(b) or {}).get("n_errors") or 0
            for rep in self.r.get(key, [])
            for b in ("qido", "cfind")
        )

    # wado
    def wado(self, case, field):
        if "wado" not in self.r:
            return [NA(NA_NOTRUN)]
        out = []
        for rep in self.r["wado"]:
            c = rep.get("study", {}).get(case[6:]) if case.startswith("study_") else rep.get(case)
            if not c:
                out.append(NA(NA_NOTRUN))
            elif c.get("unsupported"):
                out.append(NA(NA_UNSUP))
            else:
                out.append(c.get(field))
        return out

    def render(self, case, field="frames_per_s"):
        if "render" not in self.r:
            return [NA(NA_NOTRUN)]
        out = []
        for rep in self.r["render"]:
            c = rep.get("cases", {}).get(case)
            if rep.get("unsupported") or not c or c.get("unsupported"):
                out.append(NA(NA_UNSUP))
            elif field == "p50_ms":
                out.append(c.get("latency", {}).get("p50_ms"))
            else:
                out.append(c.get(field))
        return out

    def render_reason(self, case):
        """Why a render case (or the whole phase) is unsupported, if it is."""
        for rep in self.r.get("render", []):
            c = rep.get("cases", {}).get(case) or {}
            if rep.get("unsupported") or c.get("unsupported"):
                return c.get("reason") or rep.get("reason")
        return None

    def phases_note(self):
        """Which phases this run had, and the run.sh arguments (explains a "not run")."""
        meta = self.r.get("bench_meta", {})
        args = meta.get("run_sh_args")
        return f"phases {','.join(self.r.get('phases', [])) or '?'}" + (
            f" (`run.sh {args}`)" if args else ""
        )

    def render_cases(self):
        keys = []
        for rep in self.r.get("render", []):
            for k in rep.get("cases", {}):
                if k not in keys:
                    keys.append(k)
        return keys

    def errors(self):
        """Human-readable list of every error the harness recorded."""
        out = []
        for case, runs in self.r.get("ingest", {}).items():
            for i, run in enumerate(runs):
                if run.get("unsupported"):
                    continue
                n = (run.get("n_http_errors") or 0) + (run.get("n_errors") or 0)
                if n or run.get("failed_instances"):
                    samples = (run.get("http_errors") or run.get("errors") or [])[:2]
                    out.append(
                        f"ingest {case} repeat {i + 1}: {n} request errors, "
                        f"{run.get('failed_instances') or 0} failed instances {samples}"
                    )
        if self.r.get("large_ingest"):
            li = self.r["large_ingest"]
            if li.get("n_http_errors") or li.get("failed_instances"):
                out.append(
                    f"large ingest: {li.get('n_http_errors')} request errors, "
                    f"{li.get('failed_instances')} "
                    f"failed instances {li.get('http_errors', [])[:2]}"
                )
        for key in ("qido", "large_qido"):
            for i, rep in enumerate(self.r.get(key, [])):
                for b in ("qido", "cfind"):
                    x = rep.get(b) or {}
                    if x.get("n_errors"):
                        out.append(
                            f"{key}/{b} repeat {i + 1}: {x['n_errors']} errors "
                            f"{x.get('errors', [])[:3]}"
                        )
                    if x.get("error"):
                        out.append(f"{key}/{b} repeat {i + 1}: {x['error']}")
        for ph in ("wado", "render"):
            for i, rep in enumerate(self.r.get(ph, [])):
                if rep.get("n_errors"):
                    out.append(
                        f"{ph} repeat {i + 1}: {rep['n_errors']} errors {rep.get('errors', [])[:4]}"
                    )
                for k, c in rep.get("cases", {}).items():
                    if c.get("n_errors"):
                        out.append(
                            f"render {k} repeat {i + 1}: {c['n_errors']} errors "
                            f"{c.get('errors', [])[:3]}"
                        )
        return out


RENDER_BARS = [
    # label, Orthanc case, dicomhub case, required ratio, aim
    (
        "Rendered windowed CT, PNG, c1, frames/s (Orthanc: native `/instances/{id}/rendered`)",
        "orthanc_rendered|png|c1",
        "dicomweb_ct_instance|png|c1",
        1.0,
        2.0,
    ),
    (
        "Rendered windowed CT, JPEG, c1, frames/s (Orthanc: native `/instances/{id}/rendered`)",
        "orthanc_rendered|jpeg|c1",
        "dicomweb_ct_instance|jpeg|c1",
        1.0,
        2.0,
    ),
    (
        "One frame of a 76-frame instance, PNG, c1, frames/s (both: DICOMweb "
        "`/frames/{n}/rendered`)",
        "dicomweb_mf_frame|png|c1",
        "dicomweb_mf_frame|png|c1",
        5.0,
        None,
    ),
    (
        "One frame of a 76-frame instance, JPEG, c1, frames/s (both: DICOMweb "
        "`/frames/{n}/rendered`)",
        "dicomweb_mf_frame|jpeg|c1",
        "dicomweb_mf_frame|jpeg|c1",
        5.0,
        None,
    ),
    (
        "All 76 frames as PNG, frames/s (dicomhub: ONE request `/rendered?frames=all`, "
        "multipart; Orthanc: 76 sequential DICOMweb `/frames/{n}/rendered`)",
        "mf_allframes_sequential|png|c1",
        "mf_allframes_one_request|png|c1",
        10.0,
        None,
    ),
]


def render_bar_rows(o, d):
    rows = []
    for label, ok, dk, need, aim in RENDER_BARS:
        ov, dv = med(o.render(ok)), med(d.render(dk))
        r = ratio(ov, dv, True)
        if r is not None:
            v = verdict(r, need, aim)
        else:
            why = d.render_reason(dk) if isinstance(dv, NA) else o.render_reason(ok)
            v = str(dv if isinstance(dv, NA) else ov) + (f" ({why})" if why else "")
        req = f"≥ {need:g}× faster" + (f" (aim {aim:g}×)" if aim else "")
        rows.append([label, fnum(ov), fnum(dv), fratio(r), req, v])
    return rows


def pgs3_bar_rows(d, p):
    if p is None:
        return []
    rows = []
    for pfx in ("stow_c1", "stow_c4"):
        ev, pv = med(d.ingest(pfx, "instances_per_s")), med(p.ingest(pfx, "instances_per_s"))
        r = ratio(ev, pv, True)
        cav = f"{p.ingest_errors(pfx)} errors/failed instances" if p.ingest_errors(pfx) else None
        rows.append(
            [
                f"STOW-RS ingest {pfx[-2:]} on PostgreSQL + SeaweedFS vs embedded, inst/s",
                f"{fnum(ev)} (embedded)",
                fnum(pv),
                fratio(r),
                "≥ 0.7× embedded",
                verdict(r, 0.7, None, cav) if r is not None else str(pv),
            ]
        )
    return rows


def scale_bar_rows(scale):
    if scale is None:
        return []
    rows = []
    n = scale.get("sizes", {}).get("instances", 0)
    budget = scale.get("budget_ms", 20.0)
    small = " (indicative only: the bar is for 1,000,000 instances)" if n < 1_000_000 else ""
    for b, res in scale.get("backends", {}).items():
        name = SCALE_NAMES.get(b, b)
        p95 = res.get("overall", {}).get("p95_ms")
        rows.append(
            [
                f"QIDO mix at {n:,} instances on {name}, p95 pooled, ms",
                "–",
                fnum(p95),
                "–",
                f"< {budget:g} ms",
                abs_verdict(p95, budget) + small,
            ]
        )
        per = res.get("per_query", {})
        if per:
            k = max(per, key=lambda k: per[k].get("p95_ms") or 0)
            over = [x for x in per if (per[x].get("p95_ms") or 0) >= budget]
            rows.append(
                [
                    f"QIDO at {n:,} on {name}, worst kind ({k}), p95 ms"
                    + (f"; {len(over)} of {len(per)} kinds over budget" if over else ""),
                    "–",
                    fnum(per[k].get("p95_ms")),
                    "–",
                    f"< {budget:g} ms for every kind",
                    abs_verdict(per[k].get("p95_ms"), budget) + small,
                ]
            )
    return rows


SCALE_NAMES = {"sqlite": "SQLite", "pg": "PostgreSQL"}
SCALE_LABEL = {
    **QIDO_LABEL,
    "by_name_wildcard": "PatientName=FAMn*",
    "by_name_fuzzy": "PatientName=famn, fuzzymatching=true",
}
SCALE_KINDS = [*QIDO_KINDS[:2], "by_name_fuzzy", *QIDO_KINDS[2:]]


def scale_section(scale):
    """The index-scale bench: one table per backend, and the plans of the slow kinds."""
    z = scale.get("sizes", {})
    budget = scale.get("budget_ms", 20.0)
    out = [
        f"{z.get('instances', 0):,} instances ({z.get('studies', 0):,} studies of "
        f"{z.get('patients', 0):,} patients, 2 series × 5 instances; every 10th patient in a "
        "second tenant), index rows bulk-generated by `bench/index_scale.py` (no blobs), "
        f"served by `dicomhub serve`. {scale.get('values')} values per kind drawn from the "
        f"generated rows × {scale.get('reps')} passes after a warm-up pass, one keep-alive "
        "client. Started "
        f"{scale.get('started', '?')}, {scale.get('elapsed_s', '?')} s in all.",
        "",
    ]
    slow = []
    for b, res in scale.get("backends", {}).items():
        name = SCALE_NAMES.get(b, b)
        load = res.get("loadavg_1min")
        out.append(
            f"### {name} (index {res.get('index_bytes', 0) / 1e6:,.0f} MB, generated in "
            f"{res.get('generate_s')} s"
            + (f"; load average {load[0]} → {load[1]} while timing" if load else "")
            + ")"
        )
        out.append("")
        rows = []
        per, plans = res.get("per_query", {}), res.get("plans", {})
        for k in [k for k in SCALE_KINDS if k in per] + [k for k in per if k not in SCALE_KINDS]:
            q = per[k]
            pl = plans.get(k, {})
            rows.append(
                [
                    SCALE_LABEL.get(k, k),
                    fnum(q.get("results_mean"), 1),
                    fnum(q.get("p50_ms")),
                    fnum(q.get("p95_ms")),
                    fnum(q.get("p99_ms")),
                    f"{fnum(q.get('slowest', {}).get('p50_ms'))} / {fnum(pl.get('db_ms'))}"
                    + (f" / {fnum(pl['generic_ms'])}" if is_num(pl.get("generic_ms")) else ""),
                    abs_verdict(q.get("p95_ms"), budget),
                ]
            )
            db_slow = max(pl.get("db_ms") or 0, pl.get("generic_ms") or 0) >= budget
            if (q.get("p95_ms") or 0) >= budget or db_slow:
                slow.append((name, k, q, pl))
        ov = res.get("overall", {})
        rows.append(
            [
                "**all queries pooled**",
                "",
                fnum(ov.get("p50_ms")),
                fnum(ov.get("p95_ms")),
                fnum(ov.get("p99_ms")),
                "",
                abs_verdict(ov.get("p95_ms"), budget),
            ]
        )
        out.append(
            md_table(
                [
                    "query",
                    "results",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "slowest value over HTTP, p50 / slowest value's SQL alone"
                    + (" (custom plan / generic plan)" if b == "pg" else "")
                    + ", ms",
                    f"p95 < {budget:g} ms",
                ],
                rows,
            )
        )
        out.append("")
        if res.get("n_errors"):
            out.append(f"**{res['n_errors']} errors**: {res.get('errors')}")
            out.append("")
    out.append(
        '"SQL alone": the statement dicomhub builds for each value of the kind is run in-process '
        "against the same database with its values bound, once warm; the slowest one is timed "
        "again (median of 5 warm runs) and its plan is shown below. When it is far below the "
        "HTTP latency, the time goes to building the answer, not to the index. On PostgreSQL the "
        "statement is run twice: with its values bound as the server sends them (the planner "
        "sees the values: a custom plan), and as a prepared statement forced onto its generic "
        "plan (no values), because psycopg 3 prepares a statement after 5 executions of the "
        "same SQL text and PostgreSQL may then keep the generic plan: a server under steady load "
        "can run either."
    )
    out.append("")
    if slow:
        out.append(
            "Plans of the kinds over budget, over HTTP or in the database alone (one of the two "
            "PostgreSQL plans can be slow while the server happened to run the other):"
        )
        out.append("")
        for name, k, q, pl in slow:
            ex = pl.get("params") or q.get("slowest", {}).get("params")
            out.append(
                f"<details><summary>{name} {k} ({pl.get('path', '')} {ex}): p95 "
                f"{fnum(q.get('p95_ms'))} ms over HTTP; slowest value's SQL alone "
                f"{fnum(pl.get('db_ms'))} ms</summary>"
            )
            out.append("")
            out.append("```")
            out.append(pl.get("plan") or pl.get("error") or "no plan recorded")
            out.append("```")
            if pl.get("generic_plan"):
                out.append("")
                out.append(f"Generic plan ({fnum(pl.get('generic_ms'))} ms):")
                out.append("")
                out.append("```")
                out.append(pl["generic_plan"])
                out.append("```")
            out.append("")
            out.append("</details>")
            out.append("")
    return out


# ------------------------------------------------------------------ report --
def build(o: Run, d: Run, title_note="", pgs3: Run | None = None, scale: dict | None = None) -> str:
    lines = []
    ro, rd = o.r, d.r
    corpus = ro.get("corpus", {})
    reps = ro.get("repeats")
    lines.append("# dicomhub vs Orthanc — benchmark results")
    lines.append("")
    if title_note:
        lines.append(f"> {title_note}")
        lines.append("")
    lines.append(
        f"Generated {dt.datetime.now().isoformat(timespec='seconds')} by `bench/report.py` from "
        f"`{os.path.relpath(o.path, BENCH_DIR)}` (reference) and "
        f"`{os.path.relpath(d.path, BENCH_DIR)}`."
    )
    lines.append("")
    oinfo = ro.get("server", {}).get("system", {})
    oplug = ro.get("server", {}).get("plugins", {})
    dmeta = rd.get("bench_meta", {})
    host = ro.get("host", {})
    lines.append(
        f"* Host: {host.get('platform', '?')}, {host.get('cpus', '?')} CPUs (shared by client and "
        "server), "
        f"{host.get('mem_gb', '?')} GB RAM, Python {host.get('python', '?')}."
    )
    lines.append(
        f"* Orthanc {oinfo.get('Version', '?')}"
        + (f" + DICOMweb plugin {oplug.get('dicom-web')}" if oplug.get("dicom-web") else "")
        + f"; dicomhub {dmeta.get('server_version') or '?'}"
        + (
            " (repo "
            f"{dmeta['git_head'][:10]}{' + local changes' if dmeta.get('git_dirty') else ''})"
            if dmeta.get("git_head")
            else ""
        )
        + "."
    )
    lines.append(
        f"* Corpus: {corpus.get('n_instances', '?'):,} instances, "
        f"{corpus.get('total_bytes', 0) / 1e6:,.0f} MB, "
        f"{corpus.get('n_patients', '?')} patients, {corpus.get('n_studies', '?')} studies, "
        f"{corpus.get('n_series', '?')} series (generator params: "
        f"`{json.dumps(corpus.get('params', {}))}`)."
    )
    if rd.get("corpus", {}).get("params") != corpus.get("params"):
        lines.append(
            "* **WARNING: the two runs used different corpora; the ratios are not comparable.**"
        )
    lines.append(
        f"* Repeats per phase: Orthanc {reps}, dicomhub {rd.get('repeats')}. Cells show the "
        "median over "
        "repeats, with (min–max) when they differ. Runs started "
        f"{ro.get('started', '?')} (Orthanc) and {rd.get('started', '?')} (dicomhub); wall time "
        f"{ro.get('elapsed_s', '?')} s and {rd.get('elapsed_s', '?')} s."
    )
    lines.append(f"* Orthanc run: {o.phases_note()}; dicomhub run: {d.phases_note()}.")
    if pgs3 is not None:
        lines.append(
            f"* dicomhub on PostgreSQL + SeaweedFS: `{os.path.relpath(pgs3.path, BENCH_DIR)}`, "
            f"{pgs3.phases_note()}, started {pgs3.r.get('started', '?')}."
        )
    if scale is not None:
        lines.append(f"* Index scale: `{os.path.relpath(scale['_path'], BENCH_DIR)}`.")
    lines.append("")
    lines.append(
        "**Ratio convention: every ratio is oriented so that > 1 means dicomhub is better** — "
        "throughput ratios are dicomhub / Orthanc, latency, size and memory ratios are Orthanc / "
        "dicomhub. "
        f'"{NA_UNSUP}" marks a phase the server does not offer (probed at run time); '
        f'"{NA_NOTRUN}" a phase '
        "that was skipped in this run. Noise: client and server share 2 cores; repeat-to-repeat "
        "spread is "
        "±15–30 % on ingest, so differences under ~1.3× are within noise."
    )
    lines.append("")

    # ---------------------------------------------------------------- targets
    lines.append("## Targets (the issue's performance bars)")
    lines.append("")
    rows = []
    for pfx, label in (
        ("stow_c1", "STOW-RS ingest c1, inst/s"),
        ("stow_c4", "STOW-RS ingest c4, inst/s"),
    ):
        ov, dv = med(o.ingest(pfx, "instances_per_s")), med(d.ingest(pfx, "instances_per_s"))
        r = ratio(ov, dv, True)
        cav = f"{d.ingest_errors(pfx)} errors/failed instances" if d.ingest_errors(pfx) else None
        rows.append(
            [
                label,
                fnum(ov),
                fnum(dv),
                fratio(r),
                "≥ 1.0× (aim 1.5×)",
                verdict(r, 1.0, 1.5, cav)
                if r is not None
                else (str(dv) if isinstance(dv, NA) else "n/a"),
            ]
        )
    n_main = corpus.get("n_instances")
    n_large_o, n_large_d = ro.get("large_index_instances"), rd.get("large_index_instances")
    for key, where in (
        ("qido", f"{n_main:,}" if n_main else "main"),
        (
            "large_qido",
            f"{n_large_d or n_large_o or '?':,}" if (n_large_d or n_large_o) else "large",
        ),
    ):
        ov, dv = (
            med(o.q(key, "qido", "_overall", "p95_ms")),
            med(d.q(key, "qido", "_overall", "p95_ms")),
        )
        r = ratio(ov, dv, False)
        rows.append(
            [
                f"QIDO p95 at {where} instances, pooled over the mix, ms",
                fnum(ov),
                fnum(dv),
                fratio(r),
                "≥ 1.0× (no worse)",
                verdict(r, 1.0) if r is not None else str(dv),
            ]
        )
        worst = None
        for k in QIDO_KINDS:
            rk = ratio(
                med(o.q(key, "qido", k, "p95_ms")), med(d.q(key, "qido", k, "p95_ms")), False
            )
            if rk is not None and (worst is None or rk < worst[1]):
                worst = (k, rk)
        if worst:
            k = worst[0]
            rows.append(
                [
                    f"QIDO p95 at {where}, worst query kind ({k}), ms",
                    fnum(med(o.q(key, "qido", k, "p95_ms"))),
                    fnum(med(d.q(key, "qido", k, "p95_ms"))),
                    fratio(worst[1]),
                    "≥ 1.0× for every kind",
                    verdict(worst[1], 1.0),
                ]
            )
    # growth
    if "large_qido" in rd or "large_qido" in ro:

        def growth(run, kind):
            a, b = (
                med(run.q("qido", "qido", kind, "p95_ms")),
                med(run.q("large_qido", "qido", kind, "p95_ms")),
            )
            return b / a if is_num(a) and is_num(b) and a > 0 else None

        go, gd = growth(o, "_overall"), growth(d, "_overall")
        nl_ = n_large_d or n_large_o or 0
        small = " (indicative only: the bar is for 2k → ~50k instances)" if nl_ < 40000 else ""
        rows.append(
            [
                f"QIDO p95 growth {n_main or '?':,} → {n_large_d or n_large_o or '?':,} "
                "instances, pooled",
                fratio(go),
                fratio(gd),
                "–",
                "dicomhub < 1.5×",
                (("**PASS**" if gd < 1.5 else "**FAIL**") + small) if gd is not None else "n/a",
            ]
        )
        worst = None
        for k in QIDO_KINDS:
            g = growth(d, k)
            if g is not None and (worst is None or g > worst[1]):
                worst = (k, g)
        if worst:
            rc_main = med(d.q("qido", "qido", worst[0], "results_mean"))
            rc_large = med(d.q("large_qido", "qido", worst[0], "results_mean"))
            note = ""
            if is_num(rc_main) and is_num(rc_large) and rc_large > rc_main * 1.2:
                note = f" (answer grows {fnum(rc_main, 1)} → {fnum(rc_large, 1)} results)"
            rows.append(
                [
                    f"QIDO p95 growth, worst query kind ({worst[0]}){note}",
                    fratio(growth(o, worst[0])),
                    fratio(worst[1]),
                    "–",
                    "dicomhub < 1.5×",
                    ("**PASS**" if worst[1] < 1.5 else "**FAIL**") + small,
                ]
            )
        # the fairest index-cost view: kinds whose answer size does not change with the index
        same = []
        for k in QIDO_KINDS:
            a, b = (
                med(d.q("qido", "qido", k, "results_mean")),
                med(d.q("large_qido", "qido", k, "results_mean")),
            )
            g = growth(d, k)
            if is_num(a) and is_num(b) and abs(a - b) <= 0.05 and g is not None:
                same.append((k, g))
        if same:
            k, g = max(same, key=lambda x: x[1])
            rows.append(
                [
                    f"QIDO p95 growth, worst kind with an unchanged answer size ({k}; "
                    f"{len(same)} such kinds)",
                    fratio(growth(o, k)),
                    fratio(g),
                    "–",
                    "dicomhub < 1.5×",
                    ("**PASS**" if g < 1.5 else "**FAIL**") + small,
                ]
            )
    for c in ("c1", "c4"):
        ov, dv = med(o.wado(f"study_{c}", "mb_per_s")), med(d.wado(f"study_{c}", "mb_per_s"))
        r = ratio(ov, dv, True)
        rows.append(
            [
                f"WADO-RS whole study {c}, MB/s",
                fnum(ov),
                fnum(dv),
                fratio(r),
                "≥ 0.8×",
                verdict(r, 0.8) if r is not None else str(dv),
            ]
        )
    for f in ("p50_ms", "p95_ms"):
        ov, dv = med(o.wado("frame_mf", f)), med(d.wado("frame_mf", f))
        r = ratio(ov, dv, False)
        rows.append(
            [
                f"WADO-RS frames/N of a 76-frame instance, {f[:3]} ms",
                fnum(ov),
                fnum(dv),
                fratio(r),
                "≥ 20× faster",
                verdict(r, 20.0) if r is not None else str(dv),
            ]
        )
    rows += render_bar_rows(o, d)
    lines.append(
        md_table(
            ["bar", "Orthanc", "dicomhub", "ratio (>1 = dicomhub better)", "required", "verdict"],
            rows,
        )
    )
    if pgs3 is not None or scale is not None:
        lines.append("")
        lines.append(
            "Bars of the PostgreSQL + S3 issue (dicomhub against itself and against an absolute "
            "budget):"
        )
        lines.append("")
        lines.append(
            md_table(
                ["bar", "reference", "dicomhub", "ratio", "required", "verdict"],
                pgs3_bar_rows(d, pgs3) + scale_bar_rows(scale),
            )
        )
    lines.append("")
    lines.append(
        "Growth rows show p95(large index) / p95(main corpus) for each server (lower is better), "
        "not a ratio "
        "between the servers. Some query kinds return more results at the large index (the tiny "
        "corpus adds "
        "patients, studies and dates), so part of their growth is answer size, not index cost."
    )
    derr = d.errors()
    if derr:
        lines.append("")
        lines.append(
            f'**dicomhub recorded {len(derr)} error line(s); see "Errors" below — figures of '
            "phases with "
            "errors are not trustworthy.**"
        )
    lines.append("")

    # ---------------------------------------------------------------- ingest
    lines.append("## Ingest (empty archive before each case; whole main corpus)")
    lines.append("")
    if not (o.ran("ingest") or d.ran("ingest")):
        lines.append(NA_NOTRUN)
    else:
        lines.append(ingest_table(o, d, "Orthanc", "dicomhub"))
        lines.append("")
        lines.append(
            "STOW-RS: multipart bodies of 10 instances (built before timing), c parallel "
            "keep-alive clients. "
            "C-STORE: DCMTK `storescu` processes / pynetdicom, one association each. Server CPU "
            "is from "
            "`/proc/<pid>` of the recorded server PID only (worker processes, if any, are not "
            "counted)."
        )
    lines.append("")

    # ---------------------------------------------------------------- storage
    lines.append("## Storage after loading the main corpus")
    lines.append("")
    if "storage" not in ro and "storage" not in rd:
        lines.append(NA_NOTRUN)
    else:
        so, sd = ro.get("storage", {}), rd.get("storage", {})
        lo, ld = ro.get("large_storage", {}), rd.get("large_storage", {})
        rows = [
            [
                "allocated bytes / instance (main corpus)",
                fnum(so.get("allocated_bytes_per_instance")),
                fnum(sd.get("allocated_bytes_per_instance")),
                fratio(
                    ratio(
                        so.get("allocated_bytes_per_instance"),
                        sd.get("allocated_bytes_per_instance"),
                        False,
                    )
                ),
            ],
            [
                "files in the storage folder",
                fnum(so.get("du", {}).get("files")),
                fnum(sd.get("du", {}).get("files")),
                "–",
            ],
            [
                "server RSS after load, MB",
                fnum(so.get("rss_mb_now")),
                fnum(sd.get("rss_mb_now")),
                fratio(ratio(so.get("rss_mb_now"), sd.get("rss_mb_now"), False)),
            ],
        ]
        if lo or ld:
            rows.append(
                [
                    "allocated bytes / instance at the large index",
                    fnum(lo.get("allocated_bytes_per_instance")),
                    fnum(ld.get("allocated_bytes_per_instance")),
                    fratio(
                        ratio(
                            lo.get("allocated_bytes_per_instance"),
                            ld.get("allocated_bytes_per_instance"),
                            False,
                        )
                    ),
                ]
            )
            rows.append(
                [
                    "server RSS at the large index, MB",
                    fnum(lo.get("rss_mb_now")),
                    fnum(ld.get("rss_mb_now")),
                    fratio(ratio(lo.get("rss_mb_now"), ld.get("rss_mb_now"), False)),
                ]
            )
        lines.append(md_table(["metric", "Orthanc", "dicomhub", "ratio"], rows))
        lines.append("")

        def tl(s):
            files = (s.get("top_level_files") or {}).items()
            return ", ".join(f"`{k}` {v / 1e6:.1f} MB" for k, v in files) or "–"

        lines.append(
            f"Top-level files (index databases) — Orthanc: {tl(so)}; dicomhub: {tl(sd)}."
            + (f" At the large index — Orthanc: {tl(lo)}; dicomhub: {tl(ld)}." if lo or ld else "")
        )
    lines.append("")

    # ---------------------------------------------------------------- queries
    def qtable(key, bench, title):
        lines.append(f"## {title}")
        lines.append("")
        if key not in ro and key not in rd:
            lines.append(NA_NOTRUN)
            lines.append("")
            return
        lines.extend(query_table(o, d, "Orthanc", "dicomhub", key, bench))

    nm = f"{n_main:,}" if n_main else "main"
    nl = f"{(n_large_d or n_large_o):,}" if (n_large_d or n_large_o) else "large"
    qtable("qido", "qido", f"QIDO-RS latency at the main corpus ({nm} instances), ms")
    qtable("large_qido", "qido", f"QIDO-RS latency at the large index ({nl} instances), ms")
    qtable("qido", "cfind", f"C-FIND latency at the main corpus ({nm} instances), ms")
    qtable("large_qido", "cfind", f"C-FIND latency at the large index ({nl} instances), ms")
    lines.append(
        "QIDO: 8 kinds × 10 values drawn from the corpus × repetitions, one untimed warm-up pass, "
        "latency "
        "until the whole body is received. C-FIND: the same kinds over one association."
    )
    lines.append("")

    # ---------------------------------------------------------------- wado
    lines.append("## WADO-RS retrieve")
    lines.append("")
    if "wado" not in ro and "wado" not in rd:
        lines.append(NA_NOTRUN)
    else:
        lines.append(wado_table(o, d, "Orthanc", "dicomhub"))
        lines.append("")
        lines.append(
            'Whole study: `Accept: multipart/related; type="application/dicom"; '
            "transfer-syntax=*` on "
            "single-frame CT studies, c1 = each once, c4 = each 4 times with 4 threads. Frames: "
            '`type="application/octet-stream"; transfer-syntax=*`.'
        )
    lines.append("")

    # ---------------------------------------------------------------- render
    lines.append("## Rendering (`/rendered`, warm caches), frames/s")
    lines.append("")
    lines.append(
        "The harness samples instances and requests each several times after a warm-up pass: "
        "dicomhub answers a repeated request (same instance, frame and parameters) from its "
        "rendered-image cache (1/8 of `DICOMHUB_RENDER_CACHE_BYTES`), Orthanc renders every "
        "request. Measured without that cache (in-process, one client): windowed CT JPEG "
        "1.5-1.8 ms of server CPU per request, PNG 2.1-2.7 ms (see docs/architecture.md)."
    )
    lines.append("")
    keys = o.render_cases() or d.render_cases()
    for k in d.render_cases():
        if k not in keys:
            keys.append(k)
    if not keys:
        lines.append(NA_NOTRUN if ("render" not in ro and "render" not in rd) else NA_UNSUP)
    else:
        rows = []
        for k in keys:
            native = not k.startswith("dicomweb_")
            ov, dv = o.render(k), d.render(k)
            if native and all(isinstance(x, NA) for x in dv):
                dv = [NA("– (Orthanc-specific endpoint)")]
            rows.append(
                [
                    k.replace("|", " "),
                    fcell(ov),
                    fcell(dv),
                    fratio(ratio(med(ov), med(dv), True)),
                    f"{fnum(med(o.render(k, 'p50_ms')), None, True)} / "
                    f"{fnum(med(d.render(k, 'p50_ms')), None, True)}",
                ]
            )
        lines.append(
            md_table(
                ["endpoint format concurrency", "Orthanc", "dicomhub", "ratio", "p50 ms (O / d)"],
                rows,
            )
        )
        reason = next(
            (rep.get("reason") for rep in rd.get("render", []) if rep.get("unsupported")), None
        )
        if reason:
            lines.append("")
            lines.append(f"dicomhub render probe: {reason}.")
        lines.append("")
        lines.append(
            "`dicomweb_*` cases: the harness's (60 CT instances, 24 random frames of the "
            "multi-frame instances, each list warmed up once). `mf_allframes_*` cases "
            "(`bench/harness_run.py`): every frame of each 76-frame instance as PNG, timed per "
            "whole instance — `one_request` is `GET .../rendered?frames=all` with "
            '`Accept: multipart/related; type="image/png"` (checked: one PNG part per frame), '
            "`sequential` is 76 `GET .../frames/{n}/rendered` in a row; frames/s = frames / "
            "wall time."
        )
        cold = [
            c.get("cold_ms")
            for rep in rd.get("render", [])
            for k, c in rep.get("cases", {}).items()
            if k.startswith("mf_allframes_one_request") and c.get("cold_ms")
        ]
        if cold:
            lines.append(
                f"dicomhub's first `?frames=all` request per instance (the untimed warm-up; "
                f"decoded-frame cache only partly warm) took {cold[0]} ms per instance."
            )
    lines.append("")

    # ---------------------------------------------------------------- pg + s3
    if pgs3 is not None:
        lines.append("## dicomhub on PostgreSQL + SeaweedFS (S3) vs the embedded default")
        lines.append("")
        lines.append(
            "Same corpus and client; a throw-away PostgreSQL cluster and `weed mini` on loopback "
            "(`bench/backends.py`), started by `run.sh`. Ratios are PG+S3 / embedded "
            "(> 1 = PG+S3 better)."
        )
        lines.append("")
        if pgs3.ran("ingest") or d.ran("ingest"):
            lines.append(ingest_table(d, pgs3, "embedded", "PG+S3"))
            lines.append("")
        if "qido" in pgs3.r:
            lines.append(f"QIDO-RS at the main corpus ({nm} instances), ms:")
            lines.append("")
            lines.extend(query_table(d, pgs3, "embedded", "PG+S3", "qido", "qido"))
        if "wado" in pgs3.r:
            lines.append(wado_table(d, pgs3, "embedded", "PG+S3"))
            lines.append("")
        errs = pgs3.errors()
        lines.append("PG+S3 errors: " + ("none" if not errs else "; ".join(errs[:10])))
        lines.append("")

    # ---------------------------------------------------------------- index scale
    if scale is not None:
        n = scale.get("sizes", {}).get("instances", 0)
        lines.append(f"## QIDO-RS at {n:,} instances (index scale), SQLite and PostgreSQL")
        lines.append("")
        lines.extend(scale_section(scale))

    # ---------------------------------------------------------------- baseline
    if "baseline" in ro or "baseline" in rd:
        src = ro if "baseline" in ro else rd
        lines.append(
            "## Baseline: pydicom + numpy + Pillow in one client process (no server), frames/s"
        )
        lines.append("")
        rows = []
        for k in src["baseline"][0]["cases"]:
            rows.append(
                [
                    k.replace("|", " "),
                    fcell([rep["cases"][k]["frames_per_s"] for rep in src["baseline"]]),
                ]
            )
        lines.append(md_table(["case", "frames/s"], rows))
        lines.append("")

    # ---------------------------------------------------------------- probes & errors
    lines.append("## Probes and errors")
    lines.append("")
    for run in (o, d):
        meta = run.r.get("bench_meta", {})
        pr = meta.get("probes") or {}
        if pr:
            lines.append(f"* {run.name} probes: " + "; ".join(f"{k}: {v}" for k, v in pr.items()))
        errs = run.errors()
        lines.append(f"* {run.name} errors: " + ("none" if not errs else ""))
        for e in errs[:20]:
            lines.append(f"  * {e}")
        if len(errs) > 20:
            lines.append(f"  * … {len(errs) - 20} more")
    lines.append("")
    return "\n".join(lines)


def newest(raw_dir, name, mode):
    c = sorted(Path(raw_dir).glob(f"{name}-{mode}-*.json"), key=lambda p: p.stat().st_mtime)
    return str(c[-1]) if c else None


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--orthanc", help="raw JSON of the reference run")
    ap.add_argument("--dicomhub", help="raw JSON of the dicomhub run")
    ap.add_argument(
        "--mode", default="full", help="quick | full: which newest raw files to pick by default"
    )
    ap.add_argument("--raw-dir", default=str(Path(BENCH_DIR) / "results" / "raw"))
    ap.add_argument("--out", default=str(Path(BENCH_DIR) / "RESULTS.md"))
    ap.add_argument("--note", default="", help="a line shown under the title")
    ap.add_argument("--pgs3", help="raw JSON of the dicomhub PostgreSQL + S3 run (default: newest)")
    ap.add_argument("--scale", help="raw JSON of index_scale.py (default: newest)")
    a = ap.parse_args(argv)
    pp = a.pgs3 or newest(a.raw_dir, "dicomhub-pgs3", a.mode)
    sp = a.scale or newest(a.raw_dir, "index-scale", a.mode)
    scale = None
    if sp:
        with open(sp) as f:
            scale = dict(json.load(f), _path=sp)
    op = a.orthanc or newest(a.raw_dir, "orthanc", a.mode)
    dp = a.dicomhub or newest(a.raw_dir, "dicomhub", a.mode)
    if not op or not dp:
        print(
            f"need both raw results (orthanc={op}, dicomhub={dp}); run bench/run.sh",
            file=sys.stderr,
        )
        return 1
    note = a.note
    if a.mode == "quick" and not note:
        note = (
            "Quick smoke run (small corpus, 1 repeat): checks the pipeline; "
            "the figures are not the reference ones."
        )
    if Path(op).resolve() == Path(dp).resolve() and not note:
        note = (
            "Self-comparison (the same raw file on both sides): a test of the report, ratios are 1."
        )
    txt = build(Run(op), Run(dp), note, Run(pp) if pp else None, scale)
    Path(a.out).resolve().parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w") as f:
        f.write(txt + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
