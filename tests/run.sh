#!/usr/bin/env bash
# The test command (README, .ci/run). Checks the format (rustfmt.toml) and
# the lints (clippy, warnings denied), installs what the suites need, then:
#   1. every test of the crate on SQLite (unit, integration, interop, faults);
#   2. the HTTP suite again on a throwaway PostgreSQL server;
#   3. the OpenAPI-driven fuzz run (schemathesis) against the real relay;
#   4. Kamailio + SIPp end to end (tests/kamailio);
#   5. the packaging checks (systemd-analyze, hadolint);
#   6. the offline RustSec check of the release dependency graph.
# Extra args go to `cargo test` and skip steps 2-3 (`bash tests/run.sh uds`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "== format (rustfmt.toml) =="
if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt; fi
cargo fmt --all --check

echo "== lints (clippy; a warning fails the run) =="
if ! cargo clippy --version >/dev/null 2>&1; then rustup component add clippy; fi
cargo clippy --locked --workspace --all-targets -- -D warnings

bash tests/interop/setup.sh
bash tests/console/setup.sh

cargo test --locked --workspace --all-targets "$@" 2>&1 | tee -a "$log"
if [ $# -eq 0 ]; then
  # shellcheck source=tests/pg.sh
  source tests/pg.sh
  start_test_postgres
  trap 'stop_test_postgres; rm -f "$log"' EXIT
  echo "== the HTTP suite on PostgreSQL =="
  cargo test --locked --test api 2>&1 | tee -a "$log"

  echo "== OpenAPI fuzz run =="
  bash tests/fuzz/schemathesis.sh

  echo "== Kamailio end to end =="
  bash tests/kamailio/run.sh

  echo "== packaging (systemd unit, Dockerfile) =="
  bash tests/packaging/check.sh

  echo "== supply chain (RustSec, offline) =="
  bash tests/supply-chain/audit.sh
fi

# One closing line over every cargo test binary that ran (both passes).
awk '/^test result:/ { p += $4; f += $6 } END { printf "pushrelay tests: %d passed, %d failed\n", p, f }' "$log"
