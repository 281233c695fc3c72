#!/usr/bin/env bash
# dicomhub benchmark: Orthanc (reference) then dicomhub (embedded, then PostgreSQL + S3), same corpus,
# same client, same run; then the 1M-instance QIDO index-scale bench; then bench/report.py -> RESULTS.md.
# See bench/README.md.
#
#   bench/run.sh                      full run (all of it, 2 repeats) -> bench/RESULTS.md
#   bench/run.sh --quick              smoke run (small corpus, 1 repeat, 100k-instance index scale)
#                                     -> bench/results/raw/RESULTS-quick.md
#
# Options:
#   --quick                  small corpus (300 CT + 2 multi-frame; 5k tiny), 1 repeat, fewer QIDO reps
#   --only-orthanc | --only-dicomhub   run one side; the report takes the other side from the newest
#                            raw JSON of the same mode (quick/full) in bench/results/raw/, if any
#   --backends LIST          dicomhub backend sets: embedded,pg+s3 (default both); --backend X = one
#   --pgs3-phases LIST       phases of the pg+s3 run (default ingest,storage,qido,wado)
#   --pgs3-dimse auto|on|off DIMSE cases (C-STORE ingest, C-FIND) of the pg+s3 run (default off: STOW is the bar)
#   --index-scale on|off|only  the 1M-instance QIDO bench on SQLite and PostgreSQL (default on)
#   --scale-instances N      its index size (default 1000000, --quick 100000)
#   --phases LIST            run_all phases to run: ingest,storage,qido,wado,render,baseline,large
#                            (default: all but baseline)
#   --skip LIST              phases to leave out
#   --repeats N              repeats per phase (default 2, --quick 1)
#   --dimse auto|on|off      DIMSE (C-STORE / C-FIND) cases: auto = probe with C-ECHO first (default)
#   --render auto|on|off     /rendered phase: auto = probe one instance first (default)
#   --allframes N            multi-frame instances for the all-frames PNG render cases (default 4; 0 = off)
#   --report-out FILE        where report.py writes (default bench/RESULTS.md, --quick: results/raw/RESULTS-quick.md)
#   --no-report              do not run report.py
#   --no-install             do not apt-get / pip install anything (fail if missing)
# Environment: DICOMHUB_BIN (server executable; default <repo>/.venv/bin/dicomhub), DICOMHUB_BENCH_HTTP (8080),
#   DICOMHUB_BENCH_DIMSE (11112), DICOMHUB_BENCH_ARGS, ORTHANC_HTTP_PORT (8042), ORTHANC_DICOM_PORT (4242),
#   BENCH_SCALE_HTTP (8090), BENCH_HARNESS (default <repo>/../shared/bench), BENCH_VENV (default bench/work/venv),
#   BENCH_PYTHON (python3), BENCH_WEED_GOMEMLIMIT (1GiB).
set -euo pipefail
export BENCH_RUN_ARGS="$*"

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
HARNESS="$(cd "${BENCH_HARNESS:-$REPO/../shared/bench}" 2>/dev/null && pwd)" || {
  echo "benchmark harness not found at ${BENCH_HARNESS:-$REPO/../shared/bench}" >&2; exit 1; }
VENV="${BENCH_VENV:-$BENCH/work/venv}"
RAW="$BENCH/results/raw"
WORK="$BENCH/work"

QUICK=0; SIDES="orthanc dicomhub"; PHASES=""; SKIP=""; REPEATS=""; DIMSE=auto; RENDER=auto
REPORT=1; REPORT_OUT=""; INSTALL=1; BACKENDS="embedded,pg+s3"; PGS3_PHASES="ingest,storage,qido,wado"
SCALE=on; SCALE_N=""; ALLFRAMES=4; PGS3_DIMSE=off
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only-orthanc) SIDES="orthanc"; SCALE=off ;;
    --only-dicomhub) SIDES="dicomhub" ;;
    --backends|--backend) BACKENDS="$2"; shift ;;
    --pgs3-phases) PGS3_PHASES="$2"; shift ;;
    --pgs3-dimse) PGS3_DIMSE="$2"; shift ;;
    --index-scale) SCALE="$2"; shift ;;
    --scale-instances) SCALE_N="$2"; shift ;;
    --allframes) ALLFRAMES="$2"; shift ;;
    --phases|--only) PHASES="$2"; shift ;;
    --skip) SKIP="$2"; shift ;;
    --repeats) REPEATS="$2"; shift ;;
    --dimse) DIMSE="$2"; shift ;;
    --render) RENDER="$2"; shift ;;
    --report-out) REPORT_OUT="$2"; shift ;;
    --no-report) REPORT=0 ;;
    --no-install) INSTALL=0 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[$(date +%H:%M:%S)] run.sh: $*"; }

if (( QUICK )); then
  MODE=quick
  MAIN_CORPUS="$BENCH/corpus/quick-main"; MAIN_ARGS="--instances 300 --patients 3 --multiframe 2"
  TINY_CORPUS="$BENCH/corpus/quick-tiny"; TINY_ARGS="--tiny --instances 5000"
  REPEATS="${REPEATS:-1}"; QIDO_REPS=3; SCALE_N="${SCALE_N:-100000}"
  REPORT_OUT="${REPORT_OUT:-$RAW/RESULTS-quick.md}"
else
  MODE=full
  MAIN_CORPUS="$BENCH/corpus/main"; MAIN_ARGS="--instances 2000"
  TINY_CORPUS="$BENCH/corpus/tiny"; TINY_ARGS="--tiny --instances 50000"
  REPEATS="${REPEATS:-2}"; QIDO_REPS=5; SCALE_N="${SCALE_N:-1000000}"
  REPORT_OUT="${REPORT_OUT:-$BENCH/RESULTS.md}"
fi
if [[ -z "$PHASES" ]]; then PHASES="ingest,storage,qido,wado,render,large"; fi
if [[ -n "$SKIP" ]]; then
  PHASES="$(tr ',' '\n' <<<"$PHASES" | grep -vxF -f <(tr ',' '\n' <<<"$SKIP") | paste -sd, -)" || true
fi
[[ -n "$PHASES" ]] || { echo "no phase left to run" >&2; exit 2; }
case "$SCALE" in on|off|only) ;; *) echo "--index-scale on|off|only" >&2; exit 2 ;; esac
TARGETS=""
if [[ "$SCALE" != only ]]; then
  for side in $SIDES; do
    if [[ "$side" == orthanc ]]; then TARGETS+=" orthanc"; continue; fi
    for b in ${BACKENDS//,/ }; do
      case "$b" in
        embedded|sqlite) TARGETS+=" dicomhub" ;;
        pg+s3|pgs3|pg) TARGETS+=" dicomhub-pgs3" ;;
        *) echo "unknown backend $b (embedded, pg+s3)" >&2; exit 2 ;;
      esac
    done
  done
fi
[[ "$SCALE" == off ]] || TARGETS+=" index-scale"

# ------------------------------------------------------------------ system packages --
need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v storescu >/dev/null || need_apt+=(dcmtk)
if [[ " $TARGETS " == *" orthanc "* ]]; then
  command -v Orthanc >/dev/null || need_apt+=(orthanc)
  ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so /usr/lib/orthanc/libOrthancDicomWeb.so* >/dev/null 2>&1 \
    || need_apt+=(orthanc-dicomweb)
  command -v gcc >/dev/null || need_apt+=(gcc)   # orthanc_ctl.sh compiles its bind() shim
fi
if (( ${#need_apt[@]} )); then
  (( INSTALL )) || { echo "missing packages: ${need_apt[*]}" >&2; exit 1; }
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# ------------------------------------------------------------------ python venv --
REQ="$HARNESS/requirements.txt"
STAMP="$VENV/.bench-requirements"
if [[ ! -x "$VENV/bin/python" ]]; then
  (( INSTALL )) || { echo "no venv at $VENV" >&2; exit 1; }
  log "creating venv $VENV"
  "${BENCH_PYTHON:-python3}" -m venv "$VENV"
fi
if ! cmp -s "$REQ" "$STAMP"; then
  (( INSTALL )) || { echo "venv $VENV lacks $REQ" >&2; exit 1; }
  log "pip install -r $REQ"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$STAMP"
fi
PY="$VENV/bin/python"
export PYTHONDONTWRITEBYTECODE=1   # the shared harness folder is read-only

# ------------------------------------------------------------------ corpus (once) --
mkdir -p "$RAW" "$WORK" "$BENCH/corpus"
if [[ "$SCALE" != only ]]; then
  log "corpus $MAIN_CORPUS ($MAIN_ARGS)"
  # shellcheck disable=SC2086
  "$PY" "$HARNESS/gen_corpus.py" --out "$MAIN_CORPUS" $MAIN_ARGS
fi
if [[ "$SCALE" != only && ",$PHASES," == *",large,"* ]]; then
  log "corpus $TINY_CORPUS ($TINY_ARGS)"
  # shellcheck disable=SC2086
  "$PY" "$HARNESS/gen_corpus.py" --out "$TINY_CORPUS" $TINY_ARGS
fi

# ------------------------------------------------------------------ targets --
port_owner() { ss -Hltnp "sport = :$1" 2>/dev/null | head -1; }
STAMP_TS="$(date +%Y%m%d-%H%M%S)"
declare -A OUT
COMMON=(--corpus "$MAIN_CORPUS" --corpus-args "$MAIN_ARGS" --tiny-corpus "$TINY_CORPUS" --tiny-args "$TINY_ARGS"
        --repeats "$REPEATS" --qido-reps "$QIDO_REPS")
FAILED=()
DH_BIN="${DICOMHUB_BIN:-$REPO/.venv/bin/dicomhub}"
[[ -x "$DH_BIN" ]] || DH_BIN="$(command -v dicomhub || echo "$DH_BIN")"
export DICOMHUB_BIN="$DH_BIN"
PROJ_PY="$(dirname "$DH_BIN")/python"   # the project's venv: psycopg, boto3, weed, dicomhub itself
EMBEDDED_DIR="${DICOMHUB_BENCH_DIR:-$WORK/dicomhub}"
BACKENDS_UP=0
cleanup() {
  if (( BACKENDS_UP )); then
    "$BENCH/dicomhub_ctl.sh" stop >/dev/null 2>&1 || true
    "$PROJ_PY" "$BENCH/backends.py" stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

run_target() {  # name, phases, stop command, version command, run_all target args...
  local name="$1" phases="$2" stopcmd="$3" vercmd="$4"; shift 4
  local out="$RAW/$name-$MODE-$STAMP_TS.json"
  log "=== $name: phases $phases, $REPEATS repeat(s) -> $out"
  local t0=$SECONDS rc=0
  "$PY" "$BENCH/harness_run.py" --harness "$HARNESS" --dimse "${TDIMSE:-$DIMSE}" --render "$RENDER" \
      --allframes "$ALLFRAMES" --backend-label "$name" --version-cmd "$vercmd" -- \
      "$@" "${COMMON[@]}" --only "$phases" --out "$out" 2>&1 | tee "${out%.json}.log" || rc=$?
  log "=== $name finished in $((SECONDS - t0)) s (exit $rc); stopping the server"
  $stopcmd >/dev/null 2>&1 || true
  if (( rc == 0 )) && [[ -f "$out" ]]; then OUT[$name]="$out"; else FAILED+=("$name"); fi
}

for tgt in $TARGETS; do
  case "$tgt" in
    orthanc)
      export ORTHANC_WORKDIR="${ORTHANC_WORKDIR:-$WORK/orthanc}"
      OCTL="$HARNESS/targets/orthanc/orthanc_ctl.sh"
      OHTTP="${ORTHANC_HTTP_PORT:-8042}"; ODIMSE="${ORTHANC_DICOM_PORT:-4242}"
      if ! "$OCTL" status >/dev/null 2>&1; then
        for p in "$OHTTP" "$ODIMSE"; do
          if [[ -n "$(port_owner "$p")" ]]; then
            echo "port $p is used by another process: $(port_owner "$p"); set ORTHANC_HTTP_PORT/ORTHANC_DICOM_PORT" >&2
            exit 1
          fi
        done
      fi
      run_target orthanc "$PHASES" "$OCTL stop" "Orthanc --version" --target-file "$HARNESS/targets/orthanc/target.json" \
        --base-url "http://127.0.0.1:$OHTTP/dicom-web" --native-url "http://127.0.0.1:$OHTTP" \
        --port "$ODIMSE" --storage-dir "$ORTHANC_WORKDIR/storage"
      ;;
    dicomhub|dicomhub-pgs3)
      DHTTP="${DICOMHUB_BENCH_HTTP:-8080}"; DDIMSE="${DICOMHUB_BENCH_DIMSE:-11112}"
      phases="$PHASES"; storage=""; TDIMSE="$DIMSE"
      if [[ "$tgt" == dicomhub ]]; then
        export DICOMHUB_BENCH_DIR="$EMBEDDED_DIR"
        unset DICOMHUB_BENCH_INDEX DICOMHUB_BENCH_BLOBS DICOMHUB_BENCH_RESET_HOOK
        storage="$DICOMHUB_BENCH_DIR/data"
      else
        # throw-away PostgreSQL cluster + SeaweedFS (weed mini) in bench/work/backends (backends.py)
        export DICOMHUB_BENCH_DIR="$WORK/dicomhub-pgs3"
        phases="$(tr ',' '\n' <<<"$PGS3_PHASES" | grep -xF -f <(tr ',' '\n' <<<"$PHASES") | paste -sd, -)" || true
        if [[ -z "$phases" ]]; then log "skipping $tgt: none of --pgs3-phases is in --phases"; continue; fi
        log "starting PostgreSQL + SeaweedFS for $tgt (phases $phases)"
        if ! benv="$("$PROJ_PY" "$BENCH/backends.py" start)"; then FAILED+=("$tgt"); continue; fi
        eval "$benv"   # DICOMHUB_BENCH_INDEX, DICOMHUB_BENCH_BLOBS, DICOMHUB_S3_*, BENCH_S3_DATA_DIR
        BACKENDS_UP=1
        export DICOMHUB_BENCH_RESET_HOOK="$PROJ_PY $BENCH/backends.py reset"
        storage="$BENCH_S3_DATA_DIR"; TDIMSE="$PGS3_DIMSE"
      fi
      if ! "$BENCH/dicomhub_ctl.sh" reset; then
        echo "dicomhub did not start (see $DICOMHUB_BENCH_DIR/dicomhub.log)" >&2; FAILED+=("$tgt"); continue
      fi
      run_target "$tgt" "$phases" "$BENCH/dicomhub_ctl.sh stop" "$DH_BIN --version" \
        --target-file "$BENCH/targets/dicomhub.json" --name "$tgt" \
        --base-url "http://127.0.0.1:$DHTTP/dicomweb" --port "$DDIMSE" --storage-dir "$storage"
      TDIMSE=""
      if [[ "$tgt" == dicomhub-pgs3 ]]; then
        "$PROJ_PY" "$BENCH/backends.py" stop || true; BACKENDS_UP=0
        unset DICOMHUB_BENCH_INDEX DICOMHUB_BENCH_BLOBS DICOMHUB_BENCH_RESET_HOOK
      fi
      ;;
    index-scale)
      out="$RAW/index-scale-$MODE-$STAMP_TS.json"
      log "=== index-scale: QIDO mix at $SCALE_N instances on SQLite and PostgreSQL -> $out"
      t0=$SECONDS
      if "$PROJ_PY" "$BENCH/index_scale.py" --instances "$SCALE_N" --out "$out" 2>&1 | tee "${out%.json}.log"; then
        OUT[index-scale]="$out"
      else
        FAILED+=(index-scale)
      fi
      log "=== index-scale finished in $((SECONDS - t0)) s"
      ;;
    *) echo "unknown target $tgt" >&2; exit 2 ;;
  esac
done

# ------------------------------------------------------------------ report --
if (( REPORT )) && (( ${#FAILED[@]} )); then
  log "not writing the report: ${FAILED[*]} failed in this run (an older raw result would be used instead)"
elif (( REPORT )); then
  args=(--mode "$MODE" --raw-dir "$RAW" --out "$REPORT_OUT")
  [[ -n "${OUT[orthanc]:-}" ]] && args+=(--orthanc "${OUT[orthanc]}")
  [[ -n "${OUT[dicomhub]:-}" ]] && args+=(--dicomhub "${OUT[dicomhub]}")
  [[ -n "${OUT[dicomhub-pgs3]:-}" ]] && args+=(--pgs3 "${OUT[dicomhub-pgs3]}")
  [[ -n "${OUT[index-scale]:-}" ]] && args+=(--scale "${OUT[index-scale]}")
  log "report -> $REPORT_OUT"
  "$PY" "$BENCH/report.py" "${args[@]}"
fi
if (( ${#FAILED[@]} )); then log "FAILED: ${FAILED[*]}"; exit 1; fi
log "done"
