"""Helpers for scripts/soak.sh (standard library only).

  soak.py receive PORT OUT SECRET_FILE   a webhook receiver: appends "<event id> ok|bad-signature
                                         <ms from the event to its arrival>" per delivery to OUT
                                         and answers 204
  soak.py setup BASE TOKEN N IDS HOOK_URL SECRET_FILE
                                         N service users with a plan and a safety protocol (plan
                                         ids to IDS, one per line, in subject order) and a
                                         webhook for referral.created (its secret to SECRET_FILE)
"""

import datetime
import hashlib
import hmac
import http.client
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def receive(port, out_path, secret_path):
    lock = threading.Lock()
    out = open(out_path, "a", buffering=1)
    secret = []

    class Hook(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the service's client pools connections

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not secret:
                try:
                    secret.append(open(secret_path).read().strip())
                except OSError:
                    pass
            event = self.headers.get("Telemental-Event-Id")
            verdict = "bad-signature"
            try:
                parts = dict(p.split("=", 1) for p in self.headers["Telemental-Signature"].split(","))
                mac = hmac.new(secret[0].encode(), parts["t"].encode() + b"." + body, hashlib.sha256)
                if hmac.compare_digest(mac.hexdigest(), parts["v1"]):
                    verdict = "ok"
            except (AttributeError, KeyError, ValueError, TypeError, IndexError):
                pass
            try:
                occurred = datetime.datetime.fromisoformat(json.loads(body)["occurred_at"].replace("Z", "+00:00"))
                lag_ms = (datetime.datetime.now(datetime.timezone.utc) - occurred).total_seconds() * 1000
            except (ValueError, KeyError, TypeError):
                lag_ms = -1
            if event is not None:  # anything else is not a delivery (a stray local request)
                with lock:
                    out.write(f"{event} {verdict} {lag_ms:.0f}\n")
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", int(port)), Hook).serve_forever()


def setup(base, token, n, ids_path, hook_url, secret_path):
    url = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(path, body):
        conn.request("POST", path, json.dumps(body), headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 201:
            sys.exit(f"setup: POST {path} answered {r.status}: {data[:300]!r}")
        return json.loads(data)

    hook = post("/v1/webhooks", {"url": hook_url, "events": ["referral.created"]})
    with open(secret_path, "w") as f:
        f.write(hook["secret"])
    with open(ids_path, "w") as ids:
        for i in range(1, int(n) + 1):
            subject = f"Patient/soak-{i}"
            plan = post("/v1/plans", {
                "subject": subject,
                "initial_conversation": {"held_on": "2026-11-20"},
                "preferences": {"default": ["video", "telephone", "in_person"],
                                "by_appointment_type": {"assessment": ["in_person", "video"]}},
                "resources": {"devices": ["smartphone", "computer"], "connectivity": "reliable",
                              "digital_skills": "confident", "familiar_platforms": ["Zoom"],
                              "private_space": "yes"},
                "backup_contact": {"method": "telephone", "number": "+447700900123"},
            })
            post("/v1/safety-protocols", {
                "subject": subject, "risk_level": "moderate",
                "call_back_numbers": ["+447700900123"], "usual_locations": [{"label": "home"}],
                "agreed_with_service_user_on": "2026-11-20",
            })
            ids.write(plan["id"] + "\n")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"receive": receive, "setup": setup}[cmd](*args)
