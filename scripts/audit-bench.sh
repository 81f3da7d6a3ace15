#!/usr/bin/env bash
# Benchmark of an audited read: GET /v1/plans/{id} (one audit row per request, so one write,
# which since migration 0011 also moves the tenant's hash chain) at 64 connections, release
# binary, SQLite or PostgreSQL.
# Usage: scripts/audit-bench.sh [duration-seconds] [binary] [database-url]
#   (defaults: 15, ./target/release/telemental after building it, a fresh SQLite file)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
BIN="${2:-}"
PORT="${BENCH_PORT:-18182}"
BASE="http://127.0.0.1:$PORT"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if [ -z "$BIN" ]; then cargo build --release --locked --quiet; BIN=./target/release/telemental; fi

WORK=$(mktemp -d)
# The service's log (a line a request) in memory, off the database's file system: there its
# dirty pages are written out with the database's log flushes and hold up the audited reads'
# commits (README: *The service's log*). BENCH_LOG_DIR=dir to keep it elsewhere.
LOG_DIR="${BENCH_LOG_DIR:-}"
if [ -z "$LOG_DIR" ]; then
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then LOG_DIR=$(mktemp -d /dev/shm/telemental-bench.XXXXXX); else LOG_DIR=$WORK; fi
fi
export TELEMENTAL_JWT_SECRET="bench-secret-bench-secret-bench-secret-00"
# Outside dev mode the service needs encryption keys (README: Encryption at rest).
export TELEMENTAL_ENCRYPTION_KEYS="${TELEMENTAL_ENCRYPTION_KEYS:-scripts:KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=}"
export TELEMENTAL_DATABASE_URL="${3:-sqlite://$WORK/bench.db}"
export TELEMENTAL_BIND="127.0.0.1:$PORT"
"$BIN" serve >"$WORK/out.log" 2>"$LOG_DIR/err.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"; case "$LOG_DIR" in /dev/shm/telemental-bench.*) rm -rf "$LOG_DIR";; esac' EXIT
for _ in $(seq 1 100); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.1; done

TOKEN=$("$BIN" token --tenant "bench-$RANDOM" --scope "plans:read plans:write" --ttl 3600)
ID=$(curl -sf -X POST "$BASE/v1/plans" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{
  "subject": "Patient/audit-bench", "preferences": {"default": ["video", "in_person"]},
  "resources": {"connectivity": "reliable", "digital_skills": "confident"}}' | sed 's/.*"id":"\([^"]*\)".*/\1/')

wrk -t2 -c64 -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" "$BASE/v1/plans/$ID" |
  grep -E "^Requests/sec| 50%| 99%|Non-2xx"
