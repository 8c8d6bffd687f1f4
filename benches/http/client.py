#!/usr/bin/env python3
"""A counted HTTP/1.1 load client for benches/http/callgrind.sh.

wrk runs for a duration; a per-request instruction count needs an exact number of
requests instead, so this sends exactly COUNT requests over CONNECTIONS keep-alive
connections to 127.0.0.1 (one thread each, one request in flight per connection) and
prints one line: `answered=<n> errors=<n> status=<code>:<n>,...`.

Routes (the same requests as run.sh's wrk scripts):
  click       GET /click.track?CID=1&AFID=1&ADID=1&SID=bench, a distinct User-Agent each
  impression  GET /impression.track?CID=1&AFID=1&ADID=1&SID=bench, likewise
  mint        GET /click.track?CID=1&AFID=1&SID=mint&R=0; the answered click IDs go to
              --ids (one a line), for s2s
  s2s         GET /pixel.track?type=s2s&ClickID=<id>, each ID of --ids once

Usage: client.py ROUTE PORT COUNT [--connections N] [--ids FILE]
"""

import argparse
import socket
import sys
import threading

# Longest answer head accepted; ours are a few hundred bytes.
MAX_HEAD_BYTES = 16 * 1024
# Seconds a connection may wait for one answer: clicktrail under callgrind is ~50x slower
# than native, and a wedged server must still end the run.
ANSWER_TIMEOUT_S = 60
# Distinct visitors before User-Agents repeat, as benches/http/visitors.lua.
VISITORS = 100000


def target(route, index, ids):
    if route == "click":
        return "/click.track?CID=1&AFID=1&ADID=1&SID=bench", index
    if route == "impression":
        return "/impression.track?CID=1&AFID=1&ADID=1&SID=bench", index
    if route == "mint":
        return "/click.track?CID=1&AFID=1&SID=mint&R=0", index
    if route == "s2s":
        return "/pixel.track?type=s2s&ClickID=" + ids[index % len(ids)], 0
    raise SystemExit(f"unknown route {route}")


def read_answer(sock, buf):
    """Reads one answer from `sock`; returns (status, body, rest of buf)."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD_BYTES:
            raise IOError("answer head too large")
        chunk = sock.recv(65536)
        if not chunk:
            raise IOError("connection closed")
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise IOError("connection closed in a body")
        buf += chunk
    return status, buf[:length], buf[length:]


def worker(args, ids, indexes, results, minted):
    statuses = {}
    errors = 0
    sock = None
    buf = b""
    for index in indexes:
        path, visitor = target(args.route, index, ids)
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
            f"User-Agent: Mozilla/5.0 bench-visitor-{visitor % VISITORS}\r\n\r\n"
        ).encode()
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", args.port), ANSWER_TIMEOUT_S)
                buf = b""
            sock.sendall(request)
            status, body, buf = read_answer(sock, buf)
            statuses[status] = statuses.get(status, 0) + 1
            if args.route == "mint" and status == 200:
                minted.append(body.decode().strip())
        except (OSError, ValueError, IndexError):
            errors += 1
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()
    results.append((statuses, errors))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("route")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--ids")
    args = parser.parse_args()
    ids = []
    if args.route == "s2s":
        with open(args.ids) as f:
            ids = [line.strip() for line in f if line.strip()]
        if not ids:
            raise SystemExit("s2s needs click IDs in --ids")
    results, minted, threads = [], [], []
    for c in range(args.connections):
        indexes = range(c, args.count, args.connections)
        t = threading.Thread(target=worker, args=(args, ids, indexes, results, minted))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    statuses, errors = {}, 0
    for s, e in results:
        errors += e
        for code, n in s.items():
            statuses[code] = statuses.get(code, 0) + n
    if args.route == "mint":
        with open(args.ids, "w") as f:
            f.writelines(i + "\n" for i in minted)
    answered = sum(statuses.values())
    codes = ",".join(f"{code}:{n}" for code, n in sorted(statuses.items()))
    print(f"answered={answered} errors={errors} status={codes}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
