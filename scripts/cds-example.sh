#!/usr/bin/env bash
# Prints the README's CDS Hooks example as the release binary answers it: a plan (video first,
# a hearing barrier) and a safety protocol, then an appointment-book call proposing a telephone
# appointment, signed with the ES384 test key as an EHR would sign it.
# Usage: scripts/cds-example.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# A port nobody listens on (other benchmarks may run on this machine).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT="${EXAMPLE_PORT:-$(free_port)}"
JWKS_PORT="${EXAMPLE_JWKS_PORT:-$(free_port)}"
BASE="http://127.0.0.1:$PORT"
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked --quiet
[ -x "$TARGET/bench-venv/bin/python" ] || python3 -m venv "$TARGET/bench-venv"
"$TARGET/bench-venv/bin/pip" install -q --disable-pip-version-check 'pyjwt[crypto]==2.10.1'

WORK=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/jwks"
python3 -c "import json; print(json.dumps({'keys': [json.load(open('tests/fixtures/es384.jwk.json'))]}))" >"$WORK/jwks/jwks.json"
python3 -m http.server "$JWKS_PORT" --bind 127.0.0.1 --directory "$WORK/jwks" >/dev/null 2>&1 &
PIDS+=($!)
# The service fetches the JWKS at start: have it served first.
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$JWKS_PORT/jwks.json" >/dev/null && break; sleep 0.1; done
TELEMENTAL_ENCRYPTION_KEYS="scripts:KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=" TELEMENTAL_JWT_SECRET="example-secret-example-secret-example-00" TELEMENTAL_DATABASE_URL="sqlite://$WORK/example.db" \
TELEMENTAL_BIND="127.0.0.1:$PORT" TELEMENTAL_PUBLIC_URL="https://telemental.example.org" \
TELEMENTAL_JWKS_URL="http://127.0.0.1:$JWKS_PORT/jwks.json" TELEMENTAL_CDS_ISSUERS="https://ehr.example.org" \
  "$TARGET/release/telemental" serve >"$WORK/out.log" 2>"$WORK/err.log" &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.1; done
T=$(TELEMENTAL_JWT_SECRET="example-secret-example-secret-example-00" "$TARGET/release/telemental" token --tenant leeds --scope "plans:write protocols:write")
curl -sf -o /dev/null "$BASE/v1/plans" -H "Authorization: Bearer $T" -H 'Content-Type: application/json' -d '{
  "subject": "Patient/123",
  "initial_conversation": {"held_on": "2026-11-20", "held_by": "Practitioner/9"},
  "preferences": {"default": ["video", "telephone", "in_person"]},
  "resources": {"devices": ["smartphone", "computer"], "connectivity": "reliable",
                "digital_skills": "basic", "familiar_platforms": ["WhatsApp"], "private_space": "yes"},
  "barriers": [{"kind": "hearing", "note": "uses captions"}],
  "backup_contact": {"method": "telephone", "number": "+447700900123"}}'
curl -sf -o /dev/null "$BASE/v1/safety-protocols" -H "Authorization: Bearer $T" -H 'Content-Type: application/json' -d "{
  \"subject\": \"Patient/123\", \"risk_level\": \"low\", \"call_back_numbers\": [\"+447700900123\"],
  \"agreed_with_service_user_on\": \"$(date -u +%F)\"}"
EHR_TOKEN=$("$TARGET/bench-venv/bin/python" - <<'PY'
import time, uuid, jwt
now = int(time.time())
print(jwt.encode({"iss": "https://ehr.example.org", "sub": "ehr-cds-client", "tenant": "leeds",
                  "aud": "https://telemental.example.org/cds-services/telemental-modality",
                  "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
                 open("tests/fixtures/es384.pem").read(), algorithm="ES384",
                 headers={"kid": "test-es384", "typ": "JWT"}))
PY
)
REQUEST='{
  "hook": "appointment-book",
  "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
  "fhirServer": "https://ehr.example.org/fhir",
  "context": {
    "userId": "PractitionerRole/9",
    "patientId": "123",
    "appointments": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
      "resourceType": "Appointment", "id": "apt-1", "status": "proposed",
      "serviceType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode", "code": "PHONE"}]}],
      "start": "2026-12-03T10:00:00Z", "end": "2026-12-03T10:50:00Z",
      "participant": [{"actor": {"reference": "Patient/123"}, "status": "needs-action"}]}}]}
  }
}'
echo "POST /cds-services/telemental-modality"
echo "$REQUEST"
echo
echo "200 OK"
curl -s "$BASE/cds-services/telemental-modality" -H "Authorization: Bearer $EHR_TOKEN" \
  -H 'Content-Type: application/json' -d "$REQUEST" | python3 -m json.tool --indent 2
