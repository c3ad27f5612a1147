# Shared by scripts/demo and scripts/test: a project-local virtualenv with liveorch installed.
# Sourced, not executed. Works on a fresh Debian 12 with Python 3.11 (installs python3-venv
# when it is missing and we are root).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "liveorch needs Python >= 3.11 (found: $("$PY" --version 2>&1))" >&2
  exit 2
fi
APT_UPDATED=0
apt_install() {
  # apt_install pkg... : install Debian packages when missing (root only; otherwise explain).
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing system packages: ${missing[*]} (install them, or run this script as root on Debian)" >&2
    return 1
  fi
  if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  "$PY" -m venv .venv
fi
VENV="$ROOT/.venv"
export PATH="$VENV/bin:$PATH"
