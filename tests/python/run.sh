#!/usr/bin/env bash
# Runs the Python interop tests (pycrdt + pycrdt-websocket against the ymesh binary).
#
# Creates tests/python/.venv when it is missing or older than requirements.txt, installs the
# pinned requirements into it, and runs pytest. The binary is $YMESH_BIN (default:
# target/debug/ymesh in the repository); build it first. Extra arguments go to pytest, e.g.
# `tests/python/run.sh -k late_joiner`. Exits with pytest's status, except that "no tests
# collected" (pytest's 5) is a failure too.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -n "${YMESH_BIN:-}" ]; then
  case "$YMESH_BIN" in
    /*) ;;
    *) YMESH_BIN="$PWD/$YMESH_BIN" ;;
  esac
  export YMESH_BIN
fi
cd "$here"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
  echo "error: the Python interop tests need Python 3.10+ ($python not found; set PYTHON)" >&2
  exit 1
fi

venv="$here/.venv"
marker="$venv/.requirements-installed"
if [ ! -f "$marker" ] || [ requirements.txt -nt "$marker" ]; then
  echo "== setting up $venv"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian's python3 needs python3-venv for ensurepip.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      rm -rf "$venv"
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$python" -m venv "$venv"
    else
      echo "error: \`$python -m venv\` failed; install the venv module (Debian: python3-venv)" >&2
      exit 1
    fi
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r requirements.txt
  touch "$marker"
fi

status=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ "$status" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
