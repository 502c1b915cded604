#!/usr/bin/env bash
# OpenAPI-driven fuzz run: schemathesis generates requests for every route in
# schemas/openapi.yaml against a real relay and fails on any 5xx (or a
# response that breaks the documented schema for its status).
# Bounded: -n examples per operation; traffic only to 127.0.0.1 (provider
# URLs point at a closed local port, so no push ever leaves the machine).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tests/fuzz"
examples="${FUZZ_EXAMPLES:-40}"

if [ ! -x "$here/.venv/bin/python" ]; then python3 -m venv "$here/.venv"; fi
if ! "$here/.venv/bin/python" -c 'import schemathesis, jsonschema, openapi_spec_validator' 2>/dev/null; then
  "$here/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi

# The schema files themselves: valid OpenAPI 3.1, JSON Schemas in step, fixtures as documented.
"$here/.venv/bin/python" "$root/schemas/check.py"

bin="${PUSHRELAY_BIN:-$root/target/debug/pushrelay}"
[ -x "$bin" ] || (cd "$root" && cargo build --locked --bin pushrelay)

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
closed="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
token="fuzz-admin-token-$(date +%s)-0123456789"
(
  cd "$work"
  PUSHRELAY_ADMIN_TOKEN="$token" \
  PUSHRELAY_APNS_PRODUCTION_URL="https://127.0.0.1:$closed" \
  PUSHRELAY_APNS_SANDBOX_URL="https://127.0.0.1:$closed" \
  PUSHRELAY_FCM_BASE_URL="https://127.0.0.1:$closed" \
  PUSHRELAY_CALLS_RING_SECONDS=2 \
  exec "$bin" serve --listen "127.0.0.1:$port" >"$work/relay.log" 2>&1
) &
relay=$!
trap 'kill $relay 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

PYTHONPATH="$here" SCHEMATHESIS_HOOKS=hooks "$here/.venv/bin/st" run "$root/schemas/openapi.yaml" \
  --url "http://127.0.0.1:$port" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  -n "$examples" --request-timeout 30 --generation-deterministic \
  --no-color
status=$?
if grep -q "panicked" "$work/relay.log"; then
  echo "relay panicked during the fuzz run:"; grep -A5 panicked "$work/relay.log"; exit 1
fi
exit $status
