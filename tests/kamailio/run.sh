#!/usr/bin/env bash
# Kamailio end to end (tests/kamailio/e2e.py): installs Kamailio 5.6 with
# http_client and SIPp from Debian if missing (without starting the packaged
# kamailio service), builds the relay and the mock, and runs the
# push-and-wait flow through contrib/kamailio/kamailio.cfg on loopback.
# The Kamailio it starts runs in the foreground with its own cfg, pid file,
# control socket and random ports; everything is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

need=()
command -v kamailio >/dev/null 2>&1 || need+=(kamailio)
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/http_client.so ] || need+=(kamailio-utils-modules)
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # Keep the package's kamailio service from starting (policy-rc.d 101 =
  # "action forbidden"), unless a policy is already in place.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  apt_install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
  apt_install || { $SUDO apt-get update >/dev/null; apt_install; }
  if [ -n "$policy" ]; then $SUDO rm -f "$policy"; trap - EXIT; fi
fi

cargo build --locked --bin pushrelay -p pushrelay -q
cargo build --locked --bin pushrelay-mock -p pushrelay-mock -q
# The run itself takes about 20 s; 180 s is the hard stop.
exec timeout 180 python3 tests/kamailio/e2e.py
