#!/usr/bin/env bash
# Runs the JavaScript interop suite against a built ymesh binary.
# The binary is not built here: build it first (cargo build), or point YMESH_BIN at one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

npm test
