#!/usr/bin/env bash
# Tail latency as a shard's state grows (issue 6): `benches/http/steps.sh`.
#
# run.sh compares whole rounds against a baseline; this watches one clicktrail server
# over consecutive steps of clicks, where its state grows past the points at which a
# snapshot is built (a shard snapshots at 1 M records, then 2 M, 4 M, ...) and its log
# moves to a new segment. Per step it prints wrk's latency (average, standard deviation,
# maximum), the clicks stored so far, the server's heap (RssAnon) and peak resident memory
# so far (VmHWM, which counts the mapped log segments too), its data directory's size, then the snapshots the server logged (records, bytes, build and
# write times). A step whose maximum latency stands out holds a stall.
#
# A fresh server (fresh data directory, one shard) pinned to CPU 1, wrk on CPU 0, one
# wrk thread over 64 connections, as run.sh.
#
# Bounded: STEPS wrk runs of STEP_S each (each killed $WRK_GRACE_S later), loopback only.
#
# Environment (defaults in brackets): STEPS [6]  STEP_S [5]  SYNC [always]  PORT [18120]
#   SKIP_BUILD [0]  CLICKTRAIL_BIN [target/release/clicktrail]
set -euo pipefail

STEPS=${STEPS:-6}
STEP_S=${STEP_S:-5}
SYNC=${SYNC:-always}
PORT=${PORT:-18120}
SKIP_BUILD=${SKIP_BUILD:-0}
WRK_GRACE_S=30
PATH_Q="/click.track?CID=1&AFID=1&ADID=1&SID=bench"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR="$ROOT/benches/http"
# shellcheck source=benches/http/config.sh
source "$BENCH_DIR/config.sh"
export BENCH_LUA_DIR="$BENCH_DIR"
command -v wrk >/dev/null || { echo "wrk is required (run.sh installs it)" >&2; exit 1; }
if [ "$SKIP_BUILD" != 1 ]; then
    (cd "$ROOT" && cargo build --release -q --bin clicktrail)
fi
CLICKTRAIL_BIN=${CLICKTRAIL_BIN:-"$ROOT/target/release/clicktrail"}

bench_work_dir steps

write_bench_config "$WORK/clicktrail.toml" "$PORT" "$WORK/data" "$SYNC" 1 ""
RUST_LOG=warn,engine::shard=info NO_COLOR=1 taskset -c 1 "$CLICKTRAIL_BIN" serve \
    --config "$WORK/clicktrail.toml" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
kill -0 "$SERVER_PID" || { tail "$WORK/server.log" >&2; exit 1; }

echo "| step | avg latency | stdev | max | clicks so far | heap (RssAnon) | peak RSS (VmHWM) | data dir |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
clicks=0
for step in $(seq "$STEPS"); do
    out=$(timeout $((STEP_S + WRK_GRACE_S)) taskset -c 0 wrk -t1 -c64 -d"${STEP_S}s" \
        -s "$BENCH_DIR/visitors.lua" "http://127.0.0.1:$PORT$PATH_Q")
    clicks=$((clicks + $(awk '/requests in/{print $1}' <<<"$out")))
    read -r avg stdev max < <(awk '/^ +Latency/{print $2, $3, $4}' <<<"$out")
    heap_kib=$(awk '/RssAnon/{print $2}' "/proc/$SERVER_PID/status")
    peak_kib=$(awk '/VmHWM/{print $2}' "/proc/$SERVER_PID/status")
    echo "| $step | $avg | $stdev | $max | $clicks | $((heap_kib / 1024)) MiB | $((peak_kib / 1024)) MiB | $(du -sm "$WORK/data" | cut -f1) MB |"
done
echo
echo "Snapshots:"
grep -E "snapshot written|state compacted" "$WORK/server.log" | sed -e 's/\x1b\[[0-9;]*m//g' \
    | grep -o "lsn=.*" || echo "(none)"
