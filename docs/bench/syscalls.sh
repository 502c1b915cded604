#!/usr/bin/env bash
# System calls per call of the relay's threads at a fixed rate
# (docs/BENCHMARKS.md, "v5 → v5.1"): runs `pushrelay-bench soak` (SQLite,
# APNs, RATE calls/s, open loop) and counts every thread's system calls with
# `perf trace -s` for 10 s in the middle of it; prints them per call, by
# thread kind (relay-rt, sqlite-writer, sqlx-sqlite-worker; then the mock,
# the generator and the bench's own thread, which are not the relay).
# Needs perf (Debian: linux-perf) and root (or perf_event_paranoid ≤ -1).
#   bash docs/bench/syscalls.sh [RATE] [BENCH-BINARY]
set -euo pipefail
rate=${1:-400}
bin=${2:-target/release/pushrelay-bench}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin" soak --rate "$rate" --soak-minutes 0.6 --out "$work" >"$work/log" 2>&1 &
bench=$!
for _ in $(seq 1 240); do grep -q '^ *10 ' "$work/log" && break; sleep 0.5; done
perf trace -s -p "$bench" -o "$work/trace" -- sleep 10 >/dev/null 2>&1
wait "$bench"
python3 - "$work/trace" "$rate" <<'EOF'
import collections, re, sys
trace, rate = sys.argv[1], float(sys.argv[2])
calls = rate * 10
kinds = collections.defaultdict(collections.Counter)
kind = None
for line in open(trace):
    m = re.match(r'^ (\S+) \(\d+\), \d+ events', line)
    if m:
        kind = re.sub(r'\d+$', '', m.group(1)).replace('sqlx-sqlite-wor', 'sqlx-sqlite-worker')
        continue
    m = re.match(r'^\s+([a-z_0-9]+)\s+(\d+)\s', line)
    if m and kind:
        kinds[kind][m.group(1)] += int(m.group(2))
relay = ('relay-rt', 'sqlite-writer', 'sqlx-sqlite-worker')
total = collections.Counter()
for k in relay:
    total.update(kinds.get(k, {}))
print(f"system calls per call at {rate:.0f} calls/s (10 s, {calls:.0f} calls)")
print(f"  relay threads: {sum(total.values()) / calls:.1f} per call: " + ", ".join(f"{s} {n / calls:.2f}" for s, n in total.most_common(10)))
for k, c in sorted(kinds.items(), key=lambda kc: -sum(kc[1].values())):
    tag = '' if k in relay else ' (not the relay)'
    print(f"  {k}{tag}: {sum(c.values()) / calls:.1f}: " + ", ".join(f"{s} {n / calls:.2f}" for s, n in c.most_common(6)))
EOF
