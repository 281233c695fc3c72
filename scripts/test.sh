#!/usr/bin/env bash
# Install what the tests need, then run lint, format check, type check and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
export PATH="$(pwd)/.venv/bin:$PATH"
echo "== ruff check";   ruff check src tests bench
echo "== ruff format";  ruff format --check src tests bench
echo "== mypy";         mypy
echo "== pytest";       pytest -q -p no:cacheprovider "$@"
