"""Durability under kill -9: nothing acknowledged is lost.

  python3 scripts/kill-check.py [--binary PATH] [--seconds S] [--rounds N] [--clients C]

Starts the release binary on a fresh SQLite file, has C clients write as fast as they can
(each creates a plan, reads it back, updates it with If-Match, and creates a referral with an
Idempotency-Key), kills the process with SIGKILL after S seconds, starts it again on the same
file and checks that every plan answered 201 is there at least at the version last answered,
that every referral answered 201 is there, that a retry of an acknowledged referral's key
gets the same referral back, and that `telemental audit verify` finds the chain intact.
Repeats N times on the same file. Exits 1 on any loss.
"""

import argparse
import http.client
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402  (the suite's Service: start, token)


def plan(subject):
    return {"subject": subject,
            "initial_conversation": {"held_on": "2026-11-20", "held_by": "Practitioner/9"},
            "preferences": {"default": ["video", "telephone", "in_person"]},
            "resources": {"devices": ["smartphone"], "connectivity": "reliable",
                          "digital_skills": "basic", "private_space": "yes"},
            "backup_contact": {"method": "telephone", "number": "+447700900123"},
            "next_review_due": "2027-05-20"}


def referral(subject):
    return {"subject": subject, "reason": "not_accessible", "urgency": "routine",
            "appointment_type": "therapy", "detail": "no private space at home",
            "requested_by": "Practitioner/9"}


def client(base, token, prefix, acked, referrals, stop):
    """acked: {plan id: version last answered}; referrals: [(key, subject, referral id)]."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    n = 0
    conn = http.client.HTTPConnection(base, timeout=10)
    while not stop.is_set():
        n += 1
        subject = f"Patient/{prefix}-{n}"
        try:
            conn.request("POST", "/v1/plans", json.dumps(plan(subject)), headers)
            r = conn.getresponse()
            body = r.read()
            if r.status != 201:
                continue
            pid = json.loads(body)["id"]
            acked[pid] = 1
            conn.request("GET", f"/v1/plans/{pid}", headers=headers)
            conn.getresponse().read()
            changed = plan(subject)
            changed["next_review_due"] = "2027-06-01"
            conn.request("PUT", f"/v1/plans/{pid}", json.dumps(changed), dict(headers, **{"If-Match": '"1"'}))
            r = conn.getresponse()
            body = r.read()
            if r.status == 200:
                acked[pid] = json.loads(body)["version"]
            key = f"{prefix}-{n}"
            conn.request("POST", "/v1/referrals", json.dumps(referral(subject)),
                         dict(headers, **{"Idempotency-Key": key}))
            r = conn.getresponse()
            body = r.read()
            if r.status == 201:
                referrals.append((key, subject, json.loads(body)["id"]))
        except (OSError, http.client.HTTPException, ValueError):
            return  # the process is gone


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"),
                                                     "release", "telemental"))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=32)
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="telemental-kill-"))
    url = f"sqlite://{work}/kill.db?mode=rwc"
    svc = bench.Service(os.path.abspath(args.binary), url, work, "http://127.0.0.1:9/jwks", "kill")
    all_acked, all_referrals = {}, []
    lost_total = 0
    for round_ in range(1, args.rounds + 1):
        svc.start()
        token = svc.token("plans:read plans:write referrals:read referrals:write audit:read")
        acked, referrals, stop = {}, [], threading.Event()
        threads = [threading.Thread(target=client,
                                    args=(svc.base, token, f"r{round_}c{i}", acked, referrals, stop))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait()
        stop.set()
        for t in threads:
            t.join()
        all_acked.update(acked)
        all_referrals.extend(referrals)
        svc.start()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn = http.client.HTTPConnection(svc.base, timeout=10)
        lost = 0
        for pid, version in all_acked.items():
            conn.request("GET", f"/v1/plans/{pid}", headers=headers)
            r = conn.getresponse()
            body = r.read()
            lost += r.status != 200 or json.loads(body)["version"] < version
        for key, subject, rid in all_referrals:
            conn.request("GET", f"/v1/referrals/{rid}", headers=headers)
            r = conn.getresponse()
            r.read()
            lost += r.status != 200
        # A client that lost the answer retries with the same key: the same referral.
        for key, subject, rid in all_referrals[-50:]:
            conn.request("POST", "/v1/referrals", json.dumps(referral(subject)),
                         dict(headers, **{"Idempotency-Key": key}))
            r = conn.getresponse()
            body = r.read()
            lost += r.status != 201 or json.loads(body)["id"] != rid
        svc.stop()
        lost_total += lost
        updated = sum(1 for v in acked.values() if v > 1)
        print(f"round {round_}: acknowledged before kill -9: {len(acked)} creates, {updated} updates, "
              f"{len(referrals)} referrals; {len(all_acked)} plans and {len(all_referrals)} referrals "
              f"so far, {lost} missing or older after restart")
    verify = subprocess.run([os.path.abspath(args.binary), "audit", "verify"], env=svc.env,
                            capture_output=True, text=True)
    print(f"audit verify: exit {verify.returncode}: {verify.stdout.strip()[:300]}")
    if lost_total or verify.returncode != 0:
        print(f"FAILED: acknowledged writes lost or the audit chain broken (database and log kept in {work})")
        sys.exit(1)
    # Only a failure's database is worth keeping (about 27 MB a run).
    shutil.rmtree(work, ignore_errors=True)
    print(f"ok: {len(all_acked)} plans and {len(all_referrals)} referrals acknowledged over "
          f"{args.rounds} kills, none lost or older; chain verified")


if __name__ == "__main__":
    main()
