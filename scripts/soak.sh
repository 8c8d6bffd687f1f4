#!/usr/bin/env bash
# Soak test (issue 7; not part of CI): ten minutes of mixed load through `clicktrail
# loadgen` against a release build, resident memory sampled every minute.
#
# Passes when loadgen reports no errors (its own end-of-run checks: attribution, every
# click's conversions, report counters), the server logged no ERROR, and resident memory
# stays bounded by what is stored: after the first sample (warm-up: threads, buffers,
# connection and metric state), RSS grows by at most the clicks stored since x
# MAX_BYTES_PER_CLICK, plus SLACK_KIB for allocator fragmentation.
#
# Usage: scripts/soak.sh            (10 minutes, 2000 requests/s)
#        DURATION_SECS=120 RATE=5000 SEED=7 scripts/soak.sh
# Env:   DURATION_SECS, RATE, CONCURRENCY, SEED, SAMPLE_SECS, MAX_BYTES_PER_CLICK, KEEP=1
#        (keep the data directory), BIN (a prebuilt binary; default: cargo build --release).
set -euo pipefail

DURATION_SECS=${DURATION_SECS:-600}
RATE=${RATE:-2000}
CONCURRENCY=${CONCURRENCY:-64}
SEED=${SEED:-$RANDOM}
SAMPLE_SECS=${SAMPLE_SECS:-60}
# A stored click costs well under 1 KiB in the shard index; 2 KiB per click leaves room for
# allocator slack, conversions and counters while still catching a leak per request.
MAX_BYTES_PER_CLICK=${MAX_BYTES_PER_CLICK:-2048}
SLACK_KIB=${SLACK_KIB:-16384}
TOKEN=soak-token

cd "$(dirname "$0")/.."
if [[ -z "${BIN:-}" ]]; then
    cargo build --release --bin clicktrail
    BIN=target/release/clicktrail
fi

WORK=$(mktemp -d -t clicktrail-soak.XXXXXX)
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

cat >"$WORK/clicktrail.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[storage]
data_dir = "$WORK/data"
sync = "always"

[admin]
token = "$TOKEN"

[[campaigns]]
id = 1
name = "soak"
landing_url = "https://shop.example/?ref={click_id}&s={sid1}"
revenue = 10.0
payout = 4.0

[[affiliates]]
id = 1
name = "soak affiliate"
EOF

RUST_LOG=info "$BIN" serve --config "$WORK/clicktrail.toml" 2>"$WORK/server.log" &
SERVER_PID=$!

# The server logs `clicktrail listening listen=127.0.0.1:PORT` once it has recovered.
ADDR=""
for _ in $(seq 1 300); do
    ADDR=$(grep -o 'clicktrail listening listen=[0-9.:]*' "$WORK/server.log" | head -1 | sed 's/.*listen=//') || true
    [[ -n "$ADDR" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; echo "server exited"; exit 1; }
    sleep 0.1
done
[[ -n "$ADDR" ]] || { cat "$WORK/server.log"; echo "server never listened"; exit 1; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }
# Anonymous (heap) and file-backed (the mapped WAL segments, reclaimable) parts of RSS.
rss_anon_kib() { awk '/^RssAnon:/ {print $2}' "/proc/$SERVER_PID/status"; }
rss_file_kib() { awk '/^RssFile:/ {print $2}' "/proc/$SERVER_PID/status"; }
stored_clicks() {
    curl -fsS -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/v1/report?group_by=campaign" |
        sed -n 's/.*"totals":{[^}]*"clicks":\([0-9]*\).*/\1/p'
}

echo "soak: $BIN on $ADDR for ${DURATION_SECS}s at ${RATE}/s, seed $SEED, data $WORK/data"
START_RSS=$(rss_kib)
printf '%8s %12s %12s %12s %12s\n' "t_secs" "rss_kib" "anon_kib" "file_kib" "clicks"
printf '%8s %12s %12s %12s %12s\n' 0 "$START_RSS" "$(rss_anon_kib)" "$(rss_file_kib)" 0

"$BIN" loadgen --target "http://$ADDR" --admin-token "$TOKEN" --rate "$RATE" \
    --duration "$DURATION_SECS" --concurrency "$CONCURRENCY" --seed "$SEED" \
    >"$WORK/loadgen.out" 2>&1 &
LOADGEN_PID=$!

ELAPSED=0
BASE_RSS=""
BASE_CLICKS=0
while kill -0 "$LOADGEN_PID" 2>/dev/null; do
    sleep "$SAMPLE_SECS" &
    wait $! || true
    ELAPSED=$((ELAPSED + SAMPLE_SECS))
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server died"; tail -50 "$WORK/server.log"; exit 1; }
    RSS=$(rss_kib)
    CLICKS_NOW=$(stored_clicks || echo 0)
    printf '%8s %12s %12s %12s %12s\n' "$ELAPSED" "$RSS" "$(rss_anon_kib)" "$(rss_file_kib)" "$CLICKS_NOW"
    if [[ -z "$BASE_RSS" ]]; then BASE_RSS=$RSS; BASE_CLICKS=${CLICKS_NOW:-0}; fi
done
LOADGEN_STATUS=0
wait "$LOADGEN_PID" || LOADGEN_STATUS=$?

END_RSS=$(rss_kib)
CLICKS=$(stored_clicks)
cat "$WORK/loadgen.out"
echo "start RSS ${START_RSS} KiB, end RSS ${END_RSS} KiB, clicks stored ${CLICKS}"

FAIL=0
if [[ "$LOADGEN_STATUS" != 0 ]]; then
    echo "FAIL: loadgen exited $LOADGEN_STATUS"
    FAIL=1
fi
if grep -q ' ERROR ' "$WORK/server.log"; then
    echo "FAIL: the server logged errors:"
    grep ' ERROR ' "$WORK/server.log" | head -20
    FAIL=1
fi
BASE_RSS=${BASE_RSS:-$START_RSS}
LIMIT_KIB=$((BASE_RSS + (CLICKS - BASE_CLICKS) * MAX_BYTES_PER_CLICK / 1024 + SLACK_KIB))
echo "after warm-up: RSS ${BASE_RSS} KiB at ${BASE_CLICKS} clicks; bound now ${LIMIT_KIB} KiB"
if ((END_RSS > LIMIT_KIB)); then
    echo "FAIL: RSS ${END_RSS} KiB over the bound ${LIMIT_KIB} KiB (${MAX_BYTES_PER_CLICK} B per stored click + ${SLACK_KIB} KiB)"
    FAIL=1
fi
((FAIL == 0)) && echo "soak: PASS"
exit "$FAIL"
