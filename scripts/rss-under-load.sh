#!/usr/bin/env bash
# RSS of the release binary before and after three 20 s rounds of GET /healthz at 32
# connections, with nobody scraping /metrics (each request records a latency sample).
# Flat means the process does not keep what it records. Usage: scripts/rss-under-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/telemental"
WORK=$(mktemp -d)
PORT="${RSS_PORT:-18190}"
TELEMENTAL_ENCRYPTION_KEYS="scripts:KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=" TELEMENTAL_JWT_SECRET=rss-secret-rss-secret-rss-secret-rss-000 TELEMENTAL_LOG=warn \
  TELEMENTAL_DATABASE_URL="sqlite://$WORK/r.db" TELEMENTAL_BIND="127.0.0.1:$PORT" \
  "$BIN" serve >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
rss() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$PID/status"; }
wrk -t2 -c32 -d3s "http://127.0.0.1:$PORT/healthz" >/dev/null
sleep 6
echo "after warm-up: RSS $(rss) MiB"
for round in 1 2 3; do
  n=$(wrk -t2 -c32 -d20s "http://127.0.0.1:$PORT/healthz" | awk '/requests in/ {print $1}')
  sleep 6 # past the recorder's upkeep
  echo "round $round: $n requests, RSS $(rss) MiB"
done
