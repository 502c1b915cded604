#!/usr/bin/env bash
# Installs the foreign JWE implementations used by tests/jwe_interop.rs and
# the Web Push ones used by tests/webpush_interop.rs:
#   - npm `jose` (panva)        -> tests/interop/node_modules
#   - Python `jwcrypto`         -> tests/interop/.venv
#   - Python `http_ece`, `py-vapid` (Mozilla) -> tests/interop/.venv
#   - Debian `jose` CLI (José)  -> system package (apt)
# Idempotent: re-running only installs what is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

# 1. Node: panva/jose
if [ ! -d node_modules/jose ]; then
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund
  else
    npm install --no-audit --no-fund
  fi
fi
echo "node jose: $(node -e 'console.log(require("./node_modules/jose/package.json").version)')"

# 2. Python: jwcrypto in a local venv
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import jwcrypto, http_ece, py_vapid' 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
echo "python jwcrypto: $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("jwcrypto"))')"
echo "python http_ece / py-vapid: $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("http_ece"), m.version("py-vapid"))')"

# 3. José CLI (Debian package `jose`)
if ! command -v jose >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y jose; then
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y jose
  fi
fi
echo "jose cli: $(command -v jose)"
echo "interop tools ready"
