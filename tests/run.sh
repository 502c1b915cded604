#!/usr/bin/env bash
# The test command (README, .ci/run): installs the test tools the suites
# need (interop JWE implementations), then runs every test of the crate.
#   bash tests/run.sh            # everything
#   bash tests/run.sh uds        # extra args go to `cargo test`
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tests/interop/setup.sh

cargo test --locked --all-targets "$@"

# OpenAPI-driven fuzz run against the real relay (zero 5xx allowed).
if [ $# -eq 0 ]; then
  bash tests/fuzz/schemathesis.sh
fi
