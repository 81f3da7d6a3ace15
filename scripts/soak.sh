#!/usr/bin/env bash
# Soak test (on demand, not in CI): mixed load at half the measured peak for a long while, on
# SQLite and on PostgreSQL, against the release binary with a local webhook receiver.
#
#   scripts/soak.sh [duration-seconds] [engine...]     default: 600 sqlite postgres
#
# Per engine: 200 service users with a plan and a safety protocol, a webhook for
# referral.created to a local receiver; the peak of the mix (wrk, 64 connections, 20 s, after a
# 5 s warm-up); then the mix (scripts/soak.lua: plan reads, referral lists, recommendations,
# session checks, referrals) paced at half that peak, in 30 s segments. Each segment prints
# req/s, p50/p99/max latency, non-2xx and socket errors, the service's RSS and the database
# size. At the end: every referral's webhook must have arrived (lost = referrals - distinct
# events received, after up to 120 s to drain), table sizes and row counts, warnings and errors
# in the service's log, and a clean exit on SIGTERM. Exits non-zero when an error or a lost
# delivery was seen.
#
# PostgreSQL: TELEMENTAL_SOAK_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres);
# a fresh tm_soak_* database is created and dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-600}"
shift || true
ENGINES=("$@")
[ ${#ENGINES[@]} -gt 0 ] || ENGINES=(sqlite postgres)
SEGMENT=30
THREADS=2
PEAK_CONNECTIONS=64
SOAK_CONNECTIONS=32
SUBJECTS=200
PG_BASE="${TELEMENTAL_SOAK_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PORT="${SOAK_PORT:-18283}"
HOOK_PORT="${SOAK_HOOK_PORT:-18284}"
BASE="http://127.0.0.1:$PORT"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/telemental"
for p in "$PORT" "$HOOK_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use (set SOAK_PORT / SOAK_HOOK_PORT)" >&2
    exit 2
  fi
done
export TELEMENTAL_JWT_SECRET="soak-secret-soak-secret-soak-secret-0000"
# Outside dev mode the service needs encryption keys (README: Encryption at rest).
export TELEMENTAL_ENCRYPTION_KEYS="${TELEMENTAL_ENCRYPTION_KEYS:-scripts:KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=}"
FAILED=0

rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

db_mib() { # engine url-or-file
  if [ "$1" = sqlite ]; then
    local total=0 f
    for f in "$2" "$2-wal"; do [ -f "$f" ] && total=$((total + $(stat -c %s "$f"))); done
    awk -v b="$total" 'BEGIN {printf "%.1f", b / 1048576}'
  else
    psql "$2" -Atc "SELECT round(pg_database_size(current_database()) / 1048576.0, 1)"
  fi
}

sql() { # engine url-or-file query
  if [ "$1" = sqlite ]; then sqlite3 "$2" "$3"; else psql "$2" -Atc "$3"; fi
}

run_wrk() { # seconds connections rate
  # A 10 s timeout (wrk's default is 2 s): a slow answer shows as latency; only one slower than
  # 10 s counts as an error.
  THREADS=$THREADS RATE=$3 wrk -t"$THREADS" -c"$2" -d"$1s" --timeout 10s --latency -s scripts/soak.lua "$BASE"
}

field() { # name line
  sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"
}

soak() {
  local engine=$1 work db_url db_file db_target pid hook_pid
  work=$(mktemp -d)
  if [ "$engine" = sqlite ]; then
    db_file="$work/soak.db"
    db_url="sqlite://$db_file"
    db_target="$db_file"
  else
    local name="tm_soak_$(date +%s)"
    psql "$PG_BASE" -qc "CREATE DATABASE $name"
    db_url="${PG_BASE%/*}/$name"
    db_target="$db_url"
  fi
  python3 scripts/soak.py receive "$HOOK_PORT" "$work/received.txt" "$work/secret" &
  hook_pid=$!
  TELEMENTAL_DATABASE_URL="$db_url" TELEMENTAL_BIND="127.0.0.1:$PORT" \
    TELEMENTAL_WEBHOOK_ALLOW_PRIVATE=true TELEMENTAL_LOG=warn \
    "$BIN" serve >"$work/out.log" 2>"$work/err.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.1; done
  TOKEN=$("$BIN" token --tenant soak --ttl 86400 --scope \
    "plans:read plans:write protocols:write sessions:write referrals:read referrals:write recommendations:read webhooks:manage")
  export TOKEN PLAN_IDS="$work/plan-ids"
  python3 scripts/soak.py setup "$BASE" "$TOKEN" "$SUBJECTS" "$PLAN_IDS" \
    "http://127.0.0.1:$HOOK_PORT/hook" "$work/secret"

  echo "== $engine: $(nproc) cores, release binary, $SUBJECTS service users, webhook to a local receiver"
  local vacuum_pid=""
  if [ "$engine" = postgres ]; then
    local autovacuum
    autovacuum=$(psql "$db_url" -Atc 'SHOW autovacuum')
    echo "PostgreSQL $(psql "$db_url" -Atc 'SHOW server_version'), autovacuum $autovacuum"
    if [ "$autovacuum" = off ]; then
      # A production server vacuums and analyzes by itself; without statistics the planner
      # keeps plans made for empty tables (e.g. sorting the whole delivery queue to take the
      # first rows). Stand in for autovacuum: VACUUM (ANALYZE) every 30 s, concurrently.
      echo "autovacuum is off on this server: the soak runs VACUUM (ANALYZE) every 30 s in its place"
      (while sleep 30; do psql "$db_url" -qc "VACUUM (ANALYZE)" 2>/dev/null || true; done) &
      vacuum_pid=$!
    fi
  fi
  echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
  run_wrk 5 "$PEAK_CONNECTIONS" 0 >/dev/null
  local line peak rate
  line=$(run_wrk 20 "$PEAK_CONNECTIONS" 0 | grep '^SOAK requests')
  peak=$(field rps "$line")
  rate=$(awk -v p="$peak" 'BEGIN {printf "%d", p / 2}')
  # The peak run leaves a backlog of deliveries: the soak starts once it is delivered.
  local drained=0
  for _ in $(seq 1 300); do
    [ "$(sql "$engine" "$db_target" "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'")" -eq 0 ] && { drained=1; break; }
    sleep 1
  done
  [ "$drained" = 1 ] || echo "the peak run's deliveries did not drain in 300 s"
  local soak_from
  soak_from=$(sql "$engine" "$db_target" "SELECT COUNT(*) FROM referrals")
  echo "peak of the mix: $peak req/s (p99 $(field p99_ms "$line") ms, errors $(field non2xx "$line")+$(field socket_errors "$line")); soak at $rate req/s for ${DURATION}s"
  printf '%6s %9s %8s %8s %8s %7s %8s %8s %8s\n' t req/s p50_ms p99_ms max_ms errors rss_MiB db_MiB backlog
  local t=0 errors=0 out n2 se rss_first="" rss_max=0 rss
  while [ "$t" -lt "$DURATION" ]; do
    out=$(run_wrk "$SEGMENT" "$SOAK_CONNECTIONS" "$rate")
    t=$((t + SEGMENT))
    line=$(grep '^SOAK requests' <<<"$out")
    n2=$(field non2xx "$line")
    se=$(field socket_errors "$line")
    errors=$((errors + n2 + se))
    rss=$(rss_mib "$pid")
    # Warm-up: the first minute.
    [ "$t" -le 60 ] || [ -n "$rss_first" ] || rss_first=$rss
    rss_max=$(awk -v a="$rss_max" -v b="$rss" 'BEGIN {print (b > a ? b : a)}')
    # backlog: deliveries not yet sent
    printf '%6s %9s %8s %8s %8s %7s %8s %8s %8s\n' "${t}s" "$(field rps "$line")" "$(field p50_ms "$line")" \
      "$(field p99_ms "$line")" "$(field max_ms "$line")" "$((n2 + se))" "$rss" "$(db_mib "$engine" "$db_target")" \
      "$(sql "$engine" "$db_target" "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'")"
    grep '^SOAK last_error' <<<"$out" || true
  done

  # Every referral (during the peak run and the soak) sent one referral.created event.
  local referrals received bad_sig
  referrals=$(sql "$engine" "$db_target" "SELECT COUNT(*) FROM referrals")
  for _ in $(seq 1 120); do
    received=$(awk '{print $1}' "$work/received.txt" | sort -u | wc -l)
    [ "$received" -ge "$referrals" ] && break
    sleep 1
  done
  bad_sig=$(grep -c 'bad-signature' "$work/received.txt" || true)
  local lost=$((referrals - received))
  echo "errors: $errors; referrals: $referrals; distinct events received: $received; lost: $lost; bad signatures: $bad_sig"
  # Change-to-delivery delay of the soak's events (arrival order: those after the peak run's).
  awk '!seen[$1]++' "$work/received.txt" | tail -n +$((soak_from + 1)) | awk '{print $3}' | sort -n | awk '
    {v[NR] = $1} END {if (NR) printf "event-to-delivery delay: p50 %d ms, p99 %d ms, max %d ms\n", v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1], v[NR]}' 
  echo "RSS after warm-up: $rss_first MiB, at the end: $rss MiB, highest: $rss_max MiB"
  echo "deliveries by status: $(sql "$engine" "$db_target" "SELECT status || '=' || COUNT(*) FROM webhook_deliveries GROUP BY status" | tr '\n' ' ')"
  echo "rows: $(for tbl in plans session_checks referrals audit_events outbox_events webhook_deliveries webhook_attempts; do
    printf '%s=%s ' "$tbl" "$(sql "$engine" "$db_target" "SELECT COUNT(*) FROM $tbl")"; done)"
  if [ "$engine" = sqlite ]; then
    echo "database: $(db_mib sqlite "$db_file") MiB (file + WAL), of which WAL $(awk -v b="$(stat -c %s "$db_file-wal" 2>/dev/null || echo 0)" 'BEGIN {printf "%.1f", b / 1048576}') MiB; largest tables and indexes (MiB):"
    sqlite3 "$db_file" "SELECT name, round(SUM(pgsize) / 1048576.0, 1) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8" | tr '\n' ' '
  else
    echo "database: $(db_mib postgres "$db_url") MiB; largest tables with their indexes (MiB):"
    psql "$db_url" -Atc "SELECT relname || '|' || round(pg_total_relation_size(relid) / 1048576.0, 1) FROM pg_statio_user_tables ORDER BY pg_total_relation_size(relid) DESC LIMIT 6" | tr '\n' ' '
  fi
  echo
  local warns
  warns=$(grep -c -E 'WARN|ERROR' "$work/err.log" || true)
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "warnings and errors in the service's log: $warns"
  grep -E 'WARN|ERROR' "$work/err.log" | head -5 || true
  [ -z "$vacuum_pid" ] || { kill "$vacuum_pid" 2>/dev/null || true; wait "$vacuum_pid" 2>/dev/null || true; }
  kill -TERM "$pid"
  local status=0
  wait "$pid" || status=$?
  echo "exit status after SIGTERM: $status"
  kill "$hook_pid" 2>/dev/null || true
  wait "$hook_pid" 2>/dev/null || true
  if [ "$errors" -ne 0 ] || [ "$lost" -ne 0 ] || [ "$bad_sig" -ne 0 ] || [ "$status" -ne 0 ]; then
    FAILED=1
  fi
  if [ "$engine" = postgres ]; then
    psql "$PG_BASE" -qc "DROP DATABASE ${db_url##*/} WITH (FORCE)"
  fi
  rm -rf "$work"
}

for engine in "${ENGINES[@]}"; do
  soak "$engine"
  echo
done
exit "$FAILED"
