#!/usr/bin/env bash
# The contract, tested with the clients' own tools against the release binary:
#   1. Redocly lint of openapi/openapi.json (no errors)
#   2. every example in the document validates against its schema (jsonschema)
#   3. schemathesis over every operation, all phases, seven checks, zero failures
#   4. a Python client (openapi-python-client) and TypeScript types (openapi-typescript,
#      tsc --strict) generated from the document, each driving a short program
#   5. an EHR's clients (scripts/ehr): fhir-kit-client reading the FHIR views, and a CDS Hooks
#      client whose keys and JWTs come from Node's crypto
#   6. the README's walk-through (scripts/walkthrough.sh), commands as printed
#
# Tools are installed pinned (openapi/clients/requirements.txt, package-lock.json) into
# target/contract/ (scripts/ehr's into scripts/ehr/node_modules); generated code goes to
# target/contract/ too. Steps 1-6 run in a private network namespace with only loopback:
# nothing the binary does (webhook deliveries to whatever URL a fuzzer registers, DNS
# lookups) can leave the machine.
#
# Usage: scripts/contract.sh            (from .ci/run, after the release build)
#        ST_MAX_EXAMPLES=100 scripts/contract.sh   (a deeper schemathesis search)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/target/contract
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/telemental

if [ "${1:-}" != "--offline" ]; then
  cargo build --release --locked
  command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq >/dev/null; }
  mkdir -p "$WORK"
  # Pinned tools; reinstalled only when the pins change.
  if ! cmp -s openapi/clients/requirements.txt "$WORK/venv/requirements.txt" 2>/dev/null; then
    rm -rf "$WORK/venv"
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q --disable-pip-version-check -r openapi/clients/requirements.txt
    cp openapi/clients/requirements.txt "$WORK/venv/requirements.txt"
  fi
  if ! cmp -s openapi/clients/package-lock.json "$WORK/npm/package-lock.json" 2>/dev/null; then
    rm -rf "$WORK/npm" && mkdir -p "$WORK/npm"
    cp openapi/clients/package.json openapi/clients/package-lock.json "$WORK/npm/"
    (cd "$WORK/npm" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
  [ -d scripts/ehr/node_modules ] || npm ci --prefix scripts/ehr --no-audit --no-fund --loglevel=error >/dev/null
  # Everything else without a network: a fresh namespace with loopback only.
  exec unshare --net -- bash -c 'ip link set lo up && exec "$0" --offline' "$0"
fi

export PATH="$WORK/venv/bin:$WORK/npm/node_modules/.bin:$PATH"
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
unset TELEMENTAL_WEBHOOK_ALLOW_PRIVATE TELEMENTAL_JWKS_URL
export TELEMENTAL_JWT_SECRET=contract-ci-secret-contract-ci-secret-0123
# Outside dev mode the service needs encryption keys (README: Encryption at rest).
export TELEMENTAL_ENCRYPTION_KEYS="${TELEMENTAL_ENCRYPTION_KEYS:-scripts:KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=}"
SCOPES="plans:read plans:write protocols:read protocols:write sessions:write referrals:read referrals:write recommendations:read webhooks:manage audit:read"
PORT=18181
BASE=http://127.0.0.1:$PORT
PID=
step() { printf '\n== contract: %s\n' "$*"; }

# start_server NAME [VAR=VALUE ...]: the release binary on a fresh SQLite file.
start_server() {
  local name=$1
  shift
  rm -rf "$WORK/db-$name" && mkdir -p "$WORK/db-$name"
  env TELEMENTAL_BIND=127.0.0.1:$PORT TELEMENTAL_DATABASE_URL="sqlite://$WORK/db-$name/telemental.db" \
    TELEMENTAL_LOG=warn "$@" "$BIN" serve >"$WORK/server-$name.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do
    curl -sf "$BASE/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "the server did not start:" && cat "$WORK/server-$name.log" && exit 1
}
# restart_server NAME [VAR=VALUE ...]: again on the database of server NAME.
restart_server() {
  local name=$1
  shift
  env TELEMENTAL_BIND=127.0.0.1:$PORT TELEMENTAL_DATABASE_URL="sqlite://$WORK/db-$name/telemental.db" \
    TELEMENTAL_LOG=warn "$@" "$BIN" serve >>"$WORK/server-$name.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do
    curl -sf "$BASE/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "the server did not restart:" && cat "$WORK/server-$name.log" && exit 1
}
stop_server() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
  fi
}
trap stop_server EXIT
TOKEN=$("$BIN" token --tenant contract --scope "$SCOPES" --ttl 3600)

step "Redocly lint"
redocly lint openapi/openapi.json --config openapi/redocly.yaml --format=stylish

step "every example validates against its schema"
python3 scripts/check_examples.py openapi/openapi.json

# The webhook bodies the integration tests received (cargo test writes them; .ci/run runs it
# first and sets CONTRACT_WEBHOOK_SAMPLES), each against its event's schema under `webhooks`.
if [ -n "${CONTRACT_WEBHOOK_SAMPLES:-}" ]; then
  step "every webhook body the tests received validates against its event's schema"
  python3 scripts/check_webhook_samples.py openapi/openapi.json "$CONTRACT_WEBHOOK_SAMPLES"
fi

step "schemathesis (every operation; examples, coverage, fuzzing, stateful)"
# Webhooks to chain from: registered while private targets are allowed, on loopback. The
# service then runs with TELEMENTAL_WEBHOOK_ALLOW_PRIVATE unset, so registering a private URL
# is a clean 422, and deliveries to these are refused at send time and dead-lettered after
# one attempt: real ids for get/delete/deliveries, and dead deliveries to replay.
start_server st TELEMENTAL_WEBHOOK_ALLOW_PRIVATE=true
for i in $(seq 1 10); do
  curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$BASE/v1/webhooks" \
    -d "{\"url\": \"http://127.0.0.1:9/hooks/$i\", \"events\": [\"referral.created\", \"referral.status_changed\", \"session_check.do_not_proceed\"]}"
done
stop_server
restart_server st TELEMENTAL_WEBHOOK_MAX_ATTEMPTS=1 TELEMENTAL_WORKER_INTERVAL=200ms
st_args=(--config-file "$ROOT/openapi/schemathesis.toml" run "$BASE/openapi.json"
  -H "Authorization: Bearer $TOKEN"
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection,ignored_auth
  --report junit --report-dir "$WORK/schemathesis" --no-color)
[ -n "${ST_SEED:-}" ] && st_args+=(--seed "$ST_SEED")
[ -n "${ST_MAX_EXAMPLES:-}" ] && st_args+=(--max-examples "$ST_MAX_EXAMPLES")
status=0
# From target/contract, where Hypothesis keeps its scratch files.
(cd "$WORK" && schemathesis "${st_args[@]}") >"$WORK/schemathesis.log" 2>&1 || status=$?
sed -n '/= SUMMARY =/,$p' "$WORK/schemathesis.log"
if [ "$status" != 0 ]; then
  cat "$WORK/schemathesis.log"
  echo "schemathesis failed (log: $WORK/schemathesis.log)"
  exit 1
fi
calls=$(grep -oE '[0-9]+ generated' "$WORK/schemathesis.log" | tail -n 1 | grep -oE '[0-9]+')
echo "schemathesis: ${calls:-?} generated calls, 0 failures"
stop_server

step "Python client (openapi-python-client)"
rm -rf "$WORK/python"
openapi-python-client generate --path openapi/openapi.json --config openapi/clients/python/config.yml \
  --output-path "$WORK/python/telemental_client" --meta none >"$WORK/python-generate.log" 2>&1 ||
  { cat "$WORK/python-generate.log"; exit 1; }
if grep -qiE 'warning|could not|error' "$WORK/python-generate.log"; then
  cat "$WORK/python-generate.log"
  echo "openapi-python-client warned" && exit 1
fi
start_server py
PYTHONPATH="$WORK/python" TELEMENTAL_URL=$BASE TELEMENTAL_TOKEN=$TOKEN \
  python3 openapi/clients/python/walk.py
stop_server

step "TypeScript types (openapi-typescript, tsc --strict)"
rm -rf "$WORK/ts" && mkdir -p "$WORK/ts"
openapi-typescript openapi/openapi.json --output "$WORK/ts/schema.d.ts" >"$WORK/ts-generate.log" 2>&1 ||
  { cat "$WORK/ts-generate.log"; exit 1; }
cp openapi/clients/typescript/walk.ts openapi/clients/typescript/tsconfig.json "$WORK/ts/"
(cd "$WORK/ts" && tsc --strict --noEmit -p tsconfig.json && tsc -p tsconfig.json --outDir out)
start_server ts
TELEMENTAL_URL=$BASE TELEMENTAL_TOKEN=$TOKEN node "$WORK/ts/out/walk.js"
stop_server

step "an EHR app's FHIR client (fhir-kit-client, SMART scopes)"
# Reads with SMART v2 scopes, as an EHR's authorization server grants a backend service; the
# /v1 write scopes are only for the records the program makes first.
EHR_TOKEN=$("$BIN" token --tenant contract-ehr --ttl 3600 \
  --scope "plans:write protocols:write referrals:write system/CarePlan.rs system/ServiceRequest.rs")
start_server fhir TELEMENTAL_FHIR_ALLOWED_ORIGINS=https://smart-app.example.org
TELEMENTAL_URL=$BASE TELEMENTAL_TOKEN=$EHR_TOKEN TELEMENTAL_FHIR_ORIGIN=https://smart-app.example.org \
  node scripts/ehr/fhir-client.mjs
stop_server

step "an EHR's CDS Hooks client (keys and JWTs from Node's crypto, its own JWKS)"
TELEMENTAL_BIN=$BIN node scripts/ehr/cds-client.mjs

step "README walk-through"
# Started as the section says.
start_server readme TELEMENTAL_WEBHOOK_ALLOW_PRIVATE=true TELEMENTAL_WEBHOOK_MAX_ATTEMPTS=1
B=$BASE T=$TOKEN bash scripts/walkthrough.sh README.md
stop_server

step "all contract steps passed"
