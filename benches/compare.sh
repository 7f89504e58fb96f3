#!/usr/bin/env bash
# Side by side: ymesh (in memory and with its store) against the JavaScript reference server
# `@y/websocket-server` 0.1.1 and y-sweet 0.9.1, same workloads, one run, driven by the Rust
# load generator (benches/load.rs). Writes the results table and a chart into
# docs/benchmarks.md (between the `compare:begin` and `compare:end` markers) and
# docs/benchmarks-compare.svg. Everything runs on 127.0.0.1; every server is started fresh
# for each workload and stopped after it.
#
#   benches/compare.sh                  # everything, about 10 minutes after the builds
#   benches/compare.sh --quick          # smaller counts, a smoke test of the script
#   benches/compare.sh --only w1,idle   # some workloads (names below)
#   benches/compare.sh --servers ymesh-memory,reference
#   benches/compare.sh --append --only idle --servers y-sweet   # re-run some, keep the rest
#   YSWEET=skip benches/compare.sh      # do not build y-sweet if it is not built yet
#   NO_BUILD=1 YMESH_BIN=path benches/compare.sh   # use built binaries (also LOAD_BIN, DURABLE_BIN)
#
# Workloads: w1 (1 room x 2 clients x 2,000 updates), w2 (1 x 50 x 100), w3 (100 x 2 x 100),
# w4 (10 x 20 x 200), all 100-byte updates, flat out, typed in runs of 64; w1run (w1 typed as
# one ever-growing run); idle (1,000 rooms x 10 idle clients);
# lat10k (10,000 connections, 2,000 updates/s); hops (ymesh mesh of 3 in a line); startup
# (ymesh with 10,000 stored rooms); durable (benches/durable.rs, 1 and 100 busy rooms).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$ROOT/target/bench-compare
TOOLS=$ROOT/target/bench-tools
REF_DIR=$ROOT/benches/reference
YSWEET_BIN=$TOOLS/y-sweet/bin/y-sweet
ARGS="$*"
QUICK=0
APPEND=0
ONLY=""
SERVERS="ymesh-memory,ymesh-durable,reference,y-sweet"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --append) APPEND=1 ;;
    --only) ONLY=$2; shift ;;
    --servers) SERVERS=$2; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
server_wanted() { [[ ",$SERVERS," == *",$1,"* ]]; }

mkdir -p "$WORK" "$TOOLS"
RESULTS=$WORK/results.jsonl
[ "$APPEND" = 1 ] && [ -f "$RESULTS" ] || : > "$RESULTS"
forget() { # workload server: drop earlier rows of this pair (--append re-runs replace them)
  grep -v "^{\"workload\":\"$1\",\"server\":\"$2\"" "$RESULTS" > "$RESULTS.tmp" || true
  mv "$RESULTS.tmp" "$RESULTS"
}
log() { echo "[compare] $(date -u +%H:%M:%S) $*" >&2; }
ulimit -n "$(ulimit -Hn)" || true

# ---------------------------------------------------------------------------------------------
# Builds and installs

if [ -n "${NO_BUILD:-}" ]; then
  # Use what is built (or YMESH_BIN, LOAD_BIN, DURABLE_BIN).
  newest() { ls -t $1 2>/dev/null | while read -r f; do [ -x "$f" ] && [ -f "$f" ] && { echo "$f"; break; }; done || true; }
  YMESH=$(realpath "${YMESH_BIN:-$ROOT/target/release/ymesh}")
  LOAD=${LOAD_BIN:-$(newest "$ROOT/target/release/deps/load-*")}
  DURABLE=${DURABLE_BIN:-$(newest "$ROOT/target/release/deps/durable-*")}
else
  log "building ymesh (release), the load generator and the durable bench"
  # One build for all three, so the library is compiled once with one feature set.
  built=$(cd "$ROOT" && cargo build --release --locked --bin ymesh --bench load --bench durable \
    --message-format=json-render-diagnostics)
  exe() { echo "$built" | grep "\"name\":\"$1\"" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1; }
  YMESH=$ROOT/target/release/ymesh
  LOAD=$(exe load)
  DURABLE=$(exe durable)
fi
[ -x "$LOAD" ] || { echo "compare.sh: load generator not built" >&2; exit 1; }

if server_wanted reference; then
  if ! node -e "process.exit(require('$REF_DIR/node_modules/@y/websocket-server/package.json').version === '0.1.1' ? 0 : 1)" 2>/dev/null; then
    log "installing @y/websocket-server 0.1.1 (npm ci, benches/reference/package-lock.json)"
    (cd "$REF_DIR" && npm ci --ignore-scripts --no-audit --no-fund)
  fi
fi
YSWEET_NOTE=""
if server_wanted y-sweet && [ ! -x "$YSWEET_BIN" ]; then
  if [ "${YSWEET:-}" = skip ]; then
    YSWEET_NOTE="not built (YSWEET=skip)"
  else
    log "building y-sweet 0.9.1 (cargo install, long on 2 cores)"
    if ! cargo install y-sweet --version 0.9.1 --locked --root "$TOOLS/y-sweet" > "$WORK/y-sweet-install.log" 2>&1; then
      YSWEET_NOTE="cargo install failed (target/bench-compare/y-sweet-install.log)"
    fi
  fi
fi
if server_wanted y-sweet && [ ! -x "$YSWEET_BIN" ]; then
  YSWEET_NOTE=${YSWEET_NOTE:-"not built"}
  log "y-sweet not measured: $YSWEET_NOTE"
  SERVERS=${SERVERS//y-sweet/}
fi

# ---------------------------------------------------------------------------------------------
# Servers

PORT_BASE=21100  # below the ephemeral range (32768-60999), which the clients use
PORT=0
next_port() { PORT_BASE=$((PORT_BASE + 1)); PORT=$PORT_BASE; }  # sets PORT (no subshell)
wait_port() { # port, pid: until the port accepts (20 s)
  local i
  for i in $(seq 1 400); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
SERVER_PID=""
SERVER_PORT=""
URL=""
CREATE=()
start_server() { # kind
  local kind=$1 port; next_port; port=$PORT
  local logf=$WORK/$kind-$port.log
  CREATE=()
  case $kind in
    ymesh-memory)
      "$YMESH" serve --memory --port "$port" --no-mdns > "$logf" 2>&1 &
      URL="ws://127.0.0.1:$port/rooms/{room}" ;;
    ymesh-durable)
      rm -rf "$WORK/data-$port"
      "$YMESH" serve --port "$port" --data-dir "$WORK/data-$port" --no-mdns > "$logf" 2>&1 &
      URL="ws://127.0.0.1:$port/rooms/{room}" ;;
    reference)
      HOST=127.0.0.1 PORT=$port node "$REF_DIR/node_modules/@y/websocket-server/src/server.js" > "$logf" 2>&1 &
      URL="ws://127.0.0.1:$port/{room}" ;;
    y-sweet)
      "$YSWEET_BIN" serve --host 127.0.0.1 --port "$port" > "$logf" 2>&1 &
      URL="ws://127.0.0.1:$port/d/{room}/ws/{room}"
      CREATE=(--create "http://127.0.0.1:$port/doc/new") ;;
  esac
  SERVER_PID=$!
  SERVER_PORT=$port
  wait_port "$port" "$SERVER_PID" || { log "$kind did not start (see $logf)"; return 1; }
}
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap 'stop_server; for p in ${MESH_PIDS:-}; do kill $p 2>/dev/null || true; done' EXIT

record() { # workload server [extra json]; reads the generator's output on stdin
  local line
  line=$(grep '^RESULT ' | tail -1 | sed 's/^RESULT //')
  [ -n "$line" ] || line='{"mode":"failed","error":"no result"}'
  echo "{\"workload\":\"$1\",\"server\":\"$2\",\"result\":$line${3:+,$3}}" >> "$RESULTS"
}

run_load() { # workload server args...
  local w=$1 s=$2; shift 2
  log "$w on $s: load $*"
  "$LOAD" --pid "$SERVER_PID" --label "$w/$s" "$@" \
    | tee "$WORK/$w-$s.out" | record "$w" "$s" || true
}

if [ $QUICK = 1 ]; then S=10; else S=1; fi   # divide counts by S in quick mode
declare -A WORKLOADS=(
  [w1]="--rooms 1 --clients 2 --updates $((2000 / S)) --size 100"
  [w2]="--rooms 1 --clients 50 --updates $((100 / S)) --size 100"
  [w3]="--rooms 100 --clients 2 --updates $((100 / S)) --size 100"
  [w4]="--rooms 10 --clients 20 --updates $((200 / S)) --size 100"
  [w1run]="--rooms 1 --clients 2 --updates $((2000 / S)) --size 100 --paragraph 0"
  [idle]="--idle $((10000 / S)) --rooms $((1000 / S))"
  [lat10k]="--rooms $((1000 / S)) --clients 10 --writers 1 --updates 10 --size 100 --rate $((2000 / S)) --connect-parallel 128"
)
for w in w1 w2 w3 w4 w1run idle lat10k; do
  wanted $w || continue
  for s in ${SERVERS//,/ }; do
    [ -n "$s" ] || continue
    forget "$w" "$s"
    start_server "$s" || { echo "{\"workload\":\"$w\",\"server\":\"$s\",\"result\":{\"mode\":\"failed\",\"error\":\"server did not start\"}}" >> "$RESULTS"; stop_server; continue; }
    # shellcheck disable=SC2086
    run_load "$w" "$s" --url "$URL" "${CREATE[@]}" ${WORKLOADS[$w]}
    stop_server
  done
done

# ---------------------------------------------------------------------------------------------
# Mesh hops: three in-memory ymesh nodes in a line A - B - C; writers on A, receivers on A
# (0 hops), B (1 hop) and C (2 hops), 10 rooms, 500 updates/s in total.

MESH_PIDS=""
if wanted hops && server_wanted ymesh-memory; then
  next_port; pa=$PORT; next_port; pb=$PORT; next_port; pc=$PORT
  secret=bench-mesh-secret-0123456789abcdef
  "$YMESH" serve --memory --port "$pa" --no-mdns --mesh-secret $secret > "$WORK/hop-a.log" 2>&1 & a=$!
  "$YMESH" serve --memory --port "$pb" --no-mdns --mesh-secret $secret --peer "ws://127.0.0.1:$pa" > "$WORK/hop-b.log" 2>&1 & b=$!
  "$YMESH" serve --memory --port "$pc" --no-mdns --mesh-secret $secret --peer "ws://127.0.0.1:$pb" > "$WORK/hop-c.log" 2>&1 & c=$!
  MESH_PIDS="$a $b $c"
  wait_port "$pa" $a && wait_port "$pb" $b && wait_port "$pc" $c
  # Until both links are up (GET /peers lists a connected link on B to A and C).
  for i in $(seq 1 100); do
    n=$(curl -s "http://127.0.0.1:$pb/peers" | grep -o '"state":"connected"' | wc -l || true)
    [ "$n" -ge 2 ] && break
    sleep 0.1
  done
  forget hops ymesh-memory
  hop_args="--rooms 10 --clients 5 --writers 1 --updates $((300 / S)) --size 100 --rate 500"
  for hop in 0 1 2; do
    case $hop in 0) rp=$pa ;; 1) rp=$pb ;; 2) rp=$pc ;; esac
    log "hops: $hop"
    # shellcheck disable=SC2086
    "$LOAD" --pid $a --pid $b --pid $c --label "hops/$hop" --url "ws://127.0.0.1:$pa/rooms/{room}" \
      --read-url "ws://127.0.0.1:$rp/rooms/{room}" $hop_args 2>/dev/null \
      | tee "$WORK/hops-$hop.out" | record hops ymesh-memory "\"hops\":$hop" || true
  done
  kill $a $b $c 2>/dev/null || true
  wait $a $b $c 2>/dev/null || true
  MESH_PIDS=""
fi

# ---------------------------------------------------------------------------------------------
# Start-up with 10,000 stored rooms: seed them (one update each), stop, then start three times
# and take the time from exec to the `listening on` log line (its own timestamp).

if wanted startup && server_wanted ymesh-durable; then
  rooms=$((10000 / S))
  forget startup ymesh-durable
  start_server ymesh-durable
  data=$WORK/data-$SERVER_PORT
  "$LOAD" --pid "$SERVER_PID" --url "$URL" --rooms "$rooms" --clients 1 --updates 1 --connect-parallel 128 \
    > "$WORK/startup-seed.out" 2>/dev/null || true
  stop_server
  for i in 1 2 3; do
    next_port; port=$PORT
    t0=$(date +%s%N)
    "$YMESH" serve --port "$port" --data-dir "$data" --no-mdns --log-format json > "$WORK/startup-$i.log" 2>&1 &
    SERVER_PID=$!
    wait_port "$port" "$SERVER_PID" || true
    t1=$(date +%s%N)
    stored=$(curl -s "http://127.0.0.1:$port/rooms?all=true" | grep -o '"name"' | wc -l || true)
    # The ready line's own timestamp (RFC 3339, UTC) against the moment before exec.
    ts=$(grep -m1 'listening on' "$WORK/startup-$i.log" | sed -n 's/.*"timestamp":"\([^"]*\)".*/\1/p')
    ready_ns=$(date -d "$ts" +%s%N 2>/dev/null || echo "$t1")
    echo "{\"workload\":\"startup\",\"server\":\"ymesh-durable\",\"result\":{\"mode\":\"startup\",\"stored_rooms\":$rooms,\"listed_rooms\":$stored,\"ms_to_listening\":$(( (ready_ns - t0) / 1000 )).0e-3,\"ms_to_accepting\":$(( (t1 - t0) / 1000 )).0e-3}}" >> "$RESULTS"
    stop_server
  done
fi

# ---------------------------------------------------------------------------------------------
# Durable throughput: benches/durable.rs (in-process node, 102-acknowledged updates/s)

if wanted durable && [ -x "$DURABLE" ]; then
  log "durable throughput (benches/durable.rs)"
  forget durable ymesh-memory
  forget durable ymesh-durable
  if [ $QUICK = 1 ]; then dargs="--quick"; else dargs="--warmup 1 --secs 3"; fi
  # shellcheck disable=SC2086
  (cd "$ROOT" && "$DURABLE" --bench $dargs --no-latency) > "$WORK/durable.out" 2>&1 || true
  node -e '
    const fs = require("fs");
    // "pipelined  ROOMS CONNS WINDOW NODE UPDATES/S ..." rows of the bench summary.
    const rows = fs.readFileSync(process.argv[1], "utf8").split("\n").filter(l => /^pipelined\s/.test(l));
    for (const r of rows) {
      const c = r.trim().split(/\s+/);
      console.log(JSON.stringify({workload: "durable", server: "ymesh-" + c[4], result: {mode: "durable", rooms: Number(c[1]), updates_per_s_text: c[5], other_pct: Number(c[c.length - 1])}}));
    }' "$WORK/durable.out" >> "$RESULTS"
fi

# ---------------------------------------------------------------------------------------------
# Report

YMESH_VERSION=${YMESH_LABEL:-"ymesh $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- src || echo "+changes")"}
node "$ROOT/benches/report.mjs" "$RESULTS" "$ROOT/docs/benchmarks.md" "$ROOT/docs/benchmarks-compare.svg" \
  "{\"ymesh\":\"$YMESH_VERSION\",\"ysweet_note\":\"$YSWEET_NOTE\",\"quick\":$QUICK,\"command\":\"${NO_BUILD:+NO_BUILD=1 }${YMESH_BIN:+YMESH_BIN=$YMESH_BIN }benches/compare.sh${ARGS:+ $ARGS}\"}"
log "done: docs/benchmarks.md, docs/benchmarks-compare.svg ($RESULTS)"
