#!/usr/bin/env bash
# pushrelay and Sygnal side by side (docs/BENCHMARKS.md, "Against Sygnal"):
# installs Sygnal from ../shared/peers into docs/bench/.venv-sygnal (it is not
# on PyPI), then runs `pushrelay-bench sygnal`, which drives both against the
# same in-process mock APNs, in the same run, at the same concurrency and
# payload size, and reports pushes/s, p99 and server CPU per push.
#   bash docs/bench/sygnal.sh [--concurrency 32] [--duration-secs 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
peer="$(ls ../shared/peers/sygnal-*.tar.gz 2>/dev/null | head -1 || true)"
[ -n "$peer" ] || { echo "no Sygnal source in ../shared/peers" >&2; exit 1; }
venv=docs/bench/.venv-sygnal
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sygnal' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$peer"
fi
cargo build --release -p pushrelay-bench
exec target/release/pushrelay-bench sygnal --sygnal-python "$venv/bin/python" --out docs/bench "$@"
