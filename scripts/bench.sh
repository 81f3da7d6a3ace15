#!/usr/bin/env bash
# Benchmark: recommendations per second and p50/p99 latency at 64 connections against the
# release binary on SQLite, next to GET /healthz of the same binary in the same run (baseline).
# Usage: scripts/bench.sh [duration-seconds]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
CONNECTIONS=64
THREADS=2
PORT="${BENCH_PORT:-18181}"
BASE="http://127.0.0.1:$PORT"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked --quiet

WORK=$(mktemp -d)
export TELEMENTAL_JWT_SECRET="bench-secret-bench-secret-bench-secret-00"
export TELEMENTAL_DATABASE_URL="sqlite://$WORK/bench.db"
export TELEMENTAL_BIND="127.0.0.1:$PORT"
./target/release/telemental serve >"$WORK/out.log" 2>"$WORK/err.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.1; done

TOKEN=$(./target/release/telemental token --tenant bench --scope "plans:write protocols:write recommendations:read" --ttl 3600)
export TOKEN
TODAY=$(date -u +%F)
# 100 service users, each with a plan and a moderate-risk safety protocol.
for i in $(seq 1 100); do
  curl -sf -o /dev/null -X POST "$BASE/v1/plans" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "{
    \"subject\": \"Patient/bench-$i\", \"initial_conversation\": {\"held_on\": \"$TODAY\"},
    \"preferences\": {\"default\": [\"video\", \"telephone\", \"in_person\"], \"by_appointment_type\": {\"assessment\": [\"in_person\", \"video\"]}},
    \"resources\": {\"devices\": [\"smartphone\", \"computer\"], \"connectivity\": \"reliable\", \"digital_skills\": \"confident\", \"familiar_platforms\": [\"Zoom\"], \"private_space\": \"yes\"},
    \"barriers\": [{\"kind\": \"vision\"}], \"backup_contact\": {\"method\": \"telephone\", \"number\": \"+447700900123\"}}"
  curl -sf -o /dev/null -X POST "$BASE/v1/safety-protocols" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "{
    \"subject\": \"Patient/bench-$i\", \"risk_level\": \"moderate\", \"call_back_numbers\": [\"+447700900123\"],
    \"usual_locations\": [{\"label\": \"home\"}], \"agreed_with_service_user_on\": \"$TODAY\"}"
done

cat >"$WORK/rec.lua" <<'LUA'
local token = os.getenv("TOKEN")
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"subject": "Patient/bench-%d", "appointment_type": "therapy", "sensitive_topics": true}', (n % 100) + 1)
  return wrk.format("POST", "/v1/recommendations",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
LUA

# Sanity: the endpoint answers 200 with a recommendation before it is timed.
curl -sf -X POST "$BASE/v1/recommendations" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"subject": "Patient/bench-1", "appointment_type": "therapy"}' | grep -q recommended_modality

run() { # file-name label wrk-args...
  local name=$1 label=$2; shift 2
  wrk -t"$THREADS" -c"$CONNECTIONS" -d3s "$@" >/dev/null 2>&1 # warm-up
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" >"$WORK/$name.txt"
  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/$name.txt")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$name.txt")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$name.txt")
  errors=$(awk '/Non-2xx/ {print $4}' "$WORK/$name.txt")
  printf '%-28s %12s req/s   p50 %-9s p99 %-9s non-2xx %s\n' "$label" "$rps" "$p50" "$p99" "${errors:-0}"
  echo "$rps" >"$WORK/$name.rps"
}

echo "telemental benchmark: $CONNECTIONS connections, $THREADS wrk threads, ${DURATION}s, $(nproc) cores, SQLite"
run healthz "GET /healthz (baseline)" "$BASE/healthz"
run recommendations "POST /v1/recommendations" -s "$WORK/rec.lua" "$BASE"
awk -v a="$(cat "$WORK/recommendations.rps")" -v b="$(cat "$WORK/healthz.rps")" \
  'BEGIN { printf "ratio recommendations/healthz throughput: %.2f\n", a / b }'
