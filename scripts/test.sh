#!/usr/bin/env bash
# Runs every ymesh test: Rust unit, integration (one binary, tests/it) and doc tests, the
# Python interop suite (pycrdt clients, in a venv made by tests/python/run.sh), then the
# JavaScript interop suite
# (stock yjs / y-websocket clients against the real binary). Installs what the tests need
# (npm packages from the committed lock file, pinned PyPI packages; Node.js, Python's venv,
# iproute2, iptables, openssl and Chromium via apt when missing and running as root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_node() {
  if command -v node >/dev/null && command -v npm >/dev/null; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Node.js (apt)"
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "error: the interop tests need Node.js >= 20 and npm; install them first" >&2
    exit 1
  fi
}

need_python() {
  if command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Python 3 with venv (apt)"
    apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
  else
    echo "error: the Python interop tests need python3 with the venv module; install them first" >&2
    exit 1
  fi
}

# The discovery tests build hosts out of network namespaces with `ip` (iproute2). They need
# root; without it they skip (except under CI=true, where they fail).
need_ip() {
  if command -v ip >/dev/null || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    return
  fi
  echo "== installing iproute2 (apt)"
  apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
}

# The browser tests (tests/interop/test/browser.test.mjs) drive Debian's Chromium with
# playwright-core (`playwright install` cannot download its own browser here). Without
# Chromium they skip (except under CI=true, where they fail).
need_chromium() {
  if [ -x /usr/bin/chromium ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    return
  fi
  echo "== installing Chromium (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}

# The TLS tests make throwaway certificates with openssl (tests/fixtures/gen-cert.sh).
need_openssl() {
  if command -v openssl >/dev/null || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    return
  fi
  echo "== installing openssl (apt)"
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
}

# The hole-punching test builds two NATs out of network namespaces with iptables MASQUERADE.
need_iptables() {
  if command -v iptables >/dev/null || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    return
  fi
  echo "== installing iptables (apt)"
  apt-get update -qq && apt-get install -y -qq iptables >/dev/null
}

echo "== building"
cargo build --all-targets --locked

echo "== Rust tests"
need_ip
need_openssl
need_iptables
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --locked --no-fail-fast
  cargo test --locked --doc
else
  cargo test --locked --no-fail-fast
fi

echo "== Python interop tests"
need_python
YMESH_BIN="$PWD/target/debug/ymesh" tests/python/run.sh

echo "== JavaScript interop tests"
need_node
need_chromium
YMESH_BIN="$PWD/target/debug/ymesh" tests/interop/run.sh
