#!/usr/bin/env bash
# The HTTP benchmark (issue 6), one command: `benches/http/run.sh`.
#
# Builds release, starts side by side on 127.0.0.1 three targets:
#   baseline    the bare hyper server of benches/http/baseline.rs: a fixed 302, no disk;
#   floor       the same binary in durable mode (`baseline ADDR --durable DIR`): the fixed
#               302 only once a group-committed fdatasync covers one click-sized record
#               appended per request with the project's wal crate, as clicktrail's
#               sync = "always" requires. The cheapest honest durable server: the ratio
#               floor / baseline is what durability alone costs on this machine, the ratio
#               clicktrail / floor what clicktrail's own work costs. FLOOR=0 leaves it out;
#   clicktrail  fresh data directory, sync = "always", one campaign, one affiliate;
# drives each with wrk in interleaved rounds (per route: baseline, floor, then clicktrail,
# in every round), and writes a Markdown table to $OUT (and stdout).
#
# Routes: click      GET /click.track?CID=1&AFID=1&ADID=1&SID=bench
#         s2s        GET /pixel.track?type=s2s&ClickID=<fresh>   (IDs minted per round
#                    with /click.track?...&R=0 just before the round, see mint.lua)
#         impression GET /impression.track?CID=1&AFID=1&ADID=1&SID=bench
#         Clicks and impressions come from 100000 distinct User-Agents (visitors.lua), so
#         clicktrail sees many fingerprints, as in real traffic, not one visitor hammering.
#
# Per run: requests/s, p50/p99 latency (wrk), server CPU per request (utime + stime of the
# server process from /proc/PID/stat over the run, divided by the requests), peak RSS
# (VmHWM), requests per fdatasync (floor and clicktrail), the idle share of the servers'
# CPU and the share of it taken by anything but the server (/proc/stat: a disturbed run on
# this shared machine shows there), the idle share of wrk's CPU, and the ratios to the baseline (and clicktrail's to the floor) of the
# same round.
#
# CPU sharing on the 2-core box: all servers are pinned to $SERVER_CPUS (default CPU 1)
# and wrk to $WRK_CPUS (default CPU 0), so the server under load has one core to itself
# and the load generator the other; only one server is loaded at a time. CPU per request
# is therefore measured on one core; kernel work done on the server's behalf outside its
# threads (journal commits, block I/O completion for fdatasync) is not in the figure.
#
# Everything is bounded: each wrk run lasts $DURATION_S seconds (hard limit: `timeout`),
# the number of rounds is fixed, and only 127.0.0.1 is contacted.
#
# Environment overrides (defaults in brackets):
#   ROUNDS [3]  DURATION_S [10]  CONNECTIONS [64]  ROUTES ["click s2s impression"]
#   SERVER_CPUS [1]  WRK_CPUS [0]  WRK_THREADS [1]  MINT_FACTOR [3] (mint seconds per
#   s2s second: minting runs slower than the s2s posts it feeds)  WARMUP_S [3] (unmeasured
#   clicks against each server first: page faults of fresh log segments, pools, caches)
#   CLICKTRAIL_PORT [18080]  BASELINE_PORT [18090]  FLOOR_PORT [18100]  OUT [benches/http/results.md]
#   FLOOR [1]: 0 = no durable floor target  FLOOR_RECORD_BYTES [the binary's default: the
#   payload size of the bench's click record in clicktrail's log]
#   SKIP_BUILD [0]  KEEP_DATA [0]  SYNC [always]  SHARDS [0 = one per CPU it may run on]
#   PROFILE [0]: 1 = after the rounds, one more run per route against clicktrail under
#   `perf record -g` (not in the table: perf slows it); the top of each profile goes to
#   $OUT_DIR/profile-<route>.txt (perf from Debian: apt-get install -y linux-perf)
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION_S=${DURATION_S:-10}
CONNECTIONS=${CONNECTIONS:-64}
ROUTES=${ROUTES:-"click s2s impression"}
SERVER_CPUS=${SERVER_CPUS:-1}
WRK_CPUS=${WRK_CPUS:-0}
WRK_THREADS=${WRK_THREADS:-1}
MINT_FACTOR=${MINT_FACTOR:-3}
WARMUP_S=${WARMUP_S:-3}
CLICKTRAIL_PORT=${CLICKTRAIL_PORT:-18080}
BASELINE_PORT=${BASELINE_PORT:-18090}
FLOOR=${FLOOR:-1}
FLOOR_PORT=${FLOOR_PORT:-18100}
FLOOR_RECORD_BYTES=${FLOOR_RECORD_BYTES:-}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
SYNC=${SYNC:-always}
SHARDS=${SHARDS:-0}
PROFILE=${PROFILE:-0}
ADMIN_TOKEN=bench-admin-token

# Longest a single wrk run may take beyond its duration before it is killed (connect
# timeouts, a wedged server): the benchmark must end even when a target misbehaves.
WRK_GRACE_S=30
# How long a freshly started server gets to answer its first request.
STARTUP_WAIT_TENTHS=300

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR="$ROOT/benches/http"
# shellcheck source=benches/http/config.sh
source "$BENCH_DIR/config.sh"
OUT=${OUT:-"$BENCH_DIR/results.md"}
OUT_DIR=$(dirname "$OUT")
export BENCH_LUA_DIR="$BENCH_DIR" WRK_THREADS

log() { echo "[bench] $*" >&2; }
die() {
    log "error: $*"
    if [ -n "${CLICKTRAIL_PID:-}" ] && ! kill -0 "$CLICKTRAIL_PID" 2>/dev/null; then
        log "clicktrail (pid $CLICKTRAIL_PID) is gone; the end of its log:"
        tail -n 20 "$WORK/clicktrail.log" >&2 || true
    fi
    exit 1
}

if ! command -v wrk >/dev/null; then
    log "wrk not found: installing it from Debian packages"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y wrk || { $SUDO apt-get update && $SUDO apt-get install -y wrk; }
fi
command -v taskset >/dev/null || die "taskset (util-linux) is required"
command -v curl >/dev/null || die "curl is required"

cd "$ROOT"
if [ "$SKIP_BUILD" != 1 ]; then
    log "building release binaries"
    cargo build --release --bin clicktrail --bin baseline >&2
fi
CLICKTRAIL_BIN=${CLICKTRAIL_BIN:-"$ROOT/target/release/clicktrail"}
BASELINE_BIN="$ROOT/target/release/baseline"

WORK=$(mktemp -d -t clicktrail-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP_DATA" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

write_bench_config "$WORK/clicktrail.toml" "$CLICKTRAIL_PORT" "$WORK/data" "$SYNC" "$SHARDS" "$ADMIN_TOKEN"

wait_ready() { # url
    local tries=0
    until curl -s -o /dev/null --max-time 1 "$1"; do
        tries=$((tries + 1))
        [ "$tries" -lt "$STARTUP_WAIT_TENTHS" ] || die "no answer from $1"
        sleep 0.1
    done
}

TARGETS="baseline"
if [ "$FLOOR" = 1 ]; then TARGETS="$TARGETS floor"; fi
TARGETS="$TARGETS clicktrail"
log "starting $TARGETS on CPUs $SERVER_CPUS (wrk on $WRK_CPUS)"
taskset -c "$SERVER_CPUS" "$BASELINE_BIN" "127.0.0.1:$BASELINE_PORT" 2>"$WORK/baseline.log" &
PIDS+=($!)
BASELINE_PID=$!
FLOOR_PID=""
if [ "$FLOOR" = 1 ]; then
    FLOOR_ARGS=(--durable "$WORK/floor-data")
    [ -z "$FLOOR_RECORD_BYTES" ] || FLOOR_ARGS+=(--record-bytes "$FLOOR_RECORD_BYTES")
    taskset -c "$SERVER_CPUS" "$BASELINE_BIN" "127.0.0.1:$FLOOR_PORT" "${FLOOR_ARGS[@]}" \
        2>"$WORK/floor.log" &
    PIDS+=($!)
    FLOOR_PID=$!
fi
RUST_LOG=${RUST_LOG:-warn} taskset -c "$SERVER_CPUS" "$CLICKTRAIL_BIN" serve --config "$WORK/clicktrail.toml" \
    >"$WORK/clicktrail.log" 2>&1 &
PIDS+=($!)
CLICKTRAIL_PID=$!
wait_ready "http://127.0.0.1:$BASELINE_PORT/"
if [ "$FLOOR" = 1 ]; then wait_ready "http://127.0.0.1:$FLOOR_PORT/floor/syncs"; fi
wait_ready "http://127.0.0.1:$CLICKTRAIL_PORT/healthz"
# Another process answering on a port would be measured instead: both must still be ours.
alive() { # pid name
    kill -0 "$1" 2>/dev/null || die "$2 (pid $1) exited; is its port in use? its log: $(tail -n 5 "$WORK/$2.log")"
}
alive "$BASELINE_PID" baseline
if [ "$FLOOR" = 1 ]; then alive "$FLOOR_PID" floor; fi
alive "$CLICKTRAIL_PID" clicktrail

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # pid -> utime + stime, in clock ticks (fields 14 and 15; comm may hold spaces)
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
peak_rss_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
# Heap and other anonymous memory now: VmHWM also counts the mapped log segments' pages.
anon_rss_kb() { awk '/^RssAnon:/ { print $2 }' "/proc/$1/status"; }
# Context switches of all the server's threads so far (voluntary + involuntary): handing
# work between threads (HTTP workers, shard actors, fsync) costs one or more per batch.
context_switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches:/ { s += $2 } END { printf "%d", s }'
}
# fdatasyncs of clicktrail's shard logs so far (the clicktrail_wal_syncs gauges of /metrics):
# requests per sync over a run is the group commit's mean batch.
wal_syncs() {
    curl -s --max-time 2 "http://127.0.0.1:$CLICKTRAIL_PORT/metrics" |
        awk '/^clicktrail_wal_syncs/ { s += $NF } END { printf "%d", s }'
}
# Idle and total ticks of one CPU so far (/proc/stat; idle + iowait), or "- -" for a CPU
# list, where the shares below would mean little.
cpu_ticks_of() { # cpu
    case $1 in
        *[!0-9]*) echo "- -" ;;
        *) awk -v c="cpu$1" '$1 == c { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat ;;
    esac
}
# Shares of a CPU over a run, in %: "idle other", other = busy, but not in the given process
# ticks (neighbours, interrupts). On the servers' CPU, idle near 0 means the target was
# bound by that CPU, a higher idle that it waited (on fdatasync, or on wrk); a large other
# share means something else took the CPU and the run is disturbed.
cpu_shares() { # "idle total" before, "idle total" after, process ticks
    awk -v b="$1" -v a="$2" -v p="$3" 'BEGIN {
        split(b, x, " "); split(a, y, " ")
        if (x[1] == "-" || y[2] - x[2] <= 0) { print "- -"; exit }
        t = y[2] - x[2]; i = y[1] - x[1]; o = t - i - p
        printf "%.1f %.1f", 100 * i / t, (o > 0) ? 100 * o / t : 0
    }'
}
# fdatasyncs of the durable floor's log so far (it answers them on /floor/syncs).
floor_syncs() {
    curl -s --max-time 2 "http://127.0.0.1:$FLOOR_PORT/floor/syncs" | awk '{ printf "%d", $1 }'
}

route_path() {
    case $1 in
        click) echo "/click.track?CID=1&AFID=1&ADID=1&SID=bench" ;;
        impression) echo "/impression.track?CID=1&AFID=1&ADID=1&SID=bench" ;;
        s2s) echo "/pixel.track" ;; # the path and query come from s2s.lua
        *) die "unknown route $1" ;;
    esac
}
route_script() {
    case $1 in
        s2s) echo "$BENCH_DIR/s2s.lua" ;;
        *) echo "$BENCH_DIR/visitors.lua" ;;
    esac
}

# One bounded wrk run; prints its RESULT line.
run_wrk() { # seconds script url
    timeout $(($1 + WRK_GRACE_S)) taskset -c "$WRK_CPUS" \
        wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$1s" --timeout 5s -s "$2" "$3" | grep '^RESULT ' ||
        die "wrk gave no result for $3"
}
field() { # name result-line
    tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2; found = 1 } END { if (!found) print 0 }'
}

mint_click_ids() { # -> the file of fresh click IDs
    local seconds ids="$WORK/click-ids.txt"
    seconds=$(awk -v d="$DURATION_S" -v f="$MINT_FACTOR" 'BEGIN { s = d * f; print (s == int(s)) ? s : int(s) + 1 }')
    rm -f "$WORK"/mint.*
    MINT_OUT="$WORK/mint" run_wrk "$seconds" "$BENCH_DIR/mint.lua" \
        "http://127.0.0.1:$CLICKTRAIL_PORT/click.track?CID=1&AFID=1&SID=mint&R=0" >/dev/null
    cat "$WORK"/mint.* >"$ids"
    log "minted $(wc -l <"$ids") click IDs in ${seconds}s"
    echo "$ids"
}

TSV="$WORK/results.tsv"
: >"$TSV"
measure() { # round route target pid port
    local round=$1 route=$2 target=$3 pid=$4 port=$5 before after result syncs_before=0 syncs=0
    alive "$pid" "$target"
    case $target in
        clicktrail) syncs_before=$(wal_syncs) ;;
        floor) syncs_before=$(floor_syncs) ;;
    esac
    before=$(cpu_ticks "$pid")
    local switches_before
    switches_before=$(context_switches "$pid")
    local cpu_before wrk_cpu_before
    cpu_before=$(cpu_ticks_of "$SERVER_CPUS")
    wrk_cpu_before=$(cpu_ticks_of "$WRK_CPUS")
    result=$(run_wrk "$DURATION_S" "$(route_script "$route")" "http://127.0.0.1:$port$(route_path "$route")")
    alive "$pid" "$target"
    after=$(cpu_ticks "$pid")
    local switches=$(($(context_switches "$pid") - switches_before))
    # "idle other" of the servers' CPU, then the idle share of wrk's (near 0: wrk, or a
    # neighbour on its CPU, may have been the limit).
    local shares wrk_idle
    shares=$(cpu_shares "$cpu_before" "$(cpu_ticks_of "$SERVER_CPUS")" $((after - before)))
    wrk_idle=$(cpu_shares "$wrk_cpu_before" "$(cpu_ticks_of "$WRK_CPUS")" 0 | cut -d' ' -f1)
    case $target in
        clicktrail) syncs=$(($(wal_syncs) - syncs_before)) ;;
        floor) syncs=$(($(floor_syncs) - syncs_before)) ;;
    esac
    local requests errors
    requests=$(field requests "$result")
    errors=$(($(field errors_status "$result") + $(field errors_connect "$result") + $(field errors_read "$result") + $(field errors_write "$result") + $(field errors_timeout "$result")))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$route" "$target" \
        "$(field rps "$result")" "$(field p50_us "$result")" "$(field p99_us "$result")" \
        "$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.2f", (n > 0) ? t * 1e6 / hz / n : 0 }')" \
        "$(peak_rss_kb "$pid")" "$requests" "$errors" "$(field reused "$result")" "$syncs" "$switches" "$(anon_rss_kb "$pid")" \
        "${shares% *}" "${shares#* }" "$wrk_idle" >>"$TSV"
    log "round $round $route $target: $(field rps "$result") req/s, p99 $(field p99_us "$result") us, errors $errors"
}

log "warming up for ${WARMUP_S}s per server"
run_wrk "$WARMUP_S" "$BENCH_DIR/visitors.lua" "http://127.0.0.1:$BASELINE_PORT$(route_path click)" >/dev/null
if [ "$FLOOR" = 1 ]; then
    run_wrk "$WARMUP_S" "$BENCH_DIR/visitors.lua" "http://127.0.0.1:$FLOOR_PORT$(route_path click)" >/dev/null
fi
run_wrk "$WARMUP_S" "$BENCH_DIR/visitors.lua" "http://127.0.0.1:$CLICKTRAIL_PORT$(route_path click)" >/dev/null

for round in $(seq 1 "$ROUNDS"); do
    for route in $ROUTES; do
        if [ "$route" = s2s ]; then
            CLICK_IDS_FILE=$(mint_click_ids)
            export CLICK_IDS_FILE
        fi
        measure "$round" "$route" baseline "$BASELINE_PID" "$BASELINE_PORT"
        if [ "$FLOOR" = 1 ]; then measure "$round" "$route" floor "$FLOOR_PID" "$FLOOR_PORT"; fi
        measure "$round" "$route" clicktrail "$CLICKTRAIL_PID" "$CLICKTRAIL_PORT"
    done
done

# Where the time goes: one profiled run per route, after (and apart from) the measured ones.
if [ "$PROFILE" = 1 ]; then
    command -v perf >/dev/null || die "PROFILE=1 needs perf (apt-get install -y linux-perf)"
    for route in $ROUTES; do
        if [ "$route" = s2s ]; then
            CLICK_IDS_FILE=$(mint_click_ids)
            export CLICK_IDS_FILE
        fi
        perf record -F 999 -g -p "$CLICKTRAIL_PID" -o "$WORK/perf.$route.data" \
            -- sleep "$DURATION_S" 2>"$WORK/perf.$route.log" &
        perf_pid=$!
        run_wrk "$DURATION_S" "$(route_script "$route")" \
            "http://127.0.0.1:$CLICKTRAIL_PORT$(route_path "$route")" >/dev/null
        wait "$perf_pid" || true
        {
            echo "# perf profile of clicktrail on $route ($DURATION_S s, self time, >= 0.5 %)"
            echo "## by binary"
            perf report -i "$WORK/perf.$route.data" --no-children --sort dso --stdio -g none \
                2>/dev/null | grep -v '^#' | grep -v '^$' | sed 's/  *$//'
            echo "## by symbol"
            perf report -i "$WORK/perf.$route.data" --no-children --percent-limit 0.5 \
                --sort dso,symbol --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' |
                sed 's/[ -]*$//'
        } >"$OUT_DIR/profile-$route.txt"
        log "profile of $route written to $OUT_DIR/profile-$route.txt"
    done
fi

# --- the Markdown report -------------------------------------------------------------
{
    echo "# clicktrail HTTP benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(uname -r)"
    echo "- $ROUNDS interleaved rounds x $DURATION_S s per route and target ($TARGETS), wrk $WRK_THREADS thread(s) x $CONNECTIONS connections"
    echo "- servers pinned to CPU(s) $SERVER_CPUS, wrk to CPU(s) $WRK_CPUS; clicktrail sync = \"$SYNC\", shards = $SHARDS (0: one per CPU)"
    if [ "$FLOOR" = 1 ]; then
        echo "- floor = the durable floor (\`baseline --durable\`, benches/http/baseline.rs): the baseline's 302, sent only after a group-committed fdatasync covers a click-sized record appended per request with the wal crate (as sync = \"always\"); $(grep -o '[0-9]* byte records' "$WORK/floor.log" || echo '? byte records')"
    fi
    echo "- CPU/req = server utime+stime over the run / requests; peak RSS = VmHWM at the end of the run (counts the mapped log segments); anon RSS = RssAnon then (heap)"
    echo "- ctx sw/req = context switches of all server threads over the run / requests"
    echo "- server CPU idle / other = shares of the servers' CPU over the run (/proc/stat): idle (+ iowait) is near 0 when the target is bound by that CPU, higher when it waits (on fdatasync, or on wrk); other = busy but not in the server's process (interrupts, neighbours): more than a few % means the run was disturbed by other work on the machine"
    echo "- wrk CPU idle = idle share of wrk's CPU over the run: near 0 when wrk (or a neighbour on its CPU) may have been the limit"
    echo "- req/fsync = requests / fdatasyncs of the log(s) over the run (clicktrail: clicktrail_wal_syncs of the shard logs; floor: /floor/syncs): the group-commit batch"
    echo
    awk -F'\t' -v floor="$FLOOR" -f - "$TSV" <<'AWK'
function median(list,    n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
    if (n == 0) return 0
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function ratio(a, b) { return (b > 0) ? a / b : 0 }
function idle_of(list) { return (list == "") ? "-" : sprintf("%.0f %%", median(list)) }
{
    key = $1 SUBSEP $2
    rps[key, $3] = $4; p50[key, $3] = $5; p99[key, $3] = $6; cpu[key, $3] = $7; rss[key, $3] = $8
    req[key, $3] = $9; err[key, $3] = $10; reused[key, $3] = $11; syncs[key, $3] = $12; cs[key, $3] = $13; anon[key, $3] = $14; idle[key, $3] = $15
    other[key, $3] = $16; wrk_idle[key, $3] = $17
    if (!(($2) in seen)) { seen[$2] = 1; routes[++nroutes] = $2 }
    if ($1 > rounds) rounds = $1
}
END {
    target_rps["click"] = 0.8; target_rps["s2s"] = 0.6; target_rps["impression"] = 0.85
    target_cpu["click"] = 1.5
    target_names["baseline"]; target_names["floor"]; target_names["clicktrail"]
    print "## Summary (medians over rounds, each column on its own)"
    print ""
    print "| route | baseline req/s | floor req/s | floor / baseline | clicktrail req/s | req/s ratio | clicktrail / floor | target | CPU/req baseline | CPU/req clicktrail | CPU ratio | clicktrail p50 / p99 | req/fsync | peak RSS | most other on server CPU | met |"
    print "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for (i = 1; i <= nroutes; i++) {
        r = routes[i]; lb = lc = lr = lcb = lcc = lcr = l50 = l99 = lbatch = lf = lfr = lcf = ""; worst = "-"
        for (k = 1; k <= rounds; k++) {
            key = k SUBSEP r
            if (!((key, "clicktrail") in rps)) continue
            lb = lb " " rps[key, "baseline"]; lc = lc " " rps[key, "clicktrail"]
            lr = lr " " ratio(rps[key, "clicktrail"], rps[key, "baseline"])
            lcb = lcb " " cpu[key, "baseline"]; lcc = lcc " " cpu[key, "clicktrail"]
            lcr = lcr " " ratio(cpu[key, "clicktrail"], cpu[key, "baseline"])
            l50 = l50 " " p50[key, "clicktrail"]; l99 = l99 " " p99[key, "clicktrail"]
            lbatch = lbatch " " ratio(req[key, "clicktrail"], syncs[key, "clicktrail"])
            peak = rss[key, "clicktrail"]
            for (tg in target_names) if ((key, tg) in other && other[key, tg] != "-" && (worst == "-" || other[key, tg] + 0 > worst + 0)) worst = other[key, tg]
            if ((key, "floor") in rps) {
                lf = lf " " rps[key, "floor"]
                lfr = lfr " " ratio(rps[key, "floor"], rps[key, "baseline"])
                lcf = lcf " " ratio(rps[key, "clicktrail"], rps[key, "floor"])
            }
        }
        cratio = median(lcr)
        goal = sprintf(">= %.2fx req/s", target_rps[r])
        met = (median(lr) >= target_rps[r]) ? "yes" : "**no**"
        if (r in target_cpu) {
            goal = goal sprintf(", <= %.1fx CPU", target_cpu[r])
            if (cratio > target_cpu[r]) met = "**no**"
        }
        fcols = (lf == "") ? "- | - | " : sprintf("%.0f | %.2fx | ", median(lf), median(lfr))
        fcol = (lf == "") ? "-" : sprintf("%.2fx", median(lcf))
        printf "| %s | %.0f | %s%.0f | %.2fx | %s | %s | %.1f us | %.1f us | %.2fx | %.2f / %.2f ms | %.1f | %.1f MiB | %s | %s |\n", \
            r, median(lb), fcols, median(lc), median(lr), fcol, goal, median(lcb), median(lcc), cratio, \
            median(l50) / 1000, median(l99) / 1000, median(lbatch), peak / 1024, (worst == "-") ? "-" : worst " %", met
    }
    if (floor == 1) {
        print ""
        print "## Durable floor (medians over rounds)"
        print ""
        print "What durability alone costs (floor against baseline), and what clicktrail adds beyond it (clicktrail against floor)."
        print ""
        print "| route | floor req/s | floor / baseline | floor CPU/req | floor CPU / baseline CPU | floor p50 / p99 | floor req/fsync | floor ctx sw/req | server CPU idle: baseline / floor / clicktrail | clicktrail / floor req/s | clicktrail CPU/req - floor CPU/req |"
        print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for (i = 1; i <= nroutes; i++) {
            r = routes[i]; lf = lfr = lfc = lfcr = l50 = l99 = lbatch = lcs = lcf = ldiff = lib = lif = lic = ""
            for (k = 1; k <= rounds; k++) {
                key = k SUBSEP r
                if (!((key, "floor") in rps)) continue
                lf = lf " " rps[key, "floor"]
                lfr = lfr " " ratio(rps[key, "floor"], rps[key, "baseline"])
                lfc = lfc " " cpu[key, "floor"]
                lfcr = lfcr " " ratio(cpu[key, "floor"], cpu[key, "baseline"])
                l50 = l50 " " p50[key, "floor"]; l99 = l99 " " p99[key, "floor"]
                lbatch = lbatch " " ratio(req[key, "floor"], syncs[key, "floor"])
                lcs = lcs " " ratio(cs[key, "floor"], req[key, "floor"])
                lcf = lcf " " ratio(rps[key, "clicktrail"], rps[key, "floor"])
                ldiff = ldiff " " (cpu[key, "clicktrail"] - cpu[key, "floor"])
                if (idle[key, "baseline"] != "-") lib = lib " " idle[key, "baseline"]
                if (idle[key, "floor"] != "-") lif = lif " " idle[key, "floor"]
                if (idle[key, "clicktrail"] != "-") lic = lic " " idle[key, "clicktrail"]
            }
            if (lf == "") continue
            printf "| %s | %.0f | %.2fx | %.1f us | %.2fx | %.2f / %.2f ms | %.1f | %.2f | %s / %s / %s | %.2fx | %.1f us |\n", \
                r, median(lf), median(lfr), median(lfc), median(lfcr), median(l50) / 1000, median(l99) / 1000, \
                median(lbatch), median(lcs), idle_of(lib), idle_of(lif), idle_of(lic), median(lcf), median(ldiff)
        }
    }
    print ""
    print "## Every run"
    print ""
    print "| route | round | target | req/s | p50 ms | p99 ms | CPU/req | ctx sw/req | peak RSS | anon RSS | requests | req/fsync | server CPU idle / other | wrk CPU idle | errors | req/s ratio | CPU ratio | req/s ratio to floor |"
    print "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    ntargets = split("baseline floor clicktrail", targets, " ")
    for (i = 1; i <= nroutes; i++) {
        r = routes[i]
        for (k = 1; k <= rounds; k++) {
            key = k SUBSEP r
            for (t = 1; t <= ntargets; t++) {
                tg = targets[t]
                if (!((key, tg) in rps)) continue
                rratio = cratio = fratio = "-"
                if (tg != "baseline" && rps[key, "baseline"] > 0) rratio = sprintf("%.2fx", rps[key, tg] / rps[key, "baseline"])
                if (tg != "baseline" && cpu[key, "baseline"] > 0) cratio = sprintf("%.2fx", cpu[key, tg] / cpu[key, "baseline"])
                if (tg == "clicktrail" && rps[key, "floor"] > 0) fratio = sprintf("%.2fx", rps[key, tg] / rps[key, "floor"])
                errors = err[key, tg]
                if (reused[key, tg] > 0) errors = errors " (" reused[key, tg] " reused IDs)"
                batch = (syncs[key, tg] > 0) ? sprintf("%.1f", req[key, tg] / syncs[key, tg]) : "-"
                idle_cell = (idle[key, tg] == "-") ? "-" : idle[key, tg] " % / " other[key, tg] " %"
                wrk_cell = (wrk_idle[key, tg] == "-") ? "-" : wrk_idle[key, tg] " %"
                printf "| %s | %d | %s | %.0f | %.2f | %.2f | %.1f us | %.2f | %.1f MiB | %.1f MiB | %d | %s | %s | %s | %s | %s | %s | %s |\n", \
                    r, k, tg, rps[key, tg], p50[key, tg] / 1000, p99[key, tg] / 1000, cpu[key, tg], \
                    ratio(cs[key, tg], req[key, tg]), \
                    rss[key, tg] / 1024, anon[key, tg] / 1024, req[key, tg], batch, idle_cell, wrk_cell, errors, rratio, cratio, fratio
            }
        }
    }
}
AWK
} >"$OUT"
cat "$OUT"
log "written to $OUT"
