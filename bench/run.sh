#!/usr/bin/env bash
# dicomhub benchmark: Orthanc (reference) then dicomhub, same corpus, same client, same run,
# then bench/report.py -> RESULTS.md.  See bench/README.md.
#
#   bench/run.sh                      full run (both targets, all phases, 2 repeats) -> bench/RESULTS.md
#   bench/run.sh --quick              smoke run (small corpus, 1 repeat) -> bench/results/raw/RESULTS-quick.md
#
# Options:
#   --quick                  small corpus (300 CT + 2 multi-frame; 5k tiny), 1 repeat, fewer QIDO reps
#   --only-orthanc | --only-dicomhub   run one target; the report takes the other side from the newest
#                            raw JSON of the same mode (quick/full) in bench/results/raw/, if any
#   --phases LIST            run_all phases to run: ingest,storage,qido,wado,render,baseline,large
#                            (default: all but baseline)
#   --skip LIST              phases to leave out
#   --repeats N              repeats per phase (default 2, --quick 1)
#   --dimse auto|on|off      DIMSE (C-STORE / C-FIND) cases: auto = probe with C-ECHO first (default)
#   --render auto|on|off     /rendered phase: auto = probe one instance first (default)
#   --report-out FILE        where report.py writes (default bench/RESULTS.md, --quick: results/raw/RESULTS-quick.md)
#   --no-report              do not run report.py
#   --no-install             do not apt-get / pip install anything (fail if missing)
# Environment: DICOMHUB_BIN (server executable; default <repo>/.venv/bin/dicomhub), DICOMHUB_BENCH_HTTP (8080),
#   DICOMHUB_BENCH_DIMSE (11112), DICOMHUB_BENCH_ARGS, ORTHANC_HTTP_PORT (8042), ORTHANC_DICOM_PORT (4242),
#   BENCH_HARNESS (default <repo>/../shared/bench), BENCH_VENV (default bench/work/venv), BENCH_PYTHON (python3).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
HARNESS="$(cd "${BENCH_HARNESS:-$REPO/../shared/bench}" 2>/dev/null && pwd)" || {
  echo "benchmark harness not found at ${BENCH_HARNESS:-$REPO/../shared/bench}" >&2; exit 1; }
VENV="${BENCH_VENV:-$BENCH/work/venv}"
RAW="$BENCH/results/raw"
WORK="$BENCH/work"

QUICK=0; TARGETS="orthanc dicomhub"; PHASES=""; SKIP=""; REPEATS=""; DIMSE=auto; RENDER=auto
REPORT=1; REPORT_OUT=""; INSTALL=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only-orthanc) TARGETS="orthanc" ;;
    --only-dicomhub) TARGETS="dicomhub" ;;
    --phases|--only) PHASES="$2"; shift ;;
    --skip) SKIP="$2"; shift ;;
    --repeats) REPEATS="$2"; shift ;;
    --dimse) DIMSE="$2"; shift ;;
    --render) RENDER="$2"; shift ;;
    --report-out) REPORT_OUT="$2"; shift ;;
    --no-report) REPORT=0 ;;
    --no-install) INSTALL=0 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[$(date +%H:%M:%S)] run.sh: $*"; }

if (( QUICK )); then
  MODE=quick
  MAIN_CORPUS="$BENCH/corpus/quick-main"; MAIN_ARGS="--instances 300 --patients 3 --multiframe 2"
  TINY_CORPUS="$BENCH/corpus/quick-tiny"; TINY_ARGS="--tiny --instances 5000"
  REPEATS="${REPEATS:-1}"; QIDO_REPS=3
  REPORT_OUT="${REPORT_OUT:-$RAW/RESULTS-quick.md}"
else
  MODE=full
  MAIN_CORPUS="$BENCH/corpus/main"; MAIN_ARGS="--instances 2000"
  TINY_CORPUS="$BENCH/corpus/tiny"; TINY_ARGS="--tiny --instances 50000"
  REPEATS="${REPEATS:-2}"; QIDO_REPS=5
  REPORT_OUT="${REPORT_OUT:-$BENCH/RESULTS.md}"
fi
if [[ -z "$PHASES" ]]; then PHASES="ingest,storage,qido,wado,render,large"; fi
if [[ -n "$SKIP" ]]; then
  PHASES="$(tr ',' '\n' <<<"$PHASES" | grep -vxF -f <(tr ',' '\n' <<<"$SKIP") | paste -sd, -)" || true
fi
[[ -n "$PHASES" ]] || { echo "no phase left to run" >&2; exit 2; }

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
log "corpus $MAIN_CORPUS ($MAIN_ARGS)"
# shellcheck disable=SC2086
"$PY" "$HARNESS/gen_corpus.py" --out "$MAIN_CORPUS" $MAIN_ARGS
if [[ ",$PHASES," == *",large,"* ]]; then
  log "corpus $TINY_CORPUS ($TINY_ARGS)"
  # shellcheck disable=SC2086
  "$PY" "$HARNESS/gen_corpus.py" --out "$TINY_CORPUS" $TINY_ARGS
fi

# ------------------------------------------------------------------ targets --
port_owner() { ss -Hltnp "sport = :$1" 2>/dev/null | head -1; }
STAMP_TS="$(date +%Y%m%d-%H%M%S)"
declare -A OUT
COMMON=(--corpus "$MAIN_CORPUS" --corpus-args "$MAIN_ARGS" --tiny-corpus "$TINY_CORPUS" --tiny-args "$TINY_ARGS"
        --repeats "$REPEATS" --qido-reps "$QIDO_REPS" --only "$PHASES")
FAILED=()

run_target() {  # name, stop command, version command, run_all target args...
  local name="$1" stopcmd="$2" vercmd="$3"; shift 3
  local out="$RAW/$name-$MODE-$STAMP_TS.json"
  log "=== $name: phases $PHASES, $REPEATS repeat(s) -> $out"
  local t0=$SECONDS rc=0
  "$PY" "$BENCH/harness_run.py" --harness "$HARNESS" --dimse "$DIMSE" --render "$RENDER" \
      --version-cmd "$vercmd" -- \
      "$@" "${COMMON[@]}" --out "$out" 2>&1 | tee "${out%.json}.log" || rc=$?
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
      run_target orthanc "$OCTL stop" "Orthanc --version" --target-file "$HARNESS/targets/orthanc/target.json" \
        --base-url "http://127.0.0.1:$OHTTP/dicom-web" --native-url "http://127.0.0.1:$OHTTP" \
        --port "$ODIMSE" --storage-dir "$ORTHANC_WORKDIR/storage"
      ;;
    dicomhub)
      export DICOMHUB_BENCH_DIR="${DICOMHUB_BENCH_DIR:-$WORK/dicomhub}"
      DHTTP="${DICOMHUB_BENCH_HTTP:-8080}"; DDIMSE="${DICOMHUB_BENCH_DIMSE:-11112}"
      DH_BIN="${DICOMHUB_BIN:-$REPO/.venv/bin/dicomhub}"
      [[ -x "$DH_BIN" ]] || DH_BIN="$(command -v dicomhub || echo "$DH_BIN")"
      export DICOMHUB_BIN="$DH_BIN"
      if ! "$BENCH/dicomhub_ctl.sh" start; then
        echo "dicomhub did not start (see $DICOMHUB_BENCH_DIR/dicomhub.log)" >&2; FAILED+=(dicomhub); continue
      fi
      run_target dicomhub "$BENCH/dicomhub_ctl.sh stop" "$DH_BIN --version" --target-file "$BENCH/targets/dicomhub.json" \
        --base-url "http://127.0.0.1:$DHTTP/dicomweb" --port "$DDIMSE" --storage-dir "$DICOMHUB_BENCH_DIR/data"
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
  log "report -> $REPORT_OUT"
  "$PY" "$BENCH/report.py" "${args[@]}"
fi
if (( ${#FAILED[@]} )); then log "FAILED: ${FAILED[*]}"; exit 1; fi
log "done"
