#!/usr/bin/env bash
# The test command (README, .ci/run). Installs what the suites need, then:
#   1. every test of the crate on SQLite (unit, integration, interop, faults);
#   2. the HTTP suite again on a throwaway PostgreSQL server;
#   3. the OpenAPI-driven fuzz run (schemathesis) against the real relay.
# Extra args go to `cargo test` and skip steps 2-3 (`bash tests/run.sh uds`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tests/interop/setup.sh

cargo test --locked --all-targets "$@"
[ $# -eq 0 ] || exit 0

# shellcheck source=tests/pg.sh
source tests/pg.sh
start_test_postgres
cargo test --locked --test api

bash tests/fuzz/schemathesis.sh
