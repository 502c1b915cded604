#!/usr/bin/env bash
# Foreign JWE implementation for tests/jwe_interop.rs: the José CLI
# (Debian package `jose`, latchset/jose).
# Usage: jose_cli.sh encrypt <key_b64> < plaintext  > compact
#        jose_cli.sh decrypt <key_b64> < compact    > plaintext
# José takes keys as JWK files, so the raw key is wrapped in an oct JWK in a
# private temp dir. Without an explicit protected-header template José picks
# A256KW + A256CBC-HS512, so `alg`/`enc` are always given.
set -euo pipefail
if [ $# -ne 2 ] || { [ "$1" != encrypt ] && [ "$1" != decrypt ]; }; then
  echo "usage: jose_cli.sh encrypt|decrypt <key_b64>" >&2
  exit 2
fi
mode="$1"
k="$(printf '%s' "$2" | base64 -d | base64 -w0 | tr '+/' '-_' | tr -d '=')"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
umask 077
printf '{"kty":"oct","k":"%s"}' "$k" > "$tmp/jwk.json"
if [ "$mode" = encrypt ]; then
  jose jwe enc -i '{"protected":{"alg":"dir","enc":"A256GCM"}}' -I - -k "$tmp/jwk.json" -c
else
  tr -d '\r\n' > "$tmp/in.jwe"
  jose jwe dec -i "$tmp/in.jwe" -k "$tmp/jwk.json"
fi
