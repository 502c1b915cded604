#!/usr/bin/env bash
# Kamailio end to end (tests/kamailio/e2e.py): installs Kamailio 5.6 with
# http_client and SIPp from Debian if missing, builds the relay and the mock,
# and runs the push-and-wait flow through contrib/kamailio/kamailio.cfg.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
need=()
command -v kamailio >/dev/null 2>&1 || need+=(kamailio)
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/http_client.so ] || need+=(kamailio-utils-modules)
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null \
    || { $SUDO apt-get update >/dev/null; $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
cargo build --locked --bin pushrelay -p pushrelay -q
cargo build --locked --bin pushrelay-mock -p pushrelay-mock -q
exec timeout 180 python3 tests/kamailio/e2e.py
