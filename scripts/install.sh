#!/usr/bin/env bash
# Install dicomhub into ./.venv on a Debian machine (run as root or with sudo available).
#   scripts/install.sh          runtime only
#   scripts/install.sh --test   plus what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v curl >/dev/null || need_apt+=(curl)
if (( want_test )); then
  command -v storescu >/dev/null || need_apt+=(dcmtk)
  # The PostgreSQL backend tests start a throwaway cluster of their own with initdb/pg_ctl
  # (never the machine's server); they only need the server binaries.
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null \
    || need_apt+=(postgresql)
  # The load-balancer test runs the nginx recipe of docs/deployment.md with real nginx (as the
  # current user, in a temporary prefix; the package's own service is not needed), and makes a
  # throwaway TLS certificate with the openssl command.
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx)
  command -v openssl >/dev/null || need_apt+=(openssl)
fi
if (( ${#need_apt[@]} )); then
  echo "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
  # Installed for the tests only: do not leave the package's default site serving port 80.
  if [[ " ${need_apt[*]} " == *" nginx "* ]] && command -v systemctl >/dev/null \
      && [[ -d /run/systemd/system ]]; then
    $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"dicomhub needs Python >= 3.11, found {sys.version.split()[0]}")
PY

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if (( want_test )); then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
echo "dicomhub installed in $(pwd)/.venv"
