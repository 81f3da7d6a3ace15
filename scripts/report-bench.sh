#!/usr/bin/env bash
# Latency of GET /v1/reports/equity at scale, on SQLite and PostgreSQL: seeds one tenant in bulk
# with SQL (not through the API) and times the report with curl against the release binary.
#   scripts/report-bench.sh [plans] [runs] [engines]
#   default: 1000000 plans, 20 runs per query, "sqlite postgres"
# Seeds per engine: PLANS plans (one version each, a fifth revised once) over three years,
# a year of recommendation counts, 200 000 session checks and 50 000 referrals (four in five
# scheduled). Needs sqlite3 and psql; PostgreSQL at $BENCH_POSTGRES_URL (default: local).
set -euo pipefail
cd "$(dirname "$0")/.."
PLANS="${1:-1000000}"; RUNS="${2:-20}"; ENGINES="${3:-sqlite postgres}"; PORT="${BENCH_PORT:-18185}"
PG="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
SECRET="report-bench-secret-report-bench-secret"
cargo build --release --locked --quiet
BIN=./target/release/telemental
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
# BENCH_SQLITE_DB=path keeps the seeded SQLite file there and reuses it on the next run;
# BENCH_POSTGRES_DB=name does the same with a PostgreSQL database.
KEEP="${BENCH_SQLITE_DB:-}"

seed_sqlite() {
  sqlite3 "$1" <<SQL
PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $PLANS)
INSERT INTO plans (id, tenant, subject, version, body, review_due, created_at, updated_at)
SELECT randomblob(16), 'bench', 'Patient/' || i, 1,
  '{"format":1,"subject":"Patient/' || i || '","preferences":{"default":["video","telephone","in_person"]},'
  || '"resources":{"devices":' || (CASE i % 4 WHEN 0 THEN '["landline"]' WHEN 1 THEN '["smartphone"]' ELSE '["computer","mobile"]' END)
  || ',"connectivity":"' || (CASE i % 3 WHEN 0 THEN 'none' WHEN 1 THEN 'limited' ELSE 'reliable' END)
  || '","digital_skills":"' || (CASE WHEN i % 5 = 0 THEN 'none' ELSE 'basic' END) || '"},"review_interval_days":90}',
  date('now', '-' || (i % 1095) || ' days', '+90 days'),
  strftime('%Y-%m-%dT%H:%M:%S', 'now', '-' || (i % 1095) || ' days') || '.000000Z',
  strftime('%Y-%m-%dT%H:%M:%S', 'now', '-' || (i % 1095) || ' days') || '.000000Z'
FROM n;
INSERT INTO plan_versions (record_id, tenant, version, body, review_due, recorded_at, recorded_by)
SELECT id, tenant, 1, body, review_due, created_at, 'bench' FROM plans;
INSERT INTO plan_versions (record_id, tenant, version, body, review_due, recorded_at, recorded_by)
SELECT id, tenant, 2, body, review_due,
  strftime('%Y-%m-%dT%H:%M:%S', created_at, '+30 days') || '.000000Z', 'bench'
FROM plans WHERE rowid % 5 = 0;
WITH RECURSIVE d(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM d WHERE k < 364),
  c(modality, level, first) AS (VALUES ('video','none','yes'), ('telephone','at_risk','no'),
    ('in_person','excluded','no'), ('in_person','no_plan','no_plan'), ('text','at_risk','yes'))
INSERT INTO recommendation_counts (tenant, day, modality, exclusion_level, first_preference, shard, n)
SELECT 'bench', date('now', '-' || k || ' days'), modality, level, first, s.value, 40
FROM d, c, json_each('[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]') s;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
INSERT INTO session_checks (id, tenant, subject, body, outcome, result, created_at, created_by)
SELECT randomblob(16), 'bench', 'Patient/' || i, '{}',
  CASE i % 3 WHEN 0 THEN 'proceed' WHEN 1 THEN 'proceed_with_actions' ELSE 'do_not_proceed' END, '{}',
  strftime('%Y-%m-%dT%H:%M:%S', 'now', '-' || (i % 365) || ' days') || '.000000Z', 'bench'
FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000)
INSERT INTO referrals (id, tenant, subject, version, body, status, due_by, created_at, updated_at)
SELECT randomblob(16), 'bench', 'Patient/' || i, 1,
  '{"format":1,"request":{"subject":"Patient/' || i || '","reason":"'
  || (CASE i % 3 WHEN 0 THEN 'not_accessible' WHEN 1 THEN 'not_appropriate' ELSE 'not_preferred' END)
  || '","urgency":"' || (CASE i % 2 WHEN 0 THEN 'urgent' ELSE 'routine' END) || '"},"status":"'
  || (CASE WHEN i % 5 = 0 THEN 'requested' ELSE 'scheduled' END) || '"}',
  CASE WHEN i % 5 = 0 THEN 'requested' ELSE 'scheduled' END,
  strftime('%Y-%m-%dT%H:%M:%S', 'now', '-' || (i % 365) || ' days', '+1 day') || '.000000Z',
  strftime('%Y-%m-%dT%H:%M:%S', 'now', '-' || (i % 365) || ' days') || '.000000Z',
  strftime('%Y-%m-%dT%H:%M:%S', 'now', '-' || (i % 365) || ' days') || '.000000Z'
FROM n;
INSERT INTO referral_versions (record_id, tenant, version, body, recorded_at, recorded_by)
SELECT id, tenant, 1, replace(body, '"status":"scheduled"', '"status":"requested"'), created_at, 'bench' FROM referrals;
INSERT INTO referral_versions (record_id, tenant, version, body, recorded_at, recorded_by)
SELECT id, tenant, 2, body, strftime('%Y-%m-%dT%H:%M:%S', created_at, '+' || (rowid % 48) || ' hours') || '.000000Z', 'bench'
FROM referrals WHERE status = 'scheduled';
-- As if the sweeper had already sent their events: the benchmark measures the report alone.
UPDATE referrals SET overdue_emitted = TRUE;
UPDATE plans SET review_notified_for = review_due;
COMMIT;
ANALYZE;
SQL
}

seed_postgres() {
  psql -q "$1" <<SQL
BEGIN;
INSERT INTO plans (id, tenant, subject, version, body, review_due, created_at, updated_at)
SELECT gen_random_uuid(), 'bench', 'Patient/' || i, 1,
  jsonb_build_object('format', 1, 'subject', 'Patient/' || i,
    'preferences', jsonb_build_object('default', jsonb_build_array('video', 'telephone', 'in_person')),
    'resources', jsonb_build_object(
      'devices', CASE i % 4 WHEN 0 THEN '["landline"]'::jsonb WHEN 1 THEN '["smartphone"]'::jsonb ELSE '["computer","mobile"]'::jsonb END,
      'connectivity', CASE i % 3 WHEN 0 THEN 'none' WHEN 1 THEN 'limited' ELSE 'reliable' END,
      'digital_skills', CASE WHEN i % 5 = 0 THEN 'none' ELSE 'basic' END),
    'review_interval_days', 90),
  (now() - (i % 1095) * interval '1 day' + interval '90 days')::date,
  now() - (i % 1095) * interval '1 day', now() - (i % 1095) * interval '1 day'
FROM generate_series(1, $PLANS) i;
INSERT INTO plan_versions (record_id, tenant, version, body, review_due, recorded_at, recorded_by)
SELECT id, tenant, 1, body, review_due, created_at, 'bench' FROM plans;
INSERT INTO plan_versions (record_id, tenant, version, body, review_due, recorded_at, recorded_by)
SELECT id, tenant, 2, body, review_due, created_at + interval '30 days', 'bench'
FROM plans WHERE ('x' || substr(md5(subject), 1, 8))::bit(32)::int % 5 = 0;
INSERT INTO recommendation_counts (tenant, day, modality, exclusion_level, first_preference, shard, n)
SELECT 'bench', (now() - k * interval '1 day')::date, c.modality, c.level, c.first, s, 40
FROM generate_series(0, 364) k, generate_series(0, 15) s,
  (VALUES ('video','none','yes'), ('telephone','at_risk','no'), ('in_person','excluded','no'),
          ('in_person','no_plan','no_plan'), ('text','at_risk','yes')) c(modality, level, first);
INSERT INTO session_checks (id, tenant, subject, body, outcome, result, created_at, created_by)
SELECT gen_random_uuid(), 'bench', 'Patient/' || i, '{}',
  CASE i % 3 WHEN 0 THEN 'proceed' WHEN 1 THEN 'proceed_with_actions' ELSE 'do_not_proceed' END, '{}',
  now() - (i % 365) * interval '1 day', 'bench'
FROM generate_series(1, 200000) i;
INSERT INTO referrals (id, tenant, subject, version, body, status, due_by, created_at, updated_at)
SELECT gen_random_uuid(), 'bench', 'Patient/' || i, 1,
  jsonb_build_object('format', 1, 'request', jsonb_build_object('subject', 'Patient/' || i,
    'reason', CASE i % 3 WHEN 0 THEN 'not_accessible' WHEN 1 THEN 'not_appropriate' ELSE 'not_preferred' END,
    'urgency', CASE i % 2 WHEN 0 THEN 'urgent' ELSE 'routine' END),
    'status', CASE WHEN i % 5 = 0 THEN 'requested' ELSE 'scheduled' END),
  CASE WHEN i % 5 = 0 THEN 'requested' ELSE 'scheduled' END,
  now() - (i % 365) * interval '1 day' + interval '1 day',
  now() - (i % 365) * interval '1 day', now() - (i % 365) * interval '1 day'
FROM generate_series(1, 50000) i;
INSERT INTO referral_versions (record_id, tenant, version, body, recorded_at, recorded_by)
SELECT id, tenant, 1, jsonb_set(body, '{status}', '"requested"'), created_at, 'bench' FROM referrals;
INSERT INTO referral_versions (record_id, tenant, version, body, recorded_at, recorded_by)
SELECT id, tenant, 2, body, created_at + (abs(hashtext(id::text)) % 48) * interval '1 hour', 'bench'
FROM referrals WHERE status = 'scheduled';
UPDATE referrals SET overdue_emitted = TRUE;
UPDATE plans SET review_notified_for = review_due;
COMMIT;
VACUUM ANALYZE;
SQL
}

# Times the report (granularity, from, to) RUNS times after one warm-up; prints p50 and max.
measure() {
  local label="$1" query="$2" token="$3"
  # Warm-up, retried: on SQLite the start-up sweep of 1 M plans' review dates holds the write
  # lock for a while, and the report's audit entry waits for it (503 after 5 s).
  for _ in $(seq 1 60); do
    curl -sf -m 120 -o /dev/null -H "Authorization: Bearer $token" \
      "http://127.0.0.1:$PORT/v1/reports/equity?$query" && break
    sleep 2
  done
  for _ in $(seq 1 "$RUNS"); do
    curl -sf -m 120 -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $token" \
      "http://127.0.0.1:$PORT/v1/reports/equity?$query"
  done | sort -n | awk -v label="$label" '{a[NR] = $1} END {
    printf "%-44s p50 %6.0f ms   max %6.0f ms   (%d runs)\n", label, a[int((NR + 1) / 2)] * 1000, a[NR] * 1000, NR }'
}

run() {
  local engine="$1" url="$2"
  if curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz"; then
    echo "port $PORT is taken; set BENCH_PORT" >&2; exit 1
  fi
  # The background sweeps (overdue referrals, due reviews) run once at start, then not again
  # while measuring: the benchmark times the report alone.
  TELEMENTAL_WORKER_INTERVAL=1h \
  TELEMENTAL_DATABASE_URL="$url" TELEMENTAL_ENCRYPTION_KEYS="scripts:KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=" TELEMENTAL_JWT_SECRET="$SECRET" TELEMENTAL_BIND="127.0.0.1:$PORT" \
    TELEMENTAL_LOG="${BENCH_LOG:-warn}" "$BIN" >"$WORK/$engine.log" 2>&1 &
  local pid=$!
  trap 'kill '"$pid"' 2>/dev/null; rm -rf "$WORK"; true' EXIT
  until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.05; done
  local token
  token=$(TELEMENTAL_JWT_SECRET="$SECRET" "$BIN" token --tenant bench --scope reports:read)
  echo "== $engine: $PLANS plans"
  measure "$engine, 12 months (default)" "" "$token"
  measure "$engine, 53 weeks" "granularity=week&from=$(date -u -d '-364 days' +%F)" "$token"
  measure "$engine, 36 months" "from=$(date -u -d '-35 months' +%Y-%m-01)" "$token"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [[ -n "${BENCH_LOG:-}" ]]; then cp "$WORK/$engine.log" "/tmp/report-bench-$engine.log"; fi
}

if [[ " $ENGINES " == *" sqlite "* ]]; then
  FILE="${KEEP:-$WORK/bench.db}"
  if [[ ! -s "$FILE" ]]; then
    echo "seeding SQLite..."
    TELEMENTAL_DATABASE_URL="sqlite://$FILE" "$BIN" migrate 2>/dev/null
    start=$(date +%s); seed_sqlite "$FILE" >/dev/null; echo "seeded in $(( $(date +%s) - start )) s"
  fi
  run sqlite "sqlite://$FILE"
  [[ -n "$KEEP" ]] || rm -f "$WORK"/bench.db*
fi

if [[ " $ENGINES " == *" postgres "* ]]; then
  DB="${BENCH_POSTGRES_DB:-tm_report_bench_$$}"
  PGURL="${PG%/*}/$DB"
  if ! psql -q "$PGURL" -c "SELECT 1 FROM plans LIMIT 1" >/dev/null 2>&1; then
    echo "seeding PostgreSQL..."
    psql -q "$PG" -c "CREATE DATABASE $DB"
    TELEMENTAL_DATABASE_URL="$PGURL" "$BIN" migrate 2>/dev/null
    start=$(date +%s); seed_postgres "$PGURL"; echo "seeded in $(( $(date +%s) - start )) s"
  fi
  run postgres "$PGURL"
  [[ -n "${BENCH_POSTGRES_DB:-}" ]] || psql -q "$PG" -c "DROP DATABASE $DB"
fi
