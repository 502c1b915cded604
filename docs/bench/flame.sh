#!/usr/bin/env bash
# A flamegraph of the relay at a fraction of its closed-loop maximum
# (docs/BENCHMARKS.md, "Profiles"): runs `pushrelay-bench apns` (SQLite,
# C=64, then an open-loop point at FRACTION of the best rate) and samples
# the process with perf during that point; keeps the relay's threads
# (relay-rt, sqlx-sqlite-worker, sqlite-writer) and draws them with inferno.
# Needs perf (Debian: linux-perf) and inferno (`cargo install inferno`).
#   [FOLDED=stacks.txt] bash docs/bench/flame.sh OUT.svg [FRACTION] [BENCH-BINARY]
set -euo pipefail
out=${1:?usage: flame.sh OUT.svg [FRACTION] [BENCH-BINARY]}
fraction=${2:-0.5}
bin=${3:-target/release/pushrelay-bench}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin" apns --concurrency 64 --duration-secs 10 --no-ceiling --open-loop "$fraction" --out "$work" >"$work/log" 2>&1 &
bench=$!
for _ in $(seq 1 240); do grep -q '^open loop' "$work/log" && break; sleep 0.5; done
sleep 2  # past the open-loop warm-up
perf record -e cpu-clock -F 499 -g --call-graph dwarf,16384 -p "$bench" -o "$work/perf.data" -- sleep 6 >/dev/null 2>&1
wait "$bench"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf | grep -E '^(relay-rt|sqlx-sqlite|sqlite-writer)' >"$work/folded"
[ -n "${FOLDED:-}" ] && cp "$work/folded" "$FOLDED"  # FOLDED=path keeps the collapsed stacks
inferno-flamegraph --minwidth 0.5 --title "pushrelay relay threads at ${fraction} of the closed-loop maximum (open loop, SQLite)" <"$work/folded" >"$out"
sed -n '/^ conc/,$p' "$work/log" | grep -v '^wrote'
echo "wrote $out"
