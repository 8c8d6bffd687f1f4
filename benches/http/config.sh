# Sourced by the HTTP bench scripts (run.sh, callgrind.sh, threads.sh, steps.sh): the one
# place that spells clicktrail's bench configuration, so they all measure the same server.

# Writes the config to FILE: a listener on 127.0.0.1:PORT, the log in DATA_DIR with the
# given sync policy and shard count, the admin API on TOKEN (empty: off), one campaign
# (CID 1, AFID posts allowed) and one affiliate (AFID 1). SERVER_LINES, optional, are
# extra `[server]` lines (steps.sh's ipv6 mix trusts loopback as a proxy with them).
write_bench_config() { # FILE PORT DATA_DIR SYNC SHARDS TOKEN [SERVER_LINES]
    local admin=""
    if [ -n "$6" ]; then admin=$'\n[admin]\ntoken = "'"$6"$'"\n'; fi
    local server_lines=""
    if [ -n "${7:-}" ]; then server_lines=$'\n'"$7"; fi
    cat >"$1" <<CONFIG
[server]
listen = "127.0.0.1:$2"
public_url = "http://127.0.0.1:$2"$server_lines

[storage]
data_dir = "$3"
sync = "$4"
shards = $5
$admin
[[campaigns]]
id = 1
name = "Bench offer"
landing_url = "https://shop.example/?ref={click_id}&a={affiliate_id}&s={sid1}"
revenue = 10.0
payout = 4.0
allow_afid_posts = true

[[affiliates]]
id = 1
name = "Bench affiliate"
CONFIG
}

# Makes $WORK, a fresh directory /tmp/clicktrail-NAME.XXXXXX, and arranges that when the
# script exits the server in $SERVER_PID (if any) is stopped and $WORK removed.
bench_work_dir() { # NAME
    WORK=$(mktemp -d "/tmp/clicktrail-$1.XXXXXX")
    SERVER_PID=""
    trap bench_cleanup EXIT
}
bench_cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
