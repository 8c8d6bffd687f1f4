#!/usr/bin/env bash
# CPU per request of each server thread, for one target and one route (issue 6):
# `benches/http/threads.sh clicktrail|floor|baseline`.
#
# run.sh gives the whole process's CPU per request; this splits it by thread name (HTTP
# workers, shard syncers, the floor's syncer), user and kernel apart, with voluntary and
# involuntary context switches per request, and reports how idle the server's CPU was.
# A fresh server (fresh data directory) is started, warmed for 1 s, then driven for
# $DURATION_S by one wrk thread over 64 connections; the threads' utime/stime are read
# from /proc/PID/task/*/stat before and after.
#
# Pinned by default as run.sh pins (server on CPU 1, wrk on CPU 0); PIN=0 leaves both free
# on every CPU, which is what a server started with `cargo run --release -- serve` and a
# wrk beside it get, and then the idle share is of the whole machine.
#
# Bounded: one wrk run of $DURATION_S (killed $WRK_GRACE_S later), loopback only.
#
# Environment (defaults in brackets): DURATION_S [5]  ROUTE [click: click | impression]
#   SYNC [always]  SHARDS [0]  PORT [18110]  PIN [1]  SKIP_BUILD [0]
#   CLICKTRAIL_BIN [target/release/clicktrail]
set -euo pipefail

TARGET=${1:-clicktrail}
DURATION_S=${DURATION_S:-5}
ROUTE=${ROUTE:-click}
SYNC=${SYNC:-always}
SHARDS=${SHARDS:-0}
PORT=${PORT:-18110}
PIN=${PIN:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
WRK_GRACE_S=30
# Kernel clock ticks per second of /proc/*/stat's utime and stime.
TICKS_PER_S=$(getconf CLK_TCK)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR="$ROOT/benches/http"
# shellcheck source=benches/http/config.sh
source "$BENCH_DIR/config.sh"
export BENCH_LUA_DIR="$BENCH_DIR"
case $ROUTE in
    click) PATH_Q="/click.track?CID=1&AFID=1&ADID=1&SID=bench" ;;
    impression) PATH_Q="/impression.track?CID=1&AFID=1&ADID=1&SID=bench" ;;
    *) echo "ROUTE: click or impression" >&2; exit 2 ;;
esac
command -v wrk >/dev/null || { echo "wrk is required (run.sh installs it)" >&2; exit 1; }
if [ "$SKIP_BUILD" != 1 ]; then
    (cd "$ROOT" && cargo build --release -q --bin clicktrail --bin baseline)
fi
BASELINE_BIN="$ROOT/target/release/baseline"
CLICKTRAIL_BIN=${CLICKTRAIL_BIN:-"$ROOT/target/release/clicktrail"}

bench_work_dir threads

server_pin=(); wrk_pin=()
if [ "$PIN" = 1 ]; then server_pin=(taskset -c 1); wrk_pin=(taskset -c 0); fi
case $TARGET in
    clicktrail)
        write_bench_config "$WORK/clicktrail.toml" "$PORT" "$WORK/data" "$SYNC" "$SHARDS" ""
        RUST_LOG=warn "${server_pin[@]}" "$CLICKTRAIL_BIN" serve \
            --config "$WORK/clicktrail.toml" >"$WORK/server.log" 2>&1 &
        ;;
    floor) "${server_pin[@]}" "$BASELINE_BIN" "127.0.0.1:$PORT" --durable "$WORK/data" >"$WORK/server.log" 2>&1 & ;;
    baseline) "${server_pin[@]}" "$BASELINE_BIN" "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 & ;;
    *) echo "target: clicktrail, floor or baseline" >&2; exit 2 ;;
esac
SERVER_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT$PATH_Q" && break; sleep 0.1; done
kill -0 "$SERVER_PID" || { tail "$WORK/server.log" >&2; exit 1; }

drive() { # seconds
    timeout $(($1 + WRK_GRACE_S)) "${wrk_pin[@]}" wrk -t1 -c64 -d"${1}s" -s "$BENCH_DIR/visitors.lua" \
        "http://127.0.0.1:$PORT$PATH_Q"
}
# Per thread: tid, name, utime, stime, voluntary and involuntary switches.
threads() {
    for t in /proc/"$SERVER_PID"/task/*; do
        echo "$(basename "$t") $(tr ' ' _ <"$t/comm") $(awk '{print $14, $15}' "$t/stat") \
$(awk '/^(voluntary|nonvoluntary)_ctxt_switches/{printf "%s ", $2}' "$t/status")"
    done
}
# Idle + iowait ticks of the server's CPU (pinned) or of the machine.
idle() {
    if [ "$PIN" = 1 ]; then awk '/^cpu1 /{print $5 + $6}' /proc/stat; else awk '/^cpu /{print $5 + $6}' /proc/stat; fi
}

drive 1 >/dev/null
before=$(threads); idle0=$(idle)
out=$(drive "$DURATION_S")
after=$(threads); idle1=$(idle)
requests=$(awk '/requests in/{print $1}' <<<"$out")
cpus=1; [ "$PIN" = 1 ] || cpus=$(nproc)

python3 - "$requests" "$DURATION_S" "$TICKS_PER_S" "$((idle1 - idle0))" "$cpus" "$TARGET" "$ROUTE" "$PIN" \
    <<PY
import sys
requests, seconds, ticks = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
idle_ticks, cpus, target, route, pin = float(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7], sys.argv[8]
def parse(text):
    rows = {}
    for line in text.strip().splitlines():
        tid, name, user, system, vol, invol = line.split()[:6]
        rows[tid] = (name, int(user), int(system), int(vol), int(invol))
    return rows
before, after = parse("""$before"""), parse("""$after""")
by_name = {}
for tid, (name, user, system, vol, invol) in after.items():
    _, u0, s0, v0, i0 = before.get(tid, (name, 0, 0, 0, 0))
    # Thread names end in a shard number or a counter: group them by kind.
    kind = name.rstrip("0123456789-")
    row = by_name.setdefault(kind, [0.0, 0.0, 0.0, 0.0])
    row[0] += (user - u0) / ticks / requests * 1e6
    row[1] += (system - s0) / ticks / requests * 1e6
    row[2] += (vol - v0) / requests
    row[3] += (invol - i0) / requests
print(f"# {target}, {route}, {'pinned: server CPU 1, wrk CPU 0' if pin == '1' else 'unpinned'}")
print()
print("| thread | user us/req | kernel us/req | voluntary switches/req | involuntary/req |")
print("|---|---:|---:|---:|---:|")
total = 0.0
for kind, (user, system, vol, invol) in sorted(by_name.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
    total += user + system
    if user + system >= 0.01 or vol >= 0.001:
        print(f"| {kind} | {user:.2f} | {system:.2f} | {vol:.3f} | {invol:.3f} |")
idle_share = idle_ticks / ticks / seconds / cpus
print()
print(f"{requests / seconds:.0f} req/s, {total:.2f} us CPU per request, "
      f"{100 * idle_share:.0f} % of the {'server CPU' if pin == '1' else 'machine'} idle")
PY
