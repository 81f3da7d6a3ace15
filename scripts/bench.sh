#!/usr/bin/env bash
# The benchmark suite (issue 10): every request kind on SQLite and PostgreSQL against the release
# binary, each as a ratio to GET /healthz of the same binary in the same run, peak RSS, audit rows
# against requests, and recommendation p50 with 1 000 and 1 000 000 plans. Not a test: run it on
# a quiet machine. See scripts/bench.py for what each run sends.
# Usage: scripts/bench.sh [seconds] [bench.py options]
#   scripts/bench.sh                      15 s per run, both engines, scaling check at 1 000 000
#   scripts/bench.sh 10 --engines sqlite --scale 0
#   BENCH_POSTGRES_URL=postgres://… scripts/bench.sh   (default postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
ARGS=()
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then ARGS+=(--duration "$1"); shift; fi

need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need sqlite3 sqlite3
need psql postgresql-client
# --binary PATH measures that binary instead of building one.
if [[ " $* " != *" --binary "* ]]; then cargo build --release --locked --quiet; fi
# A venv to sign the EHR's ES384 tokens for the CDS Hooks runs.
[ -x "$TARGET/bench-venv/bin/python" ] || python3 -m venv "$TARGET/bench-venv"
"$TARGET/bench-venv/bin/pip" install -q --disable-pip-version-check 'pyjwt[crypto]==2.10.1'
exec "$TARGET/bench-venv/bin/python" scripts/bench.py "${ARGS[@]}" "$@"
