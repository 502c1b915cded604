#!/usr/bin/env bash
# Installs what tests/api/console.rs drives: Debian's chromium (apt) and
# playwright-core (npm, no browser download: it uses /usr/bin/chromium).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; then
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
  fi
fi
if [ ! -d node_modules/playwright-core ]; then
  if [ -f package-lock.json ]; then
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
  else
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund
  fi
fi
echo "console test tools: $(chromium --version 2>/dev/null | head -1), playwright-core $(node -e 'console.log(require("./node_modules/playwright-core/package.json").version)')"
