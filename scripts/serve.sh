#!/usr/bin/env bash
# Install dicomhub and start it on the embedded default (SQLite + filesystem in ./dicomhub-data).
# Then open http://127.0.0.1:8080/ in a browser. Extra arguments go to `dicomhub serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/dicomhub serve "$@"
