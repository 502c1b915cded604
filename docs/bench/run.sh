#!/usr/bin/env bash
# The benchmark set of docs/BENCHMARKS.md (about 8 minutes on 2 cores).
# Starts a throwaway PostgreSQL cluster (tests/pg.sh style, but with the
# durability of the SQLite default: fsync on, synchronous_commit off — see
# "Method"), runs every point, and writes docs/bench/run.txt.
#   bash docs/bench/run.sh            # everything
#   bash docs/bench/run.sh apns-sqlite  # one group (names below)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=docs/bench
B=target/release/pushrelay-bench
cargo build --release -p pushrelay-bench

start_bench_postgres() {
  local initdb bindir port
  initdb="$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)"
  [ -n "$initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; return 1; }
  bindir="$(dirname "$initdb")"
  PG_BENCH_DIR="$(mktemp -d /tmp/pushrelay-bench-pg.XXXXXX)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  local run=()
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$PG_BENCH_DIR"; run=(runuser -u postgres --); fi
  "${run[@]}" "$bindir/initdb" -D "$PG_BENCH_DIR/data" -A trust -U postgres >"$PG_BENCH_DIR/initdb.log" 2>&1
  # Same durability as the relay's SQLite (WAL, synchronous=NORMAL): a crash
  # may lose the last commits, never corrupts. tests/pg.sh uses fsync=off,
  # which is faster but not a setting anyone runs in production.
  "${run[@]}" "$bindir/pg_ctl" -D "$PG_BENCH_DIR/data" -l "$PG_BENCH_DIR/server.log" -w \
    -o "-p $port -k $PG_BENCH_DIR -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=off -c max_connections=200 -c shared_buffers=256MB" start >/dev/null
  PG_BENCH_CTL=("${run[@]}" "$bindir/pg_ctl" -D "$PG_BENCH_DIR/data")
  PG="postgres://postgres@127.0.0.1:$port"
  trap 'stop_bench_postgres' EXIT
  echo "bench PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on port $port (fsync=on, synchronous_commit=off)"
}
stop_bench_postgres() {
  if [ -n "${PG_BENCH_DIR:-}" ]; then
    "${PG_BENCH_CTL[@]}" stop -m fast >/dev/null 2>&1 || true
    rm -rf "$PG_BENCH_DIR"; PG_BENCH_DIR=""
  fi
}

only="${1:-all}"
want() { [ "$only" = all ] || [ "$only" = "$1" ]; }
run() { echo; echo "\$ pushrelay-bench $*"; "$B" "$@"; }

{
  start_bench_postgres
  want apns-sqlite && run apns --devices 2000 --concurrency 16,64 --duration-secs 5 --out $OUT
  want apns-pg     && run apns --devices 2000 --concurrency 16,64 --duration-secs 5 --database-url "$PG" --out $OUT
  want apns-pg2    && run apns --devices 2000 --concurrency 16,64 --duration-secs 5 --database-url "$PG" --nodes 2 --out $OUT
  want uds-sqlite  && run uds-register --concurrency 16 --duration-secs 5 --out $OUT
  want uds-pg      && run uds-register --concurrency 16 --duration-secs 5 --database-url "$PG" --out $OUT
  want sip-sqlite  && run sip-wake --aors 10000 --waiters 1000 --concurrency 16 --out $OUT
  want sip-pg2     && run sip-wake --aors 10000 --waiters 1000 --concurrency 16 --database-url "$PG" --nodes 2 --out $OUT
  want jwe         && run jwe --out $OUT
} 2>&1 | tee "$OUT/run-${only}.txt"
