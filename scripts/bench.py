#!/usr/bin/env python3
"""The benchmark suite: every request kind a clinic's systems send, against the release binary,
on SQLite and PostgreSQL, each as a ratio to GET /healthz of the same binary in the same run.

Run it through scripts/bench.sh (builds the binary, installs wrk and a venv for signing the
EHR's tokens). Load: wrk, 2 threads x 64 connections, a warm-up then a timed run per request.
Printed per engine: req/s, p50, p99, non-2xx, the server's CPU time per request, the ratio to
/healthz; peak RSS (VmHWM); audit rows against requests; the scaling check (recommendation p50
with 1 000 plans and with 1 000 000 plans seeded in bulk with SQL); and each target of issue 10.
"""

import argparse
import contextlib
import http.client
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import date
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-bench-secret-bench-secret-00"
TENANT = "bench"
SUBJECTS = 1000
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# Targets of issue 10 (ratios to /healthz of the same binary in the same run).
TARGETS = {
    "sqlite": {"recommend": 0.5, "plan_read": 0.25, "plan_create": 0.09},
    "postgres": {"recommend": 0.25, "plan_read": 0.15, "plan_create": 0.09},
}
P99_TARGETS_MS = {"sqlite": {"recommend": 10.0, "plan_create": 40.0}}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- the EHR's keys and tokens

def serve_jwks(directory):
    """Serves tests/fixtures' ES384 public key as a JWKS (the EHR's keys), in a thread."""
    keys = {"keys": [json.load(open(ROOT / "tests/fixtures/es384.jwk.json"))]}
    (directory / "jwks.json").write_text(json.dumps(keys))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(directory), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/jwks.json"


_KEY = None


def _sign(args):
    aud, _ = args
    import jwt  # from the bench venv

    global _KEY
    if _KEY is None:
        from cryptography.hazmat.primitives import serialization

        _KEY = serialization.load_pem_private_key((ROOT / "tests/fixtures/es384.pem").read_bytes(), None)
    now = int(time.time())
    claims = {"iss": "https://ehr.example", "sub": "bench-ehr", "aud": aud, "tenant": TENANT,
              "iat": now, "exp": now + 3000, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, _KEY, algorithm="ES384", headers={"kid": "test-es384", "typ": "JWT"})


def sign_tokens(n, aud, path):
    """Single-use CDS tokens (one jti each), signed on every core before anything is timed."""
    with Pool(os.cpu_count()) as pool, open(path, "w") as f:
        for t in pool.imap(_sign, ((aud, i) for i in range(n)), chunksize=500):
            f.write(t + "\n")


# ---------------------------------------------------------------- the service

class Service:
    def __init__(self, binary, url, work, jwks_url, label):
        self.binary, self.url, self.work, self.label = binary, url, work, label
        self.port = free_port()
        self.base = f"127.0.0.1:{self.port}"
        self.env = dict(os.environ,
                        TELEMENTAL_JWT_SECRET=SECRET,
                        # Encryption at rest needs keys outside dev mode (README).
                        TELEMENTAL_ENCRYPTION_KEYS=os.environ.get(
                            "TELEMENTAL_ENCRYPTION_KEYS",
                            "scripts:KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc="),
                        TELEMENTAL_DATABASE_URL=url,
                        TELEMENTAL_BIND=self.base,
                        TELEMENTAL_PUBLIC_URL=f"http://{self.base}",
                        TELEMENTAL_JWKS_URL=jwks_url,
                        TELEMENTAL_CDS_ISSUERS="https://ehr.example",
                        TELEMENTAL_LOG="warn")
        self.proc = None

    def start(self):
        log = open(self.work / f"{self.label}.log", "ab")
        self.proc = subprocess.Popen([self.binary, "serve"], env=self.env, stdout=log, stderr=log)
        for _ in range(300):
            try:
                c = http.client.HTTPConnection(self.base, timeout=1)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                sys.exit(f"the service exited at start: see {self.work / self.label}.log")
            time.sleep(0.1)
        sys.exit("the service did not become ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)

    def token(self, scope):
        out = subprocess.run([self.binary, "token", "--tenant", TENANT, "--scope", scope, "--ttl", "7200"],
                             env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def cpu_ticks(self):
        f = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])

    def peak_rss_mib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def post(conn, path, token, body, expect=201):
    conn.request("POST", path, json.dumps(body),
                 {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != expect:
        sys.exit(f"seeding: POST {path} answered {r.status}: {data[:300]!r}")
    return json.loads(data)


def seed(svc, token):
    """SUBJECTS service users through the API, each with a plan and a moderate-risk protocol."""
    today = date.today().isoformat()
    conn = http.client.HTTPConnection(svc.base)
    ids = []
    for i in range(1, SUBJECTS + 1):
        plan = post(conn, "/v1/plans", token, {
            "subject": f"Patient/bench-{i}", "initial_conversation": {"held_on": today},
            "preferences": {"default": ["video", "telephone", "in_person"],
                            "by_appointment_type": {"assessment": ["in_person", "video"]}},
            "resources": {"devices": ["smartphone", "computer"], "connectivity": "reliable",
                          "digital_skills": "confident", "familiar_platforms": ["Zoom"], "private_space": "yes"},
            "barriers": [{"kind": "vision"}] if i % 4 == 0 else [],
            "backup_contact": {"method": "telephone", "number": "+447700900123"}})
        ids.append(plan["id"])
        post(conn, "/v1/safety-protocols", token, {
            "subject": f"Patient/bench-{i}", "risk_level": "moderate", "call_back_numbers": ["+447700900123"],
            "usual_locations": [{"label": "home"}], "agreed_with_service_user_on": today})
    return ids


# ---------------------------------------------------------------- wrk

LUA_COMMON = r"""
local counter = 0
function setup(thread) thread:set("tid", counter); counter = counter + 1 end
local token = os.getenv("TOKEN")
local subjects = tonumber(os.getenv("SUBJECTS"))
local n = 0
local function headers()
  return {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
end
"""

LUA = {
    "recommend": LUA_COMMON + r"""
local types = {"therapy", "assessment", "medication_review"}
request = function()
  n = n + 1
  local body = string.format('{"subject": "Patient/bench-%d", "appointment_type": "%s", "sensitive_topics": %s}',
    math.random(subjects), types[(n % 3) + 1], (n % 2 == 0) and "true" or "false")
  return wrk.format("POST", "/v1/recommendations", headers(), body)
end
""",
    # Subjects drawn from every plan in the database (the scaling check's cold variant).
    "recommend_spread": LUA_COMMON + r"""
local spread = tonumber(os.getenv("SPREAD"))
request = function()
  local i = math.random(spread)
  local subject = (i <= subjects) and string.format("bench-%d", i) or string.format("s-%d", i)
  local body = string.format('{"subject": "Patient/%s", "appointment_type": "therapy"}', subject)
  return wrk.format("POST", "/v1/recommendations", headers(), body)
end
""",
    "plan_read": LUA_COMMON + r"""
local ids = {}
for line in io.lines(os.getenv("PLAN_IDS")) do ids[#ids + 1] = line end
request = function()
  return wrk.format("GET", "/v1/plans/" .. ids[math.random(#ids)], headers())
end
""",
    "plan_create": LUA_COMMON + r"""
local prefix = os.getenv("PREFIX")
request = function()
  n = n + 1
  local body = string.format([[{"subject": "Patient/%s-%d-%d", "preferences": {"default": ["video", "in_person"]},
    "resources": {"devices": ["computer"], "connectivity": "reliable", "digital_skills": "basic"},
    "backup_contact": {"method": "telephone", "number": "+447700900123"}}]], prefix, tid, n)
  return wrk.format("POST", "/v1/plans", headers(), body)
end
""",
    "session_check": LUA_COMMON + r"""
request = function()
  local body = string.format([[{"subject": "Patient/bench-%d", "modality": "video", "appointment_type": "therapy",
    "service_user_location": {"description": "home"}, "call_back_number": "+447700900123",
    "clinician_in_private_space": true, "service_user_private": true, "sensitive_topics": false}]],
    math.random(subjects))
  return wrk.format("POST", "/v1/session-checks", headers(), body)
end
""",
    "referral_create": LUA_COMMON + r"""
request = function()
  local body = string.format([[{"subject": "Patient/bench-%d", "reason": "not_accessible", "urgency": "routine",
    "appointment_type": "therapy", "requested_by": "Practitioner/9"}]], math.random(subjects))
  return wrk.format("POST", "/v1/referrals", headers(), body)
end
""",
    # Each wrk thread takes every other token of the file, so no token is sent twice.
    "cds": LUA_COMMON + r"""
local tokens = {}
function init(args)
  local i = 0
  for line in io.lines(os.getenv("TOKENS")) do
    if i % 2 == tid then tokens[#tokens + 1] = line end
    i = i + 1
  end
end
local codes = {"PHONE", "VIDEOCONF", "FACE"}
request = function()
  n = n + 1
  local s = math.random(subjects)
  local body = string.format([[{"hook": "appointment-book", "hookInstance": "%d-%d",
    "context": {"userId": "PractitionerRole/9", "patientId": "bench-%d",
      "appointments": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "Appointment", "id": "apt-%d", "status": "proposed",
        "serviceType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode", "code": "%s"}]}],
        "participant": [{"actor": {"reference": "Patient/bench-%d"}, "status": "needs-action"}]}}]}}}]],
    tid, n, s, n, codes[(n % 3) + 1], s)
  return wrk.format("POST", "/cds-services/telemental-modality",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. tokens[((n - 1) % #tokens) + 1]}, body)
end
""",
}

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    return float(m.group(1)) * UNITS[m.group(2)]


class Bench:
    def __init__(self, args, work):
        self.args, self.work = args, work

    def wrk(self, svc, kind, duration, env, warmup=3):
        script = self.work / f"{kind}.lua"
        script.write_text(LUA.get(kind, ""))
        cmd = ["wrk", "-t2", f"-c{self.args.connections}"]
        target = f"http://{svc.base}"
        if kind == "healthz":
            target += "/healthz"
        else:
            cmd += ["-s", str(script)]
        run_env = dict(os.environ, SUBJECTS=str(SUBJECTS), **env)
        if warmup:
            run_env["PREFIX"] = f"w{uuid.uuid4().hex[:8]}"
            subprocess.run(cmd + ["-d", f"{warmup}s", target], env=run_env, capture_output=True, check=True)
        run_env["PREFIX"] = f"r{uuid.uuid4().hex[:8]}"
        before = svc.cpu_ticks()
        out = subprocess.run(cmd + ["-d", f"{duration}s", "--latency", target], env=run_env,
                             capture_output=True, text=True, check=True).stdout
        cpu = (svc.cpu_ticks() - before) / CLK_TCK
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: (.*)", out)
        return {
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
            "p99": ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
            "requests": requests,
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else "",
            "cpu_ms": 1000 * cpu / max(requests, 1),
        }


# ---------------------------------------------------------------- the databases

def sql(engine, url, text):
    if engine == "sqlite":
        return subprocess.run(["sqlite3", url.removeprefix("sqlite://")], input=text, capture_output=True,
                              text=True, check=True).stdout.strip()
    return subprocess.run(["psql", "-qAt", url], input=text, capture_output=True, text=True, check=True).stdout.strip()


def bulk_plans(engine, url, count):
    """`count` more plans (one version each) for subjects Patient/s-<i>, inserted with SQL."""
    if engine == "sqlite":
        sql(engine, url, f"""
PRAGMA busy_timeout=60000;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT {SUBJECTS + 1} UNION ALL SELECT i + 1 FROM n WHERE i < {count + SUBJECTS})
INSERT INTO plans (id, tenant, subject, version, body, review_due, created_at, updated_at)
SELECT randomblob(16), '{TENANT}', 'Patient/s-' || i, 1,
  '{{"format":1,"subject":"Patient/s-' || i || '","preferences":{{"default":["video","telephone","in_person"]}},'
  || '"resources":{{"devices":["smartphone"],"connectivity":"' || (CASE i % 3 WHEN 0 THEN 'none' WHEN 1 THEN 'limited' ELSE 'reliable' END)
  || '","digital_skills":"basic"}},"review_interval_days":90}}',
  date('now', '+' || (i % 365) || ' days'),
  strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000Z', strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000Z'
FROM n;
INSERT INTO plan_versions (record_id, tenant, version, body, review_due, recorded_at, recorded_by)
SELECT id, tenant, 1, body, review_due, created_at, 'bench' FROM plans WHERE subject LIKE 'Patient/s-%';
COMMIT;
ANALYZE;
PRAGMA wal_checkpoint(TRUNCATE);
""")
    else:
        sql(engine, url, f"""
BEGIN;
INSERT INTO plans (id, tenant, subject, version, body, review_due, created_at, updated_at)
SELECT gen_random_uuid(), '{TENANT}', 'Patient/s-' || i, 1,
  jsonb_build_object('format', 1, 'subject', 'Patient/s-' || i,
    'preferences', jsonb_build_object('default', jsonb_build_array('video', 'telephone', 'in_person')),
    'resources', jsonb_build_object('devices', '["smartphone"]'::jsonb,
      'connectivity', CASE i % 3 WHEN 0 THEN 'none' WHEN 1 THEN 'limited' ELSE 'reliable' END,
      'digital_skills', 'basic'),
    'review_interval_days', 90),
  (now() + (i % 365) * interval '1 day')::date, now(), now()
FROM generate_series({SUBJECTS + 1}, {count + SUBJECTS}) i;
INSERT INTO plan_versions (record_id, tenant, version, body, review_due, recorded_at, recorded_by)
SELECT id, tenant, 1, body, review_due, created_at, 'bench' FROM plans WHERE subject LIKE 'Patient/s-%';
COMMIT;
ANALYZE;
""")


# ---------------------------------------------------------------- one engine

ROWS = [
    ("healthz", "GET /healthz (baseline)"),
    ("recommend", "POST /v1/recommendations (audited)"),
    ("plan_read", "GET /v1/plans/{id} (audited)"),
    ("plan_create", "POST /v1/plans"),
    ("session_check", "POST /v1/session-checks"),
    ("referral_create", "POST /v1/referrals"),
    ("cds", "POST /cds-services/telemental-modality (ES384)"),
]


@contextlib.contextmanager
def profiled(args, svc, work, engine, kind):
    """With `--perf` naming this kind: sampled call stacks of the service during the run, to
    read with `perf report -i <file> --no-children` (needs a binary with symbols, see README)."""
    note = {}
    if kind not in args.perf.split(","):
        yield note
        return
    data = work / f"perf-{engine}-{kind}.data"
    profiler = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-o", str(data), "-p", str(svc.proc.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield note
    finally:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=120)
        note["note"] = f"profile in {data}"


def run_engine(engine, args, bench, work, jwks_url, binary):
    pg_admin = args.postgres_url
    if engine == "sqlite":
        url = f"sqlite://{work / 'bench.db'}"
    else:
        name = f"tm_bench_{os.getpid()}"
        subprocess.run(["psql", "-q", pg_admin, "-c", f"DROP DATABASE IF EXISTS {name}"], check=True)
        subprocess.run(["psql", "-q", pg_admin, "-c", f"CREATE DATABASE {name}"], check=True)
        url = pg_admin.rsplit("/", 1)[0] + "/" + name
    svc = Service(binary, url, work, jwks_url, engine)
    results = {}
    try:
        svc.start()
        token = svc.token("plans:read plans:write protocols:read protocols:write recommendations:read "
                          "sessions:write referrals:write")
        t0 = time.time()
        ids = seed(svc, token)
        (work / "plan-ids").write_text("\n".join(ids) + "\n")
        print(f"  seeded {SUBJECTS} plans and protocols through the API in {time.time() - t0:.1f} s", flush=True)
        env = {"TOKEN": token, "PLAN_IDS": str(work / "plan-ids")}
        load = os.getloadavg()[0]
        for kind, label in ROWS:
            if kind == "cds":
                if args.no_cds:
                    continue
                n_tokens = int(args.duration * args.cds_rate)
                t0 = time.time()
                sign_tokens(3 * 2000, f"http://{svc.base}/cds-services/telemental-modality", work / "warm.txt")
                sign_tokens(n_tokens, f"http://{svc.base}/cds-services/telemental-modality", work / "run.txt")
                print(f"  signed {n_tokens + 6000} ES384 tokens in {time.time() - t0:.0f} s", flush=True)
                bench.wrk(svc, kind, 3, dict(env, TOKENS=str(work / "warm.txt")), warmup=0)
                with profiled(args, svc, work, engine, kind) as note:
                    r = bench.wrk(svc, kind, args.duration, dict(env, TOKENS=str(work / "run.txt")), warmup=0)
                r.update(note)
                if r["requests"] > n_tokens:
                    r["note"] = f"{r['requests']} requests for {n_tokens} tokens: replays were refused (raise --cds-rate)"
            else:
                with profiled(args, svc, work, engine, kind) as note:
                    r = bench.wrk(svc, kind, args.duration, env)
                r.update(note)
            results[kind] = r
            base = results["healthz"]["rps"]
            print(f"  {label:<48} {r['rps']:>9.0f} req/s  p50 {r['p50']:>7.2f} ms  p99 {r['p99']:>7.2f} ms"
                  f"  ratio {r['rps'] / base:5.3f}  cpu {r['cpu_ms']:.3f} ms/req  non-2xx {r['non2xx']}"
                  + (f"  socket errors {r['socket_errors']}" if r["socket_errors"] else "")
                  + (f"  ({r['note']})" if r.get("note") else "")
                  + f"  peak RSS so far {svc.peak_rss_mib():.1f} MiB", flush=True)
        results["load_before"] = load
        results["peak_rss_mib"] = svc.peak_rss_mib()
        # Every audited read leaves its row: compare with the requests wrk saw completed (a
        # request still in flight when wrk stops is audited but not counted by wrk).
        time.sleep(1)
        counts = sql(engine, url, "SELECT action, count(*) FROM audit_events WHERE resource_type = 'plan' "
                                  "AND action IN ('read', 'recommend') GROUP BY action ORDER BY action;")
        audit = dict(line.split("|") for line in counts.splitlines())
        results["audit"] = audit
        print(f"  peak RSS {results['peak_rss_mib']:.1f} MiB", flush=True)
        print(f"  audit rows: plan reads {audit.get('read', 0)} for {results['plan_read']['requests']} timed "
              f"GET /v1/plans/{{id}} (plus warm-up); recommendations {audit.get('recommend', 0)} plan rows for "
              f"{results['recommend']['requests']} timed recommendations (plus warm-up and CDS calls)", flush=True)

        if args.scale:
            svc.stop()
            t0 = time.time()
            bulk_plans(engine, url, args.scale - SUBJECTS)
            print(f"  scaling: {args.scale - SUBJECTS} more plans inserted with SQL in {time.time() - t0:.0f} s",
                  flush=True)
            svc.start()
            hot = bench.wrk(svc, "recommend", args.duration, env)
            spread = bench.wrk(svc, "recommend_spread", args.duration, dict(env, SPREAD=str(args.scale)))
            results["scale_hot"], results["scale_spread"] = hot, spread
            p50 = results["recommend"]["p50"]
            print(f"  recommendation p50: {p50:.2f} ms at {SUBJECTS} plans; at {args.scale} plans "
                  f"{hot['p50']:.2f} ms for the same {SUBJECTS} subjects (x{hot['p50'] / p50:.2f}), "
                  f"{spread['p50']:.2f} ms for subjects drawn from all {args.scale} (x{spread['p50'] / p50:.2f}, "
                  f"{spread['rps']:.0f} req/s, non-2xx {spread['non2xx']})", flush=True)
            results["peak_rss_mib_scale"] = svc.peak_rss_mib()
            print(f"  peak RSS after the scaling runs: {results['peak_rss_mib_scale']:.1f} MiB", flush=True)
    finally:
        svc.stop()
        if engine == "postgres" and not args.keep:
            subprocess.run(["psql", "-q", pg_admin, "-c", f"DROP DATABASE IF EXISTS {name}"])
    return results


def verdicts(engine, res):
    base = res["healthz"]["rps"]
    lines = [(f"{kind}: every response 2xx ({r['non2xx']} were not)", r["non2xx"] == 0)
             for kind, r in res.items() if isinstance(r, dict) and "non2xx" in r]
    for kind, target in TARGETS[engine].items():
        ratio = res[kind]["rps"] / base
        lines.append((f"{kind} ratio {ratio:.3f} >= {target}", ratio >= target))
    for kind, target in P99_TARGETS_MS.get(engine, {}).items():
        lines.append((f"{kind} p99 {res[kind]['p99']:.1f} ms <= {target:.0f} ms", res[kind]["p99"] <= target))
    if engine == "sqlite":
        lines.append((f"peak RSS {res['peak_rss_mib']:.1f} MiB <= 64 MiB", res["peak_rss_mib"] <= 64))
        if "scale_hot" in res:
            for name in ("scale_hot", "scale_spread"):
                x = res[name]["p50"] / res["recommend"]["p50"]
                lines.append((f"{name} p50 x{x:.2f} <= 1.3", x <= 1.3))
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=15)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--engines", default="sqlite,postgres")
    p.add_argument("--scale", type=int, default=1_000_000, help="plans for the scaling check (0: skip)")
    p.add_argument("--cds-rate", type=int, default=6000, help="CDS tokens signed per second of the run")
    p.add_argument("--no-cds", action="store_true")
    p.add_argument("--perf", default="", help="comma-separated kinds to profile with perf (e.g. plan_create)")
    p.add_argument("--keep", action="store_true", help="keep the work folder and the PostgreSQL database")
    p.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL",
                                                            "postgres://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--binary", default=str(ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "release/telemental"))
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="telemental-bench-"))
    jwks_url = serve_jwks(work)
    print(f"telemental benchmark suite: wrk 2 threads x {args.connections} connections, {args.duration} s per "
          f"run after a 3 s warm-up, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    all_results = {}
    try:
        for engine in args.engines.split(","):
            print(f"== {engine}", flush=True)
            all_results[engine] = run_engine(engine, args, Bench(args, work), work, jwks_url, args.binary)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("== targets (issue 10)")
    for engine, res in all_results.items():
        for text, ok in verdicts(engine, res):
            print(f"  {engine:<8} {'met    ' if ok else 'NOT met'}  {text}")
    out = ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "bench-results.json"
    out.write_text(json.dumps(all_results, indent=2))
    print(f"figures written to {out}")


if __name__ == "__main__":
    main()
