#!/usr/bin/env bash
# Benchmark of the EHR-facing endpoints at 64 connections against the release binary on SQLite:
# the CDS Hooks call (POST /cds-services/telemental-modality, each request with its own
# ES384-signed token, as an EHR sends) and a FHIR CarePlan read, next to GET /healthz of the
# same binary in the same run (baseline). Prints req/s and p50/p99 latency, the server's and
# the load generator's CPU per request, and first a gauge of the host's speed (OpenSSL's P-384
# verify time on one core).
# Usage: scripts/interop-bench.sh [duration-seconds]   (default 15)
#        CDS_ALG=RS384 signs the EHR's tokens with the RSA test key instead of ES384.
#        CDS_TOKENS=N sets how many single-use tokens are signed for the timed CDS run (default
#        80000; a run faster than N/duration req/s would replay tokens and get 401s, reported as
#        non-2xx).
#        BENCH_BINARY=path runs that build instead of building this checkout (to compare two
#        commits in one sitting: build the other in a `git worktree`, run both in turn).
#        BENCH_CONNECTIONS=N sets the connections (default 64).
#        CDS_PACE_MS=N has each connection pause after each CDS answer before its next call, N ms
#        on average, drawn at random (exponential), so the connections call independently, as
#        an EHR's clinicians booking do, rather than in a saturating loop (default 0: no pause).
#        CDS_ONLY=1 skips the /healthz and FHIR runs (for sweeps of the CDS call alone).
#        BENCH_LOG_DIR=dir writes the service's log there (default: a folder in /dev/shm).
set -euo pipefail
cd "$(dirname "$0")/.."
# A port nobody listens on (other benchmarks may run on this machine).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
DURATION="${1:-15}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS=2
PORT="${BENCH_PORT:-$(free_port)}"
JWKS_PORT="${BENCH_JWKS_PORT:-$(free_port)}"
BASE="http://127.0.0.1:$PORT"
CDS_TOKENS="${CDS_TOKENS:-80000}"
CDS_ALG="${CDS_ALG:-ES384}"
CDS_PACE_MS="${CDS_PACE_MS:-0}"
CDS_ONLY="${CDS_ONLY:-}"
case "$CDS_ALG" in
  ES384) KEY_FILE=tests/fixtures/es384.pem KID=test-es384 ;;
  RS384) KEY_FILE=tests/fixtures/rs384.pem KID=test-rs384 ;;
  *) echo "CDS_ALG must be ES384 or RS384" >&2; exit 2 ;;
esac
TARGET="${CARGO_TARGET_DIR:-target}"

# wrk, and /usr/bin/time for the load generator's own CPU time: installed if missing.
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -x /usr/bin/time ] || missing+=(time)
[ ${#missing[@]} -eq 0 ] || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
if [ -n "${BENCH_BINARY:-}" ]; then
  SERVICE="$BENCH_BINARY"
else
  cargo build --release --locked --quiet
  SERVICE="$TARGET/release/telemental"
fi
# A small venv to sign the EHR's tokens (ES384) before the timed runs.
[ -x "$TARGET/bench-venv/bin/python" ] || python3 -m venv "$TARGET/bench-venv"
"$TARGET/bench-venv/bin/pip" install -q --disable-pip-version-check 'pyjwt[crypto]==2.10.1'

WORK=$(mktemp -d)
# The service's log (a line a request, about 150 MB in a 20 s /healthz run) goes to memory
# (/dev/shm) unless BENCH_LOG_DIR says otherwise: on the database's own ext4 file system the
# log's dirty pages are written out with each flush of the database's log, and held up the
# audited reads' commits (FHIR read p99 116-326 ms instead of 20 ms on a slow host, README:
# *The service's log*). A deployment keeps them apart the same way.
LOG_DIR="${BENCH_LOG_DIR:-}"
if [ -z "$LOG_DIR" ]; then
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then LOG_DIR=$(mktemp -d /dev/shm/telemental-bench.XXXXXX); else LOG_DIR=$WORK; fi
fi
PIDS=()
# `|| true`: a killed child's wait status must not end the trap early under `set -e`.
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; case "$LOG_DIR" in /dev/shm/telemental-bench.*) rm -rf "$LOG_DIR";; esac' EXIT

# The EHR's JWKS (the ES384 and RS384 test keys), served locally.
mkdir -p "$WORK/jwks"
python3 -c "import json; print(json.dumps({'keys': [json.load(open(f'tests/fixtures/{k}.jwk.json')) for k in ('es384', 'rs384')]}))" >"$WORK/jwks/jwks.json"
python3 -m http.server "$JWKS_PORT" --bind 127.0.0.1 --directory "$WORK/jwks" >/dev/null 2>&1 &
PIDS+=($!)
# The service fetches the JWKS at start: have it served first.
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$JWKS_PORT/jwks.json" >/dev/null && break; sleep 0.1; done

export TELEMENTAL_JWT_SECRET="bench-secret-bench-secret-bench-secret-00"
# Outside dev mode the service needs encryption keys (README: Encryption at rest).
export TELEMENTAL_ENCRYPTION_KEYS="${TELEMENTAL_ENCRYPTION_KEYS:-scripts:KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=}"
export TELEMENTAL_DATABASE_URL="sqlite://$WORK/bench.db"
export TELEMENTAL_BIND="127.0.0.1:$PORT"
export TELEMENTAL_PUBLIC_URL="$BASE"
export TELEMENTAL_JWKS_URL="http://127.0.0.1:$JWKS_PORT/jwks.json"
export TELEMENTAL_CDS_ISSUERS="https://ehr.example"
"$SERVICE" serve >"$WORK/out.log" 2>"$LOG_DIR/err.log" &
SERVER=$!
PIDS+=($SERVER)
for _ in $(seq 1 100); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.1; done

TOKEN=$("$SERVICE" token --tenant bench --scope "plans:read plans:write protocols:read protocols:write" --ttl 3600)
export TOKEN
TODAY=$(date -u +%F)
# 100 service users, each with a plan (video first; a hearing barrier rules out telephone) and
# a moderate-risk safety protocol.
: >"$WORK/plan-ids"
for i in $(seq 1 100); do
  curl -sf -X POST "$BASE/v1/plans" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "{
    \"subject\": \"Patient/bench-$i\", \"initial_conversation\": {\"held_on\": \"$TODAY\"},
    \"preferences\": {\"default\": [\"video\", \"telephone\", \"in_person\"]},
    \"resources\": {\"devices\": [\"smartphone\", \"computer\"], \"connectivity\": \"reliable\", \"digital_skills\": \"confident\", \"familiar_platforms\": [\"Zoom\"], \"private_space\": \"yes\"},
    \"barriers\": [{\"kind\": \"hearing\"}], \"backup_contact\": {\"method\": \"telephone\", \"number\": \"+447700900123\"}}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' >>"$WORK/plan-ids"
  curl -sf -o /dev/null -X POST "$BASE/v1/safety-protocols" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "{
    \"subject\": \"Patient/bench-$i\", \"risk_level\": \"moderate\", \"call_back_numbers\": [\"+447700900123\"],
    \"usual_locations\": [{\"label\": \"home\"}], \"agreed_with_service_user_on\": \"$TODAY\"}"
done

# Single-use EHR tokens (one jti each, $CDS_ALG), signed on both cores before anything is timed.
sign() { # count file
  "$TARGET/bench-venv/bin/python" - "$1" "$2" "$BASE/cds-services/telemental-modality" "$CDS_ALG" "$KEY_FILE" "$KID" <<'PY'
import sys, time, uuid, jwt
from multiprocessing import Pool
from cryptography.hazmat.primitives import serialization
n, out, aud, alg, key_file, kid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
key = serialization.load_pem_private_key(open(key_file, "rb").read(), None)
def sign(_):
    now = int(time.time())
    return jwt.encode({"iss": "https://ehr.example", "sub": "bench-ehr", "aud": aud, "tenant": "bench",
                       "iat": now, "exp": now + 3000, "jti": str(uuid.uuid4())},
                      key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})
with Pool(2) as p, open(out, "w") as f:
    for t in p.imap(sign, range(n), chunksize=500):
        f.write(t + "\n")
PY
}
sign 8000 "$WORK/tokens-warm.txt"
sign "$CDS_TOKENS" "$WORK/tokens-run.txt"
# The token files (about 100 MB) to disk now: else the kernel writes them back half a minute
# later, in the middle of a timed run, beside the service's own log flushes.
sync

cat >"$WORK/cds.lua" <<'LUA'
-- Each thread takes every THREADS-th token of the file, so no token is used twice.
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  tokens = {}
  local threads = tonumber(os.getenv("THREADS"))
  local i = 0
  for line in io.lines(os.getenv("TOKENS")) do
    if i % threads == tid then tokens[#tokens + 1] = line end
    i = i + 1
  end
  n = 0
  pace = tonumber(os.getenv("CDS_PACE_MS")) or 0
  math.randomseed(os.time() + tid)
end
-- Each connection's pause after an answer before its next call: exponential with mean `pace`
-- ms (0: none), so the connections do not fall into step and arrive in bursts.
function delay()
  if pace == 0 then return 0 end
  return math.floor(-pace * math.log(1 - math.random()))
end
local codes = {"PHONE", "VIDEOCONF", "FACE"}
request = function()
  n = n + 1
  local token = tokens[((n - 1) % #tokens) + 1]
  local body = string.format([[{"hook": "appointment-book", "hookInstance": "%d-%d",
    "context": {"userId": "PractitionerRole/9", "patientId": "bench-%d",
      "appointments": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "Appointment", "id": "apt-%d", "status": "proposed",
        "serviceType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode", "code": "%s"}]}],
        "participant": [{"actor": {"reference": "Patient/bench-%d"}, "status": "needs-action"}]}}]}}}]],
    tid, n, (n % 100) + 1, n, codes[(n % 3) + 1], (n % 100) + 1)
  return wrk.format("POST", "/cds-services/telemental-modality",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
LUA

cat >"$WORK/careplan.lua" <<'LUA'
local ids = {}
for line in io.lines(os.getenv("PLAN_IDS")) do ids[#ids + 1] = line end
local token = os.getenv("TOKEN")
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/fhir/R4/CarePlan/" .. ids[(n % #ids) + 1],
    {["Accept"] = "application/fhir+json", ["Authorization"] = "Bearer " .. token})
end
LUA
export PLAN_IDS="$WORK/plan-ids" THREADS CDS_PACE_MS

# Sanity: both answer 200 with what they should before anything is timed.
head -n 1 "$WORK/plan-ids" | xargs -I{} curl -sf "$BASE/fhir/R4/CarePlan/{}" -H "Authorization: Bearer $TOKEN" | grep -q '"resourceType":"CarePlan"'
curl -sf -X POST "$BASE/cds-services/telemental-modality" -H 'content-type: application/json' \
  -H "Authorization: Bearer $(head -n 1 "$WORK/tokens-warm.txt")" \
  -d '{"hook": "appointment-book", "hookInstance": "sanity", "context": {"patientId": "bench-1", "appointments": [
       {"resourceType": "Appointment", "status": "proposed", "participant": [{"status": "needs-action"}],
        "serviceType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode", "code": "PHONE"}]}]}]}}' |
  grep -q '"indicator":"warning"'
sed -i 1d "$WORK/tokens-warm.txt"

report() { # file label
  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec/ {print $2}' "$1")
  p50=$(awk '$1=="50%" {print $2}' "$1")
  p99=$(awk '$1=="99%" {print $2}' "$1")
  errors=$(awk '/Non-2xx/ {print $4}' "$1")
  printf '%-40s %10s req/s   p50 %-9s p99 %-9s non-2xx %s\n' "$2" "$rps" "$p50" "$p99" "${errors:-0}"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
timed() { # name label wrk-args...
  local name=$1 label=$2; shift 2
  local before after requests
  before=$(cpu_ticks)
  # The load generator's own CPU time (user + system) as well: it shares the cores.
  /usr/bin/time -f '%U %S' -o "$WORK/$name.time" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" >"$WORK/$name.txt"
  after=$(cpu_ticks)
  report "$WORK/$name.txt" "$label"
  # The server's own CPU time per request: comparable across runs even on a busy machine.
  requests=$(awk '/requests in/ {print $1}' "$WORK/$name.txt")
  awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
    'BEGIN { printf "%-40s %10.3f ms of server CPU per request\n", "", 1000 * t / hz / n }'
  awk -v n="$requests" '{ printf "%-40s %10.3f ms of load-generator CPU per request\n", "", 1000 * ($1 + $2) / n }' "$WORK/$name.time"
}

echo "telemental interop benchmark ($SERVICE): $CONNECTIONS connections, $THREADS wrk threads, ${DURATION}s, $(nproc) cores, SQLite, load average $(cut -d' ' -f1 /proc/loadavg), service log in $LOG_DIR"
# The host's speed apart from the service, before the runs: one core verifying P-384
# signatures with the system's OpenSSL (the same hardware has differed by half between days).
if command -v openssl >/dev/null; then
  openssl speed -seconds 2 ecdsap384 2>/dev/null |
    awk '/nistp384/ { printf "machine gauge: OpenSSL verifies a P-384 signature in %.2f ms on one core\n", 1000 / $NF }'
fi
if [ -z "$CDS_ONLY" ]; then
  wrk -t"$THREADS" -c"$CONNECTIONS" -d3s "$BASE/healthz" >/dev/null 2>&1
  timed healthz "GET /healthz (baseline)" "$BASE/healthz"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$WORK/careplan.lua" "$BASE" >/dev/null 2>&1
  timed careplan "GET /fhir/R4/CarePlan/{id}" -s "$WORK/careplan.lua" "$BASE"
fi
export TOKENS="$WORK/tokens-warm.txt"
wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$WORK/cds.lua" "$BASE" >/dev/null 2>&1
export TOKENS="$WORK/tokens-run.txt"
answered_within() { # seconds: how many CDS calls the service answered within that time, so far
  curl -sf "$BASE/metrics" -H "Authorization: Bearer $TOKEN" |
    awk -v le="$1" '/^http_request_duration_seconds_bucket/ && /telemental-modality"/ && !/feedback/ && index($0, "le=\"" le "\"") && /status="200"/ {n += $NF} END {print n + 0}'
}
before_fast=$(answered_within 0.025) before_all=$(answered_within +Inf)
label="POST /cds-services/telemental-modality ($CDS_ALG"
[ "$CDS_PACE_MS" = 0 ] || label="$label, ${CDS_PACE_MS} ms pause"
timed cds "$label)" -s "$WORK/cds.lua" "$BASE"
# The service's own view (from its request histogram, the timed run only): the calls it answered
# within 25 ms, counted from the request's head read to its answer. The rest of what the load
# generator sees is waiting for a worker to read the request, or for the load generator's turn.
awk -v f=$(($(answered_within 0.025) - before_fast)) -v a=$(($(answered_within +Inf) - before_all)) \
  'BEGIN { if (a > 0) printf "%-40s %9.1f %% of CDS calls answered within 25 ms by the service itself\n", "", 100 * f / a }'
[ -n "$CDS_ONLY" ] || awk -v a="$(awk '/^Requests\/sec/ {print $2}' "$WORK/careplan.txt")" -v b="$(awk '/^Requests\/sec/ {print $2}' "$WORK/healthz.txt")" \
  'BEGIN { printf "ratio FHIR CarePlan read / healthz throughput: %.2f\n", a / b }'
requests=$(awk '/requests in/ {print $1}' "$WORK/cds.txt")
if [ "$requests" -gt "$CDS_TOKENS" ]; then
  echo "note: $requests CDS requests but $CDS_TOKENS tokens: some were replays (401); raise CDS_TOKENS" >&2
fi
