#!/usr/bin/env bash
# Startup time (exec to first 200 from /readyz, fresh SQLite file, migrations included) and idle
# resident memory of the release binary. Usage: scripts/startup.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
RUNS="${1:-5}"; PORT="${BENCH_PORT:-18184}"
for i in $(seq 1 "$RUNS"); do
  WORK=$(mktemp -d)
  start=$(date +%s%N)
  TELEMENTAL_ENCRYPTION_KEYS="scripts:KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=" TELEMENTAL_JWT_SECRET="startup-secret-startup-secret-startup-00" TELEMENTAL_BIND="127.0.0.1:$PORT" \
    TELEMENTAL_DATABASE_URL="sqlite://$WORK/s.db" ./target/release/telemental >/dev/null 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.002; done
  ready=$(date +%s%N)
  sleep 2
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$WORK"
  echo "run $i: ready in $(( (ready - start) / 1000000 )) ms, idle RSS $(( rss / 1024 )) MiB"
done
ls -l target/release/telemental | awk '{printf "binary size: %.1f MiB\n", $5 / 1048576}'
