#!/usr/bin/env bash
# Webhook throughput and change-to-delivery delay against the release binary on SQLite.
# Usage: scripts/webhook-bench.sh [events]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
PORT="${BENCH_PORT:-18182}"
WORK=$(mktemp -d)
export TELEMENTAL_JWT_SECRET="bench-secret-bench-secret-bench-secret-00"
# Outside dev mode the service needs encryption keys (README: Encryption at rest).
export TELEMENTAL_ENCRYPTION_KEYS="${TELEMENTAL_ENCRYPTION_KEYS:-scripts:KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=}"
export TELEMENTAL_DATABASE_URL="sqlite://$WORK/bench.db" TELEMENTAL_BIND="127.0.0.1:$PORT"
export TELEMENTAL_WEBHOOK_ALLOW_PRIVATE=true TELEMENTAL_LOG=warn
./target/release/telemental serve >/dev/null 2>"$WORK/err.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
TOKEN=$(./target/release/telemental token --tenant bench --scope "referrals:write webhooks:manage" --ttl 3600)
echo "== saturation: as many referrals as 16 client threads can create"
BASE="http://127.0.0.1:$PORT" TOKEN="$TOKEN" N="${1:-1000}" CLIENTS=16 python3 scripts/webhook-bench.py
echo "== paced: one client, one referral at a time (the pipeline's own delay)"
TOKEN2=$(./target/release/telemental token --tenant bench-paced --scope "referrals:write webhooks:manage" --ttl 3600)
BASE="http://127.0.0.1:$PORT" TOKEN="$TOKEN2" N=200 CLIENTS=1 python3 scripts/webhook-bench.py
