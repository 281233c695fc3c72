#!/usr/bin/env python3
"""Index-scale benchmark: the QIDO mix over HTTP at ~1,000,000 instances, on SQLite and PostgreSQL.

The index rows are bulk-generated with set-based SQL straight into a dicomhub index (no blobs:
QIDO never opens one), with the distribution of ``tests/integration/test_pg_plans.py`` scaled to
``--instances``: one study per 10 instances (2 series of 5), one patient per 4 studies, every
10th patient (and its studies) in a second tenant, 997 family names ``FAM<n>``, study dates
spread over 2000-2024, 5 modalities. The schema is the project's own (``dicomhub db upgrade``);
on SQLite the non-unique indexes are dropped during the load and re-created from their stored
DDL, and the planner statistics are the ones dicomhub installs (``planner_stats``, re-installed
by ``serve`` at start); PostgreSQL gets ``ANALYZE``.

Then ``dicomhub serve`` runs on that index and the mix is timed like the harness's
``bench_qido`` (one keep-alive client, values drawn from the generated data, one untimed warm-up
pass, then ``--reps`` interleaved passes; latency until the whole body arrived): p50/p95/p99 per
kind and pooled. For every kind the SQL that dicomhub builds is also run in-process with
``EXPLAIN ANALYZE`` (PostgreSQL) or ``EXPLAIN QUERY PLAN`` plus its execution time (SQLite), so
a slow kind shows whether the time goes to the database or to building the answer.

Runs with the project's venv Python (it imports dicomhub to compile the SQL, psycopg, httpx).

  .venv/bin/python bench/index_scale.py --out bench/results/raw/index-scale-full-X.json
  .venv/bin/python bench/index_scale.py --instances 100000 --backends sqlite   # quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlencode

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BUDGET_MS = 20.0
sys.path.insert(0, str(BENCH))
import backends  # noqa: E402  (bench/backends.py)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] index_scale: {msg}", flush=True)


def sizes(n_instances: int) -> dict:
    studies = max(1, n_instances // 10)
    return dict(
        instances=studies * 10, studies=studies, patients=max(1, studies // 4), series=2, per=5
    )


# ------------------------------------------------------------------ generation --
def pg_generate(url: str, z: dict) -> None:
    """The generator of tests/integration/test_pg_plans.py, scaled (PostgreSQL dialect)."""
    import psycopg

    p, s, k_se, k_in = z["patients"], z["studies"], z["series"], z["per"]
    stmts = [
        "INSERT INTO tenant (id, name, created_at) VALUES (2, 'other', 0)",
        f"""INSERT INTO patient (tenant_id, identity, patient_id, issuer, patient_name,
            patient_name_fuzzy, patient_birth_date, patient_sex, attrs)
        SELECT 1 + (g % 10 = 0)::int, 'id:\\P' || g, 'P' || g, '',
            'FAM' || (g % 997) || '^GIVEN' || (g % 31),
            ' FAM' || (g % 997) || ' GIVEN' || (g % 31) || ' ', '19700101', 'O', '{{}}'
        FROM generate_series(1, {p}) g""",
        f"""INSERT INTO study (tenant_id, patient_pk, study_uid, study_date, study_time,
            accession_number, study_id, referring_physician_name, referring_physician_fuzzy,
            study_description, modalities, num_series, num_instances, attrs, created_at,
            updated_at)
        SELECT p.tenant_id, p.pk, '1.2.826.0.1.' || g,
            to_char(date '2000-01-01' + (g * 7919 % 9000), 'YYYYMMDD'), '120000', 'A' || g,
            'S' || g, 'DOC' || (g % 101), ' DOC' || (g % 101) || ' ', 'desc', 'CT\\MR',
            {k_se}, {k_se * k_in}, '{{}}', 0, 0
        FROM generate_series(1, {s}) g JOIN patient p ON p.pk = 1 + g % {p}""",
        f"""INSERT INTO series (tenant_id, study_pk, series_uid, modality, series_number,
            num_instances, attrs, created_at)
        SELECT s.tenant_id, s.pk, s.study_uid || '.' || k,
            (ARRAY['CT','MR','US','PT','MG'])[1 + (s.pk + k) % 5], k, {k_in}, '{{}}', 0
        FROM study s, generate_series(1, {k_se}) k ORDER BY s.pk, k""",
        f"""INSERT INTO instance (tenant_id, series_pk, study_pk, sop_uid, sop_class_uid,
            instance_number, transfer_syntax_uid, blob_key, size, sha256, frames, bulk,
            created_at)
        SELECT se.tenant_id, se.pk, se.study_pk, se.series_uid || '.' || k,
            '1.2.840.10008.5.1.4.1.1.2', k, '1.2.840.10008.1.2.1',
            md5(se.series_uid || '.' || k), 1, '', '[]', '{{}}', 0
        FROM series se, generate_series(1, {k_in}) k ORDER BY se.pk, k""",
    ]
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        for sql in stmts:
            t0 = time.perf_counter()
            conn.execute(sql)
            log(f"   {sql.split('(')[0].strip()}: {time.perf_counter() - t0:.1f} s")
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        log(f"   VACUUM ANALYZE: {time.perf_counter() - t0:.1f} s")


def sqlite_generate(path: Path, z: dict) -> None:
    """The same rows in SQLite (recursive CTEs instead of generate_series)."""
    p, s, k_se, k_in = z["patients"], z["studies"], z["series"], z["per"]
    tables = ("patient", "study", "series", "instance")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA foreign_keys=OFF")
    # Non-unique indexes are dropped for the load and re-created from their own DDL; the
    # UNIQUE constraints' automatic indexes stay.
    ddl = [
        (name, sql)
        for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL "
            f"AND tbl_name IN {tables}"
        )
    ]
    conn.execute("BEGIN")
    for name, _ in ddl:
        conn.execute(f'DROP INDEX "{name}"')

    def series_of(n: int, col: str = "k") -> str:
        return " UNION ALL ".join(f"SELECT {i} AS {col}" for i in range(1, n + 1))

    stmts = [
        "INSERT INTO tenant (id, name, created_at) VALUES (2, 'other', 0)",
        f"""INSERT INTO patient (pk, tenant_id, identity, patient_id, issuer, patient_name,
            patient_name_fuzzy, patient_birth_date, patient_sex, attrs)
        WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {p})
        SELECT x, 1 + (x % 10 = 0), 'id:\\P' || x, 'P' || x, '',
            'FAM' || (x % 997) || '^GIVEN' || (x % 31),
            ' FAM' || (x % 997) || ' GIVEN' || (x % 31) || ' ', '19700101', 'O', '{{}}'
        FROM g""",
        f"""INSERT INTO study (pk, tenant_id, patient_pk, study_uid, study_date, study_time,
            accession_number, study_id, referring_physician_name, referring_physician_fuzzy,
            study_description, modalities, num_series, num_instances, attrs, created_at,
            updated_at)
        WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {s})
        SELECT x, 1 + ((1 + x % {p}) % 10 = 0), 1 + x % {p}, '1.2.826.0.1.' || x,
            strftime('%Y%m%d', '2000-01-01', '+' || (x * 7919 % 9000) || ' days'), '120000',
            'A' || x, 'S' || x, 'DOC' || (x % 101), ' DOC' || (x % 101) || ' ', 'desc',
            'CT\\MR', {k_se}, {k_se * k_in}, '{{}}', 0, 0
        FROM g""",
        f"""INSERT INTO series (pk, tenant_id, study_pk, series_uid, modality, series_number,
            num_instances, attrs, created_at)
        SELECT (s.pk - 1) * {k_se} + k.k, s.tenant_id, s.pk, s.study_uid || '.' || k.k,
            substr('CTMRUSPTMG', 1 + 2 * ((s.pk + k.k) % 5), 2), k.k, {k_in}, '{{}}', 0
        FROM study s, ({series_of(k_se)}) k ORDER BY s.pk, k.k""",
        f"""INSERT INTO instance (pk, tenant_id, series_pk, study_pk, sop_uid, sop_class_uid,
            instance_number, transfer_syntax_uid, blob_key, size, sha256, frames, bulk,
            created_at)
        SELECT (se.pk - 1) * {k_in} + k.k, se.tenant_id, se.pk, se.study_pk,
            se.series_uid || '.' || k.k, '1.2.840.10008.5.1.4.1.1.2', k.k,
            '1.2.840.10008.1.2.1', printf('%040d', (se.pk - 1) * {k_in} + k.k), 1, '', '[]',
            '{{}}', 0
        FROM series se, ({series_of(k_in)}) k ORDER BY se.pk, k.k""",
    ]
    for sql in stmts:
        t0 = time.perf_counter()
        conn.execute(sql)
        log(f"   {sql.split('(')[0].strip()}: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    for _, sql in ddl:
        conn.execute(sql)
    conn.execute("COMMIT")
    log(f"   {len(ddl)} indexes re-created: {time.perf_counter() - t0:.1f} s")
    conn.close()


# ------------------------------------------------------------------ server --
class Server:
    def __init__(self, bin_: str, data: Path, port: int, index: str | None):
        self.cmd = [bin_, "serve", "--data-dir", str(data), "--host", "127.0.0.1",
                    "--port", str(port), "--dimse-port", "0", "--no-access-log"]  # fmt: skip
        if index:
            self.cmd += ["--index", index]
        self.url = f"http://127.0.0.1:{port}/dicomweb"
        self.log = data.parent / f"{data.name}-serve.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        import httpx

        if not backends.port_free(int(self.url.split(":")[2].split("/")[0])):
            sys.exit(f"port of {self.url} is in use (use --port)")
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen(
                self.cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"dicomhub serve exited; see {self.log}")
            try:
                r = httpx.get(f"{self.url}/studies?limit=1", timeout=5)
                if r.status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.__exit__()
        sys.exit(f"dicomhub serve did not answer; see {self.log}")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# ------------------------------------------------------------------ the mix --
KINDS = [
    "by_patient_id",
    "by_name_wildcard",
    "by_name_fuzzy",
    "by_date_range",
    "by_modality",
    "by_accession",
    "studies_page",
    "series_of_study",
    "instances_of_series",
]


def sample_rows(fetch, n: int, seed: int) -> list[dict]:
    """n random tenant-1 studies with their patient and first series."""
    rng = random.Random(seed)
    rows = fetch(
        "SELECT s.pk, s.study_uid, s.study_date, s.accession_number, p.patient_id, "
        "p.patient_name, se.series_uid FROM study s JOIN patient p ON p.pk = s.patient_pk "
        "JOIN series se ON se.study_pk = s.pk AND se.series_number = 1 "
        "WHERE s.tenant_id = 1 ORDER BY s.pk LIMIT 20000"
    )
    keys = ["pk", "study_uid", "date", "acc", "pid", "name", "series_uid"]
    picked = rng.sample(rows, min(n, len(rows)))
    return [dict(zip(keys, r, strict=True)) for r in picked]


def build_mix(samples: list[dict], n_values: int) -> dict:
    years = sorted({s["date"][:4] for s in samples}) or ["2010"]
    mods = ["CT", "MR", "US", "PT", "MG"]
    ss = samples[:n_values]
    fam = [s["name"].split("^")[0] for s in ss]
    return {
        "by_patient_id": [("/studies", {"PatientID": s["pid"]}) for s in ss],
        "by_name_wildcard": [("/studies", {"PatientName": f + "*"}) for f in fam],
        "by_name_fuzzy": [
            ("/studies", {"PatientName": f.lower(), "fuzzymatching": "true"}) for f in fam
        ],
        "by_date_range": [
            ("/studies", {"StudyDate": f"{y}0101-{y}0630", "limit": "100"})
            for y in (years * n_values)[:n_values]
        ],
        "by_modality": [
            ("/studies", {"ModalitiesInStudy": m, "limit": "100"})
            for m in (mods * n_values)[:n_values]
        ],
        "by_accession": [("/studies", {"AccessionNumber": s["acc"]}) for s in ss],
        "studies_page": [
            ("/studies", {"limit": "25", "offset": str(10 * i)}) for i in range(n_values)
        ],
        "series_of_study": [(f"/studies/{s['study_uid']}/series", {}) for s in ss],
        "instances_of_series": [
            (f"/studies/{s['study_uid']}/series/{s['series_uid']}/instances", {}) for s in ss
        ],
    }


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def stats(lat_s: list[float]) -> dict:
    ms = [x * 1000 for x in lat_s]
    if not ms:
        return dict(n=0)
    return dict(
        n=len(ms),
        mean_ms=round(sum(ms) / len(ms), 3),
        **{f"p{p}_ms": round(pct(ms, p), 3) for p in (50, 95, 99)},
        max_ms=round(max(ms), 3),
    )


def time_mix(base: str, mix: dict, reps: int) -> dict:
    import httpx

    client = httpx.Client(timeout=120, headers={"Accept-Encoding": "identity"})
    hdr = {"Accept": "application/dicom+json"}

    def q(path, params):
        url = base + path + ("?" + urlencode(params, safe="*,") if params else "")
        t0 = time.perf_counter()
        r = client.get(url, headers=hdr)
        body = r.content
        d = time.perf_counter() - t0
        if r.status_code == 204 or not body.strip():
            return d, r.status_code, 0
        return d, r.status_code, len(json.loads(body)) if r.status_code == 200 else -1

    counts, errors = defaultdict(list), []
    for kind, qs in mix.items():  # warm-up and answer sizes
        for path, params in qs:
            _, st, n = q(path, params)
            counts[kind].append(n)
            if st not in (200, 204):
                errors.append(f"{kind} {path} {params} -> HTTP {st}")
    lat = defaultdict(list)
    by_value = defaultdict(list)  # (kind, value index) -> latencies
    t0 = time.perf_counter()
    for _ in range(reps):
        for kind, qs in mix.items():
            for i, (path, params) in enumerate(qs):
                d = q(path, params)[0]
                lat[kind].append(d)
                by_value[kind, i].append(d)
    wall = time.perf_counter() - t0
    client.close()

    def slowest(k):  # the value whose median latency is the highest
        med = {i: sorted(v)[len(v) // 2] for (kk, i), v in by_value.items() if kk == k}
        i = max(med, key=med.get)
        return dict(path=mix[k][i][0], params=mix[k][i][1], p50_ms=round(med[i] * 1000, 3))

    per = {
        k: dict(
            stats(lat[k]),
            results_mean=round(sum(counts[k]) / max(1, len(counts[k])), 1),
            example=dict(path=mix[k][0][0], params=mix[k][0][1]),
            slowest=slowest(k),
        )
        for k in mix
    }
    pooled = [x for v in lat.values() for x in v]
    return dict(
        per_query=per,
        overall=stats(pooled),
        queries=len(pooled),
        wall_s=round(wall, 2),
        errors=errors[:10],
        n_errors=len(errors),
    )


# ------------------------------------------------------------------ plans --
def compiled_query(path: str, params: dict):
    """The SQLAlchemy statement dicomhub builds for one QIDO request (tenant 1)."""
    from dicomhub.domain.query import Level
    from dicomhub.storage.index.queries import search_statement
    from dicomhub.web.dicomweb.qido_params import parse_query

    parts = path.strip("/").split("/")
    level = {1: Level.STUDY, 3: Level.SERIES, 5: Level.INSTANCE}[len(parts)]
    study = parts[1] if len(parts) > 1 else None
    series = parts[3] if len(parts) > 3 else None
    query = parse_query(list(params.items()), level=level, study_uid=study, series_uid=series)
    try:
        from dicomhub.services.search import _Plan  # what the server selects

        json_levels = _Plan(query).json_levels
    except Exception:
        json_levels = (Level.PATIENT, Level.STUDY)
    return search_statement(query, 1, json_levels)


def compiled_sql(path: str, params: dict, dialect: str) -> tuple[str, str, object]:
    """dicomhub's statement for one QIDO request: (literal SQL, SQL with bound parameters, params).

    The server binds its values (``?`` on SQLite, server-side parameters through psycopg 3 on
    PostgreSQL), which can change the plan, so the plans below are taken with bound values too.
    """
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg

    stmt = compiled_query(path, params)
    d = pg_psycopg.dialect() if dialect == "pg" else sqlite.dialect()
    literal = str(
        stmt.compile(dialect=d, compile_kwargs={"literal_binds": True, "render_postcompile": True})
    )
    c = stmt.compile(dialect=d, compile_kwargs={"render_postcompile": True})
    if dialect == "pg":
        return literal, str(c), dict(c.params)
    return literal, str(c), [c.params[k] for k in c.positiontup]


def pg_generic(conn, path: str, params: dict) -> tuple[float, str]:
    """Time and plan of the statement as a prepared statement forced onto its generic plan.

    psycopg 3 prepares a statement on the server after 5 executions of the same SQL text, and
    PostgreSQL may then switch to a generic plan (no parameter values known at planning): what
    a busy server runs can differ from the plan of one literal query.
    """
    from psycopg import sql as psql
    from sqlalchemy.dialects import postgresql

    literal_q = compiled_query(path, params)
    c = literal_q.compile(
        dialect=postgresql.dialect(paramstyle="numeric_dollar"),
        compile_kwargs={"render_postcompile": True},
    )
    vals = [c.params[k] for k in c.positiontup]
    args = ", ".join(psql.Literal(v).as_string(conn) for v in vals)
    conn.execute("DEALLOCATE ALL")
    conn.execute(f"PREPARE dh_bench AS {c}")
    conn.execute("SET plan_cache_mode = force_generic_plan")
    try:
        ts = []
        for _ in range(6):
            t0 = time.perf_counter()
            conn.execute(f"EXECUTE dh_bench({args})").fetchall()
            ts.append(time.perf_counter() - t0)
        plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE dh_bench({args})").fetchall()
    finally:
        conn.execute("RESET plan_cache_mode")
        conn.execute("DEALLOCATE dh_bench")
    return sorted(ts[1:])[len(ts[1:]) // 2] * 1000, "\n".join(r[0] for r in plan)


def sql_slowest(backend: str, qs: list, conn_info) -> tuple[tuple, float]:
    """The value of a kind whose SQL alone (values bound, custom plan) is the slowest."""
    import psycopg

    best, best_t = qs[0], -1.0
    c = (
        psycopg.connect(conn_info, autocommit=True, prepare_threshold=None)
        if backend == "pg"
        else sqlite3.connect(conn_info)
    )
    try:
        if backend != "pg":
            c.execute("PRAGMA case_sensitive_like=ON")
        for path, params in qs:
            _, sql, args = compiled_sql(path, params, backend)
            c.execute(sql, args).fetchall()  # warm
            t0 = time.perf_counter()
            c.execute(sql, args).fetchall()
            t = time.perf_counter() - t0
            if t > best_t:
                best, best_t = (path, params), t
    finally:
        c.close()
    return best, best_t * 1000


def explain_all(backend: str, per_query: dict, conn_info, mix: dict | None = None) -> dict:
    """Per kind: the SQL of its slowest value, in-database time (median of 5), plan.

    The slowest value is the one whose SQL alone takes longest (each value timed once, warm);
    without ``mix``, the one that was slowest over HTTP.
    """
    out = {}
    for kind, pq in per_query.items():
        path, params = pq["slowest"]["path"], pq["slowest"]["params"]
        if mix and kind in mix:
            try:
                (path, params), _ = sql_slowest(backend, mix[kind], conn_info)
            except Exception as e:
                log(f"   {kind}: could not time every value's SQL ({type(e).__name__}: {e})")
        try:
            literal, sql, args = compiled_sql(path, params, backend)
        except Exception as e:
            out[kind] = dict(error=f"{type(e).__name__}: {e}")
            continue
        try:
            ts, extra = [], {}
            if backend == "pg":
                import psycopg

                with psycopg.connect(conn_info, autocommit=True, prepare_threshold=None) as c:
                    for _ in range(6):
                        t0 = time.perf_counter()
                        c.execute(sql, args).fetchall()
                        ts.append(time.perf_counter() - t0)
                    plan = c.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, args).fetchall()
                    plan_txt = "\n".join(r[0] for r in plan)
                    try:
                        g_ms, g_plan = pg_generic(c, path, params)
                        extra = dict(generic_ms=round(g_ms, 3), generic_plan=g_plan)
                    except Exception as e:
                        extra = dict(generic_error=f"{type(e).__name__}: {e}")
            else:
                c = sqlite3.connect(conn_info)
                c.execute("PRAGMA case_sensitive_like=ON")  # as the server's connections
                for _ in range(6):
                    t0 = time.perf_counter()
                    c.execute(sql, args).fetchall()
                    ts.append(time.perf_counter() - t0)
                plan = c.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
                plan_txt = "\n".join(f"{r[0]}|{r[1]}| {r[3]}" for r in plan)
                c.close()
            out[kind] = dict(
                path=path,
                params=params,
                sql=literal,
                db_ms=round(sorted(ts[1:])[len(ts[1:]) // 2] * 1000, 3),
                plan=plan_txt,
                **extra,
            )
        except Exception as e:
            out[kind] = dict(sql=literal, error=f"{type(e).__name__}: {e}")
    return out


# ------------------------------------------------------------------ driver --
def run_backend(backend: str, a, z: dict) -> dict:
    work = a.work / backend
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    data.mkdir(parents=True)
    t0 = time.perf_counter()
    index_url = None
    if backend == "pg":
        bwork = a.work / "backends"
        state = backends.load(bwork)
        if not (state.get("pg") and backends.pg_alive(state["pg"])):
            backends.pg_start(bwork, state)
        index_url = backends.createdb(state, "dicomhub_scale")
    up = [a.dicomhub_bin, "db", "upgrade", "--data-dir", str(data)]
    if index_url:
        up += ["--index", index_url]
    subprocess.run(up, check=True, capture_output=True)
    log(f"{backend}: generating {z['instances']:,} instances ({z['studies']:,} studies)")
    if backend == "pg":
        pg_generate(index_url.replace("postgresql://", "postgresql://", 1), z)
    else:
        sqlite_generate(data / "index.db", z)
    subprocess.run(up, check=True, capture_output=True)  # SQLite: re-installs planner_stats
    gen_s = round(time.perf_counter() - t0, 1)
    log(f"{backend}: index ready in {gen_s} s")

    if backend == "pg":
        import psycopg

        def fetch(sql):
            with psycopg.connect(index_url) as c:
                return c.execute(sql).fetchall()

        size = fetch("SELECT pg_database_size(current_database())")[0][0]
    else:

        def fetch(sql):
            c = sqlite3.connect(data / "index.db")
            try:
                return c.execute(sql).fetchall()
            finally:
                c.close()

        size = (data / "index.db").stat().st_size
    mix = build_mix(sample_rows(fetch, a.values, a.seed), a.values)
    with Server(a.dicomhub_bin, data, a.port, index_url) as srv:
        log(f"{backend}: timing the QIDO mix ({len(mix)} kinds x {a.values} values x {a.reps})")
        load_before = os.getloadavg()[0]
        res = time_mix(srv.url, mix, a.reps)
        res["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    plans = explain_all(backend, res["per_query"], index_url or str(data / "index.db"), mix)
    res.update(
        backend=backend,
        index_url=index_url or f"sqlite:///{data / 'index.db'}",
        generate_s=gen_s,
        index_bytes=size,
        plans=plans,
    )
    o = res["overall"]
    log(f"{backend}: pooled p50 {o.get('p50_ms')} ms, p95 {o.get('p95_ms')} ms")
    for k, v in res["per_query"].items():
        flag = "  <-- over budget" if (v.get("p95_ms") or 0) >= BUDGET_MS else ""
        g = plans.get(k, {}).get("generic_ms")
        generic = f" (generic plan {g} ms)" if g is not None else ""
        log(
            f"   {k:20s} p50 {v.get('p50_ms'):8.2f}  p95 {v.get('p95_ms'):8.2f}  "
            f"slowest value over HTTP p50 {v['slowest']['p50_ms']} ms; "
            f"slowest SQL alone {plans.get(k, {}).get('db_ms', '-')} ms"
            f"{generic}  results {v['results_mean']}{flag}"
        )
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--backends", default="sqlite,pg", help="sqlite,pg")
    ap.add_argument("--work", type=Path, default=BENCH / "work" / "scale")
    ap.add_argument("--out", type=Path, required=True, help="raw JSON to write")
    ap.add_argument("--port", type=int, default=int(os.environ.get("BENCH_SCALE_HTTP", 8090)))
    ap.add_argument("--values", type=int, default=10)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the generated index")
    ap.add_argument("--keep-pg", action="store_true", help="leave the PostgreSQL cluster running")
    ap.add_argument(
        "--dicomhub-bin",
        default=os.environ.get("DICOMHUB_BIN", str(REPO / ".venv" / "bin" / "dicomhub")),
    )
    a = ap.parse_args(argv)
    a.work = a.work.resolve()
    z = sizes(a.instances)
    res = dict(
        bench="index_scale",
        started=dt.datetime.now().isoformat(timespec="seconds"),
        sizes=z,
        budget_ms=BUDGET_MS,
        host=dict(platform=platform.platform(), cpus=os.cpu_count()),
        reps=a.reps,
        values=a.values,
        backends={},
    )
    t0 = time.perf_counter()
    try:
        for b in [x.strip() for x in a.backends.split(",") if x.strip()]:
            if b not in ("sqlite", "pg"):
                sys.exit(f"unknown backend {b}")
            res["backends"][b] = run_backend(b, a, z)
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(res, indent=1))
    finally:
        if not a.keep_pg:
            bwork = a.work / "backends"
            state = backends.load(bwork)
            if state.get("pg"):
                backends.pg_stop(state)
                backends.save(bwork, state)
    res["elapsed_s"] = round(time.perf_counter() - t0, 1)
    a.out.write_text(json.dumps(res, indent=1))
    log(f"wrote {a.out} in {res['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
