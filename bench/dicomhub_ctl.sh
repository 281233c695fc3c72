#!/usr/bin/env bash
# Start / stop / reset a throw-away dicomhub server for the benchmark harness
# (adapted from ../shared/bench/targets/dicomhub/dicomhub_ctl.sh).
#
#   dicomhub_ctl.sh start | stop | reset | status | pid | info
#
# Environment (all optional):
#   DICOMHUB_BIN          executable (default: <repo>/.venv/bin/dicomhub, else `dicomhub` on PATH)
#   DICOMHUB_BENCH_DIR    work dir: data, log, pid file (default <repo>/bench/work/dicomhub)
#   DICOMHUB_BENCH_HTTP   HTTP port (8080)      DICOMHUB_BENCH_DIMSE  DIMSE port (11112)
#   DICOMHUB_BENCH_ARGS   extra `serve` arguments (default "--no-access-log", like Orthanc which does not log
#                         each request; set it to "" to keep the access log, or e.g. "--index ... --blobs ...")
#   DICOMHUB_START_TIMEOUT seconds to wait for the server to answer (60)
#   DICOMHUB_BENCH_INDEX / DICOMHUB_BENCH_BLOBS  index and blob store URLs (default: SQLite and files in
#                         the data dir); exported as DICOMHUB_INDEX / DICOMHUB_BLOBS for `serve` and `ae add`
#                         (S3 settings come from DICOMHUB_S3_* in the environment)
#   DICOMHUB_BENCH_RESET_HOOK  command run by `reset` between stop and start, to empty an external index
#                         and blob store (run.sh --backends pg+s3 sets it to `backends.py reset`)
#
# Only the PID recorded in $DICOMHUB_BENCH_DIR/dicomhub.pid is ever signalled, and only if its command
# line still names our data dir.  `start` refuses to run when something else already listens on the
# HTTP port (otherwise the readiness check would be answered by that other server).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
if [[ -z "${DICOMHUB_BIN:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/dicomhub" ]]; then DICOMHUB_BIN="$REPO/.venv/bin/dicomhub"; else DICOMHUB_BIN=dicomhub; fi
fi
BIN="$DICOMHUB_BIN"
DIR="${DICOMHUB_BENCH_DIR:-$HERE/work/dicomhub}"
HTTP="${DICOMHUB_BENCH_HTTP:-8080}"
DIMSE="${DICOMHUB_BENCH_DIMSE:-11112}"
TIMEOUT="${DICOMHUB_START_TIMEOUT:-60}"
PIDFILE="$DIR/dicomhub.pid"
DATA="$DIR/data"
URL="http://127.0.0.1:$HTTP/dicomweb"
if [[ -n "${DICOMHUB_BENCH_INDEX:-}" ]]; then export DICOMHUB_INDEX="$DICOMHUB_BENCH_INDEX"; fi
if [[ -n "${DICOMHUB_BENCH_BLOBS:-}" ]]; then export DICOMHUB_BLOBS="$DICOMHUB_BENCH_BLOBS"; fi

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  grep -q -- "$DATA" "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

start() {
  if pid="$(running_pid)"; then echo "already running pid=$pid"; return 0; fi
  command -v "$BIN" >/dev/null 2>&1 || { echo "dicomhub executable not found: $BIN (set DICOMHUB_BIN)" >&2; return 1; }
  if port_busy "$HTTP"; then
    echo "port $HTTP is already in use by another process; set DICOMHUB_BENCH_HTTP" >&2
    ss -Hltnp "sport = :$HTTP" >&2 || true
    return 1
  fi
  mkdir -p "$DIR"
  # shellcheck disable=SC2086
  nohup "$BIN" serve --data-dir "$DATA" --host 127.0.0.1 --port "$HTTP" --dimse-port "$DIMSE" \
    ${DICOMHUB_BENCH_ARGS---no-access-log} >>"$DIR/dicomhub.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local t0=$SECONDS code
  while (( SECONDS - t0 < TIMEOUT )); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/dicom+json' "$URL/studies?limit=1" || true)
    if [[ "$code" != "000" && "$code" -lt 500 ]]; then
      # the C-STORE bench calls as BENCHSCU: register it where dicomhub knows AEs (ignored if not supported yet)
      timeout 20 "$BIN" ae add BENCHSCU --host 127.0.0.1 --port 104 --data-dir "$DATA" >/dev/null 2>&1 || true
      echo "started pid=$(cat "$PIDFILE") http=$URL dimse=127.0.0.1:$DIMSE (QIDO answered $code)"
      return 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "dicomhub exited; last lines of $DIR/dicomhub.log:" >&2; tail -20 "$DIR/dicomhub.log" >&2; return 1
    fi
    sleep 0.2
  done
  echo "dicomhub did not answer on $URL within ${TIMEOUT}s (last HTTP code $code)" >&2
  tail -20 "$DIR/dicomhub.log" >&2
  return 1
}

stop() {
  local pid
  if pid="$(running_pid)"; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    echo "stopped pid=$pid"
  else
    echo "not running"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  reset)
    stop; rm -rf "$DATA"
    if [[ -n "${DICOMHUB_BENCH_RESET_HOOK:-}" ]]; then
      # shellcheck disable=SC2086
      $DICOMHUB_BENCH_RESET_HOOK >&2 || { echo "reset hook failed: $DICOMHUB_BENCH_RESET_HOOK" >&2; exit 1; }
    fi
    start ;;
  status) if pid="$(running_pid)"; then echo "running pid=$pid"; else echo "not running"; exit 1; fi ;;
  pid) running_pid || true ;;
  info) echo "bin=$BIN data=$DATA log=$DIR/dicomhub.log dicomweb=$URL dimse=127.0.0.1:$DIMSE" ;;
  *) echo "usage: $0 start|stop|reset|status|pid|info" >&2; exit 2 ;;
esac
