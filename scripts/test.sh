#!/usr/bin/env bash
# Install what the tests need, then run lint, format check, type check and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
# The venv's tools are called by path, not put first on PATH: pynetdicom installs console
# scripts named like DCMTK's programs (storescu, echoscu, ...), which the tests run as real
# DIMSE clients.
V=.venv/bin
echo "== ruff check";   $V/ruff check src tests bench
echo "== ruff format";  $V/ruff format --check src tests bench
echo "== mypy";         $V/mypy
echo "== pytest";       $V/pytest -q -p no:cacheprovider --durations=30 "$@"
