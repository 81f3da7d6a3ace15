#!/usr/bin/env bash
# What encryption at rest costs: plan create, plan read and recommendation throughput of one
# release binary, with records full of personal fields (every one of them sealed by a build
# with encryption, clear in one without). Run it for the build before and the build after,
# on the same machine, one after the other.
# Usage: scripts/crypto-bench.sh [duration-seconds] [binary] [database-url]
#   (defaults: 10, ./target/release/telemental after building it, a fresh SQLite file; on
#   SQLite current plans and protocols are cached decoded, so reads decrypt nothing: give a
#   PostgreSQL URL to measure decryption on every read)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
BIN="${2:-}"
PORT="${BENCH_PORT:-18183}"
BASE="http://127.0.0.1:$PORT"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if [ -z "$BIN" ]; then cargo build --release --locked --quiet; BIN=./target/release/telemental; fi

WORK=$(mktemp -d)
export TELEMENTAL_JWT_SECRET="bench-secret-bench-secret-bench-secret-00"
export TELEMENTAL_ENCRYPTION_KEYS="${TELEMENTAL_ENCRYPTION_KEYS:-scripts:KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=}"
export TELEMENTAL_DATABASE_URL="${3:-sqlite://$WORK/bench.db}"
export TELEMENTAL_BIND="127.0.0.1:$PORT"
export TELEMENTAL_LOG=warn
"$BIN" serve >"$WORK/out.log" 2>"$WORK/err.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.1; done

TENANT="bench-$RANDOM$RANDOM"
TOKEN=$("$BIN" token --tenant "$TENANT" --scope "plans:read plans:write protocols:write recommendations:read" --ttl 3600)
PLAN='"initial_conversation": {"held_on": "2026-11-20", "held_by": "Practitioner/9"},
  "preferences": {"default": ["video", "telephone", "in_person"]},
  "resources": {"devices": ["smartphone"], "connectivity": "reliable", "digital_skills": "basic"},
  "barriers": [{"kind": "hearing", "note": "uses captions"}, {"kind": "vision", "note": "large print"}],
  "personalisation": {"participants": [{"role": "family", "name": "sister", "joins_remotely": true}]},
  "backup_contact": {"method": "telephone", "number": "+447700900123"},
  "notes": "prefers mornings; call the mobile first"'
ID=$(curl -sf -X POST "$BASE/v1/plans" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d "{\"subject\": \"Patient/bench\", $PLAN}" | sed 's/.*"id":"\([^"]*\)".*/\1/')
curl -sf -o /dev/null -X POST "$BASE/v1/safety-protocols" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{
  "subject": "Patient/bench", "risk_level": "moderate",
  "call_back_numbers": ["+447700900123", "+447700900124"],
  "usual_locations": [{"label": "home", "address": "1 High St, Leeds"}, {"label": "work", "address": "2 Low St, Leeds"}],
  "emergency_contacts": [{"name": "A. Carer", "relationship": "mother", "phone": "+447700900456"}],
  "crisis_response": {"team": "Leeds crisis team", "phone": "+441130000000", "in_person_plan": "attends within 4 hours"},
  "agreed_with_service_user_on": "2026-11-20", "notes": "agreed by phone"}'

# A new subject per request: thread number, run start and a counter.
cat >"$WORK/create.lua" <<EOF
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local n = 0
local run = tostring(os.time())
local body_tail = [[, $(echo "$PLAN" | tr '\n' ' ')}]]
request = function()
  n = n + 1
  local subject = "Patient/c-" .. run .. "-" .. tostring(tid) .. "-" .. n
  return wrk.format("POST", "/v1/plans", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer $TOKEN"}, '{"subject": "' .. subject .. '"' .. body_tail)
end
EOF
cat >"$WORK/recommend.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = '{"subject": "Patient/bench", "appointment_type": "therapy"}'
EOF

# The service's CPU time (user + system, in clock ticks) so far.
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
# Throughput and latency, and the service's CPU per request (less sensitive than throughput to
# other load on a shared machine; the database's CPU is not counted).
run() {
  local before out after n
  before=$(cpu)
  out=$(wrk -t2 -c32 -d"${DURATION}s" --latency "$@")
  after=$(cpu)
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$(echo "$out" | grep -E "^Requests/sec| 50%| 99%|Non-2xx" | tr -s ' ' | paste -sd' ')" \
    "service CPU/request: $(( (after - before) * 1000000 / $(getconf CLK_TCK) / n )) us"
}
echo "plan create:    $(run -s "$WORK/create.lua" "$BASE/v1/plans")"
echo "plan read:      $(run -H "Authorization: Bearer $TOKEN" "$BASE/v1/plans/$ID")"
echo "recommendation: $(run -s "$WORK/recommend.lua" "$BASE/v1/recommendations")"
