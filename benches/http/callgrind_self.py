#!/usr/bin/env python3
"""Self cost per function of a callgrind dump, per request, and the calls to the heap
allocator per request: the profile callgrind.sh writes next to its table.

callgrind_annotate 3.19 attributes every self cost to `clone` on dumps taken with
callgrind_control from a multi-threaded process, so this reads the dump format itself:
a cost line belongs to the current `fn=` unless it follows a `calls=` line (then it is
the inclusive cost of a call, not self cost). Names are compressed as `fn=(id) name`
once, `fn=(id)` afterwards, and `cfn=` lines define ids too.

Usage: callgrind_self.py DUMP REQUESTS [TOP]
"""

import re
import sys

NAME = re.compile(r"^(c?fn)=\((\d+)\)(?: (.*))?$")


def self_costs(path):
    names, costs, calls = {}, {}, {}
    current = callee = None
    after_calls = False
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            m = NAME.match(line)
            if m:
                kind, ident, name = m.groups()
                if name is not None:
                    names[ident] = name
                if kind == "fn":
                    current = ident
                else:
                    callee = ident
                continue
            if line.startswith("calls="):
                after_calls = True
                calls[callee] = calls.get(callee, 0) + int(line[6:].split()[0])
                continue
            first = line[0]
            if first.isdigit() or first in "+-*":
                fields = line.split()
                if after_calls:
                    after_calls = False
                    continue
                if current is not None and len(fields) >= 2:
                    costs[current] = costs.get(current, 0) + int(fields[1])
            # Other lines (fl=, fi=, fe=, ob=, cob=, summary:, ...) change no function.
    named = lambda table: {names.get(i, f"({i})"): c for i, c in table.items()}
    return named(costs), named(calls)


def main():
    path, requests = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    costs, calls = self_costs(path)
    total = sum(costs.values())
    print(f"{'Ir/req':>9} {'share':>6}  function (self cost)")
    for name, cost in sorted(costs.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{cost / requests:9.0f} {100 * cost / total:5.1f}%  {name[:160]}")
    print(f"{total / requests:9.0f} 100.0%  total")
    # Heap allocations are what the request path is trimmed of first: count them, under
    # glibc's names (the baseline) or the entry points the `mimalloc` crate calls
    # (clicktrail's allocator since 1f57a88).
    for label, names in ALLOCATOR_CALLS:
        count = sum(calls.get(name, 0) for name in names)
        print(f"{count / requests:9.1f} calls to {label} per request")


# What each line of the allocator summary counts.
ALLOCATOR_CALLS = (
    ("malloc", ("malloc", "calloc", "mi_malloc_aligned", "mi_zalloc_aligned")),
    ("realloc", ("realloc", "mi_realloc_aligned")),
    ("free", ("free", "mi_free")),
)


if __name__ == "__main__":
    main()
