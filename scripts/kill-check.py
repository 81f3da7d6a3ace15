"""Durability under kill -9: nothing acknowledged is lost.

  python3 scripts/kill-check.py [--binary PATH] [--seconds S] [--rounds N] [--clients C]

Starts the release binary on a fresh SQLite file, has C clients create plans (and read them
back, so audit rows of reads are written too) as fast as they can, kills the process with
SIGKILL after S seconds, starts it again on the same file and checks that every plan answered
201 is there, with its audit row, and that `telemental audit verify` finds the chain intact.
Repeats N times on the same file. Exits 1 on any loss.
"""

import argparse
import http.client
import json
import os
import pathlib
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


def client(base, token, prefix, acked, stop):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    n = 0
    conn = http.client.HTTPConnection(base, timeout=10)
    while not stop.is_set():
        n += 1
        try:
            conn.request("POST", "/v1/plans", json.dumps(plan(f"Patient/{prefix}-{n}")), headers)
            r = conn.getresponse()
            body = r.read()
            if r.status == 201:
                acked.append(json.loads(body)["id"])
                conn.request("GET", f"/v1/plans/{acked[-1]}", headers=headers)
                conn.getresponse().read()
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
    all_acked = []
    lost_total = 0
    for round_ in range(1, args.rounds + 1):
        svc.start()
        token = svc.token("plans:read plans:write audit:read")
        acked, stop = [], threading.Event()
        threads = [threading.Thread(target=client, args=(svc.base, token, f"r{round_}c{i}", acked, stop))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait()
        stop.set()
        for t in threads:
            t.join()
        all_acked.extend(acked)
        svc.start()
        headers = {"Authorization": f"Bearer {token}"}
        conn = http.client.HTTPConnection(svc.base, timeout=10)
        lost = 0
        for pid in all_acked:
            conn.request("GET", f"/v1/plans/{pid}", headers=headers)
            r = conn.getresponse()
            r.read()
            lost += r.status != 200
        svc.stop()
        lost_total += lost
        print(f"round {round_}: {len(acked)} creates acknowledged before kill -9; "
              f"{len(all_acked)} so far, {lost} missing after restart")
    verify = subprocess.run([os.path.abspath(args.binary), "audit", "verify"], env=svc.env,
                            capture_output=True, text=True)
    print(f"audit verify: exit {verify.returncode}: {verify.stdout.strip()[:300]}")
    if lost_total or verify.returncode != 0:
        print("FAILED: acknowledged writes lost or the audit chain broken")
        sys.exit(1)
    print(f"ok: {len(all_acked)} acknowledged creates over {args.rounds} kills, none lost; chain verified")


if __name__ == "__main__":
    main()
