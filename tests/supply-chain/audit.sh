#!/usr/bin/env bash
# Offline RustSec check (`cargo audit`) against the snapshot in
# ../shared/advisory-db/. Fails on any advisory (vulnerability, unmaintained,
# unsound, yanked) that affects the release dependency graph of the relay
# (`cargo tree -e normal,build -p pushrelay`); advisories reaching only test
# and benchmark crates (the mocks' rsa, say) are listed, not fatal.
# Also fails if a test or benchmark crate (rsa, rcgen, hdrhistogram,
# proptest) reaches that graph. Prints the snapshot's date with the result.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# The snapshot: $PUSHRELAY_ADVISORY_DB, else ../shared/advisory-db next to
# this checkout or next to the repository it was cloned from.
db_src="${PUSHRELAY_ADVISORY_DB:-}"
if [ -z "$db_src" ]; then
  origin="$(git config --get remote.origin.url 2>/dev/null || true)"
  for cand in ../shared/advisory-db "${origin:+$origin/../shared/advisory-db}" /work/shared/advisory-db; do
    if [ -n "$cand" ] && [ -f "$cand/setup.sh" ]; then db_src="$cand"; break; fi
  done
fi
if [ -z "$db_src" ]; then
  echo "supply chain: no RustSec snapshot found (set PUSHRELAY_ADVISORY_DB to the folder holding setup.sh)" >&2
  exit 1
fi
db=target/advisory-db
version=0.22.2

if ! cargo audit --version 2>/dev/null | grep -q "$version"; then
  echo "installing cargo-audit $version (debug build: it only reads a lock file)"
  cargo install cargo-audit --version "$version" --locked --no-default-features --debug --quiet
fi
if [ ! -d "$db/.git" ]; then
  bash "$db_src/setup.sh" "$db" >/dev/null
fi
snapshot="$(git -C "$db" log -1 --format=%s | sed -n 's/.*(\(.*\)).*/\1/p')"

report="$(mktemp)"
trap 'rm -f "$report"' EXIT
# cargo audit exits 1 when it finds anything; the verdict is ours below.
cargo audit --db "$db" --no-fetch --json >"$report" 2>/dev/null || true
cargo tree --locked -e normal,build -p pushrelay --prefix none -f '{p}' | awk '{print $1" "$2}' | sort -u >"$report.release"

# Test and benchmark crates must never reach the release binary.
test_only="$(awk '$1 == "rsa" || $1 == "rcgen" || $1 == "hdrhistogram" || $1 == "proptest" {print $1" "$2}' "$report.release")"
if [ -n "$test_only" ]; then
  echo "supply chain: test-only crates in the release dependency graph (cargo tree -e normal -p pushrelay):" >&2
  echo "$test_only" >&2
  exit 1
fi
echo "supply chain: no test-only crate (rsa, rcgen, hdrhistogram, proptest) in the release graph"

python3 - "$report" "$report.release" "$snapshot" <<'PY'
import json, sys
report, release_file, snapshot = sys.argv[1], sys.argv[2], sys.argv[3]
data = json.load(open(report))
release = {tuple(l.split()) for l in open(release_file) if l.strip()}
found = []
for v in data.get("vulnerabilities", {}).get("list", []):
    found.append(("vulnerability", v["advisory"]["id"], v["package"]["name"], v["package"]["version"], v["advisory"]["title"]))
for kind, items in data.get("warnings", {}).items():
    for w in items:
        adv = w.get("advisory") or {}
        found.append((kind, adv.get("id", "-"), w["package"]["name"], w["package"]["version"], adv.get("title", kind)))
fatal = [f for f in found if (f[2], "v" + f[3]) in release]
for f in found:
    where = "RELEASE" if f in fatal else "test/bench only"
    print(f"  {where}: {f[1]} {f[2]} {f[3]} ({f[0]}): {f[4]}")
n = data.get("lockfile", {}).get("dependency-count", "?")
if fatal:
    print(f"supply chain: {len(fatal)} advisories affect the release binary (advisory-db snapshot of {snapshot}, {n} crates in Cargo.lock)")
    sys.exit(1)
print(f"supply chain: no known advisories in the release dependency graph as of {snapshot} ({len(release)} crates; {len(found)} advisories in test/bench crates only)")
PY
