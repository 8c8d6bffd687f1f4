#!/usr/bin/env bash
# Tail latency as a shard's state grows (issue 6): `benches/http/steps.sh`.
#
# run.sh compares whole rounds against a baseline; this watches one clicktrail server
# over consecutive steps of clicks (or impressions: MIX below), where its state grows past
# the points at which a snapshot is built (a shard snapshots at 1 M records, then 2 M,
# 4 M, ...) and its log moves to a new segment. Per step it prints wrk's latency (average,
# standard deviation, maximum), the requests answered so far, the server's heap (RssAnon)
# and peak resident memory so far (VmHWM, which counts the mapped log segments too), its
# data directory's size, then the snapshots the server logged (records, bytes, build and
# write times). A step whose maximum latency stands out holds a stall. Error answers and
# socket errors, if any, go to stderr.
#
# A fresh server (fresh data directory, one shard) pinned to CPU 1, wrk on CPU 0, one
# wrk thread over 64 connections, as run.sh.
#
# MIX chooses the requests, each mix a wrk script here (its comment says why):
#   clicks       /click.track?CID=1&AFID=1&ADID=1&SID=bench from 100 000 distinct
#                User-Agents (visitors.lua), so only the click store and its indexes grow.
#   unique-subs  the same clicks with a distinct SID and sub2 each (unique-subs.lua), as
#                when affiliates pass their own click IDs: the sub-ID tables grow too.
#   ipv6         the clicks of `clicks`, each from a distinct IPv6 address sent in
#                X-Forwarded-For (ipv6.lua; the server trusts 127.0.0.0/8 as a proxy):
#                the IPv6 side table grows too.
#   impressions  /impression.track?CID=1&AFID=1&ADID=1&SID=bench from 2 000 000 distinct
#                User-Agents continuing across steps (impressions.lua): the table of
#                unique impressions grows by one entry a request.
#   mixed        impressions and clicks taking turns, the clicks with distinct sub IDs
#                from distinct IPv6 addresses (mixed.lua): all of the above at once.
# Each step is one wrk run; steps.sh passes it the step number and the requests sent so
# far, so that the mixes' IDs, addresses and visitors stay new from step to step.
#
# Bounded: STEPS wrk runs of STEP_S each (each killed $WRK_GRACE_S later), then at most
# $SHUTDOWN_WAIT_S for the server to stop; loopback only.
#
# Environment (defaults in brackets): MIX [clicks]  STEPS [6]  STEP_S [5]  SYNC [always]
#   PORT [18120]  SKIP_BUILD [0]  CLICKTRAIL_BIN [target/release/clicktrail]
set -euo pipefail

STEPS=${STEPS:-6}
STEP_S=${STEP_S:-5}
SYNC=${SYNC:-always}
PORT=${PORT:-18120}
SKIP_BUILD=${SKIP_BUILD:-0}
MIX=${MIX:-clicks}
WRK_GRACE_S=30
SHUTDOWN_WAIT_S=60
CLICK_PATH="/click.track?CID=1&AFID=1&ADID=1"
IMPRESSION_PATH="/impression.track?CID=1&AFID=1&ADID=1&SID=bench"
# Per mix: the wrk script, the URL's path and query, what a request is (for the table),
# and extra [server] lines of the config.
SERVER_LINES=""
TRUST_LOOPBACK='trusted_proxies = ["127.0.0.0/8"]'
case "$MIX" in
    clicks) SCRIPT=visitors.lua PATH_Q="$CLICK_PATH&SID=bench" REQUESTS=clicks ;;
    unique-subs) SCRIPT=unique-subs.lua PATH_Q="$CLICK_PATH" REQUESTS=clicks ;;
    ipv6) SCRIPT=ipv6.lua PATH_Q="$CLICK_PATH&SID=bench" REQUESTS=clicks SERVER_LINES=$TRUST_LOOPBACK ;;
    impressions) SCRIPT=impressions.lua PATH_Q="$IMPRESSION_PATH" REQUESTS=impressions ;;
    mixed) SCRIPT=mixed.lua PATH_Q="/" REQUESTS=requests SERVER_LINES=$TRUST_LOOPBACK ;;
    *) echo "MIX must be clicks, unique-subs, ipv6, impressions or mixed, not '$MIX'" >&2; exit 2 ;;
esac

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

write_bench_config "$WORK/clicktrail.toml" "$PORT" "$WORK/data" "$SYNC" 1 "" "$SERVER_LINES"
RUST_LOG=warn,engine::shard=info NO_COLOR=1 taskset -c 1 "$CLICKTRAIL_BIN" serve \
    --config "$WORK/clicktrail.toml" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
kill -0 "$SERVER_PID" || { tail "$WORK/server.log" >&2; exit 1; }

echo "MIX=$MIX"
echo "| step | avg latency | stdev | max | $REQUESTS so far | heap (RssAnon) | peak RSS (VmHWM) | data dir |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
sent=0
for step in $(seq "$STEPS"); do
    out=$(timeout $((STEP_S + WRK_GRACE_S)) taskset -c 0 wrk -t1 -c64 -d"${STEP_S}s" \
        -s "$BENCH_DIR/$SCRIPT" "http://127.0.0.1:$PORT$PATH_Q" -- "$step" "$sent")
    sent=$((sent + $(awk '/requests in/{print $1}' <<<"$out")))
    grep -E "Non-2xx|Socket errors" <<<"$out" | sed "s/^/step $step: /" >&2 || true
    read -r avg stdev max < <(awk '/^ +Latency/{print $2, $3, $4}' <<<"$out")
    heap_kib=$(awk '/RssAnon/{print $2}' "/proc/$SERVER_PID/status")
    peak_kib=$(awk '/VmHWM/{print $2}' "/proc/$SERVER_PID/status")
    echo "| $step | $avg | $stdev | $max | $sent | $((heap_kib / 1024)) MiB | $((peak_kib / 1024)) MiB | $(du -sm "$WORK/data" | cut -f1) MB |"
done
# A snapshot still being built or written is logged only when it is done: a graceful stop
# waits for it (for at most SHUTDOWN_WAIT_S; the exit trap stops the server either way).
kill "$SERVER_PID"
for _ in $(seq $((SHUTDOWN_WAIT_S * 10))); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
echo
echo "Snapshots (one still in progress after the last step included):"
grep -E "snapshot written|state compacted" "$WORK/server.log" | sed -e 's/\x1b\[[0-9;]*m//g' \
    | grep -o "lsn=.*" || echo "(none)"
