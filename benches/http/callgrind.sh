#!/usr/bin/env bash
# Instructions per request of clicktrail's tracking routes, under valgrind's callgrind
# (issue 6): `benches/http/callgrind.sh`.
#
# CPU time per request (run.sh) swings with whatever else the shared machine is doing;
# instruction counts do not, so this is the figure to compare before and after a change
# to the request path. It starts the release binary under callgrind on 127.0.0.1 with
# sync = "never" (the disk is out of the picture), warms it up, then per route: zeroes
# the counters (callgrind_control -z), sends exactly $COUNT requests with
# benches/http/client.py, dumps the counters (callgrind_control -d) and divides the
# instructions of every thread of the process by the requests answered. Minting the
# click IDs that s2s redeems happens before its counters are zeroed.
#
# Routes: click      GET /click.track?CID=1&AFID=1&ADID=1&SID=bench (distinct User-Agents)
#         impression GET /impression.track?CID=1&AFID=1&ADID=1&SID=bench (likewise)
#         s2s        GET /pixel.track?type=s2s&ClickID=<fresh>
#
# Output: a Markdown table on stdout and in $OUT, and per route the top of the profile
# in $OUT_DIR/callgrind-<route>.txt: inclusive (callgrind_annotate), then self cost and
# heap allocator calls per request (callgrind_self.py).
#
# Bounded: a fixed request count per route, every answer awaited at most 60 s
# (client.py), the whole run under `timeout $TIMEOUT_S`; loopback only.
#
# Environment overrides (defaults in brackets):
#   COUNT [20000]  WARMUP [2000]  CONNECTIONS [4]  ROUTES ["click impression s2s"]
#   SHARDS [2]  PORT [18180]  SKIP_BUILD [0]  KEEP_DATA [0]  TIMEOUT_S [3600]
#   OUT [benches/http/callgrind.md, callgrind-baseline.md for TARGET=baseline]
#   TARGET [clicktrail]: `baseline` measures the bare hyper server of benches/http/baseline.rs
#   instead (every route answers its fixed 302; s2s posts a made-up ID): the floor of the
#   HTTP stack, in the same units.
set -euo pipefail

COUNT=${COUNT:-20000}
WARMUP=${WARMUP:-2000}
CONNECTIONS=${CONNECTIONS:-4}
ROUTES=${ROUTES:-"click impression s2s"}
SHARDS=${SHARDS:-2}
PORT=${PORT:-18180}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
TIMEOUT_S=${TIMEOUT_S:-3600}
TARGET=${TARGET:-clicktrail}
# Tenths of a second the server under valgrind gets to answer its first request.
STARTUP_WAIT_TENTHS=600

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR="$ROOT/benches/http"
# shellcheck source=benches/http/config.sh
source "$BENCH_DIR/config.sh"
OUT=${OUT:-"$BENCH_DIR/callgrind$([ "$TARGET" = clicktrail ] || echo "-$TARGET").md"}
OUT_DIR=$(dirname "$OUT")

log() { echo "[callgrind] $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# The whole run is bounded: re-exec under `timeout` once.
if [ -z "${CALLGRIND_SH_TIMED:-}" ]; then
    export CALLGRIND_SH_TIMED=1
    exec timeout "$TIMEOUT_S" "$0" "$@"
fi

for tool in valgrind callgrind_control callgrind_annotate curl python3; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install -y valgrind curl python3)"
done

case $TARGET in
    clicktrail | baseline) ;;
    *) die "TARGET must be clicktrail or baseline" ;;
esac

cd "$ROOT"
if [ "$SKIP_BUILD" != 1 ]; then
    log "building the release binary"
    cargo build --release --bin "$TARGET" >&2
fi
CLICKTRAIL_BIN=${CLICKTRAIL_BIN:-"$ROOT/target/release/clicktrail"}

WORK=$(mktemp -d -t clicktrail-callgrind.XXXXXX)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "$KEEP_DATA" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

write_bench_config "$WORK/clicktrail.toml" "$PORT" "$WORK/data" never "$SHARDS" ""

case $TARGET in
    clicktrail) SERVER_CMD=("$CLICKTRAIL_BIN" serve --config "$WORK/clicktrail.toml") ;;
    baseline) SERVER_CMD=("$ROOT/target/release/baseline" "127.0.0.1:$PORT") ;;
esac
# The baseline answers every path, /healthz included, with its 302.
log "starting $TARGET under callgrind on 127.0.0.1:$PORT"
# --instr-atstart=yes: startup is counted too, but every route's figure comes from its own
# zeroed counters. Inlined frames are kept apart (--dump-line=yes is the default).
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "${SERVER_CMD[@]}" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
tries=0
until curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/healthz"; do
    kill -0 "$SERVER_PID" 2>/dev/null || die "$TARGET exited: $(tail -n 5 "$WORK/server.log")"
    tries=$((tries + 1))
    [ "$tries" -lt "$STARTUP_WAIT_TENTHS" ] || die "no answer from $TARGET"
    sleep 0.1
done

client() { # route count [extra args]
    python3 "$BENCH_DIR/client.py" "$1" "$PORT" "$2" --connections "$CONNECTIONS" "${@:3}"
}
answered() { sed -n 's/^answered=\([0-9]*\).*/\1/p' <<<"$1"; }

log "warming up with $WARMUP clicks"
client click "$WARMUP" >/dev/null || die "warm-up failed"

ROWS=()
for route in $ROUTES; do
    if [ "$route" = s2s ] && [ "$TARGET" = baseline ]; then
        echo AAAAAAAAAAAAAAAAAAAAAA >"$WORK/ids.txt"
    elif [ "$route" = s2s ]; then
        log "minting $COUNT click IDs"
        client mint "$COUNT" --ids "$WORK/ids.txt" >/dev/null || die "minting failed"
    fi
    PROFILE="$OUT_DIR/callgrind-$route.txt"
    [ "$TARGET" = clicktrail ] || PROFILE="$OUT_DIR/callgrind-$TARGET-$route.txt"
    callgrind_control -z "$SERVER_PID" >/dev/null
    log "$route: $COUNT requests"
    result=$(client "$route" "$COUNT" --ids "$WORK/ids.txt") || die "$route: $result"
    callgrind_control -d "$route" "$SERVER_PID" >/dev/null
    # callgrind writes the dump as <out>.<n>; the newest one is this route's.
    dump=$(ls -t "$WORK"/callgrind.out.* | sed -n 1p)
    instructions=$(awk '/^summary:/ { print $2 }' "$dump")
    requests=$(answered "$result")
    [ "${requests:-0}" -gt 0 ] || die "$route: nothing answered ($result)"
    per=$((instructions / requests))
    log "$route: $result, $per instructions per request"
    {
        echo "# callgrind profile of $TARGET on $route ($requests requests)"
        echo "## inclusive"
        callgrind_annotate --inclusive=yes --threshold=99 "$dump" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '1,60p'
        echo "## self, per request"
        python3 "$BENCH_DIR/callgrind_self.py" "$dump" "$requests" 60
    } >"$PROFILE"
    mallocs=$(awk '/calls to malloc per request/ { print $1 }' "$PROFILE")
    ROWS+=("| $route | $requests | ${result##*status=} | $instructions | $per | $mallocs |")
done

{
    echo "# $TARGET instructions per request (callgrind)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- $COUNT requests per route over $CONNECTIONS keep-alive connections, after $WARMUP warm-up clicks;"
    echo "  sync = \"never\", shards = $SHARDS; instructions of every thread of the process"
    echo
    echo "- per request: instructions of the whole process / requests (the handler-only column"
    echo "  of earlier tables is gone: since 844a47a part of the handler runs inside hyper's"
    echo "  service call, so no one function holds it)"
    echo "- mallocs: calls to malloc/calloc, or to mimalloc's entry points (clicktrail since 1f57a88)"
    echo
    echo "| route | requests | statuses | instructions | per request | mallocs per request |"
    echo "|---|---:|---|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
} >"$OUT"
cat "$OUT"
log "written to $OUT; profiles in $OUT_DIR/callgrind-*.txt"
