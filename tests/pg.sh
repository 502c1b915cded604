#!/usr/bin/env bash
# Source this: `start_test_postgres` starts a throwaway PostgreSQL cluster
# under /tmp (installing PostgreSQL with apt-get if it is missing), exports
# PUSHRELAY_TEST_DATABASE_URL, and stops/removes the cluster on exit.
# Tests then create one fresh database per test on it.

start_test_postgres() {
  local bindir initdb
  initdb="$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)"
  if [ -z "$initdb" ]; then
    if [ "$(id -u)" -eq 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >/dev/null 2>&1 || {
        apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >/dev/null
      }
      initdb="$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)"
    fi
    if [ -z "$initdb" ]; then
      echo "PostgreSQL is not installed and cannot be installed here" >&2
      return 1
    fi
  fi
  bindir="$(dirname "$initdb")"
  PG_TEST_DIR="$(mktemp -d /tmp/pushrelay-pg.XXXXXX)"
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  local run=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$PG_TEST_DIR"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" "$bindir/initdb" -D "$PG_TEST_DIR/data" -A trust -U postgres >"$PG_TEST_DIR/initdb.log" 2>&1
  "${run[@]}" "$bindir/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/server.log" -w \
    -o "-p $port -k $PG_TEST_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
  PG_TEST_CTL=("${run[@]}" "$bindir/pg_ctl" -D "$PG_TEST_DIR/data")
  export PUSHRELAY_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port"
  trap 'stop_test_postgres' EXIT
  echo "test PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on port $port"
}

stop_test_postgres() {
  if [ -n "${PG_TEST_DIR:-}" ]; then
    "${PG_TEST_CTL[@]}" stop -m fast >/dev/null 2>&1 || true
    rm -rf "$PG_TEST_DIR"
    PG_TEST_DIR=""
  fi
}
