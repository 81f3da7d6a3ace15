#!/usr/bin/env python3
"""Webhook delivery benchmark against a running telemental (release binary, SQLite).

Creates N referrals as fast as CLIENTS threads can, with one webhook subscribed to
referral.created pointing at a local receiver, then waits until every event has arrived.
Reports events delivered per second (N / (last arrival - first create)) and the delay from
change to delivery (arrival - event occurred_at), p50/p99. Standard library only.
"""
import hashlib, hmac, json, os, statistics, sys, threading, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BASE, TOKEN = os.environ["BASE"], os.environ["TOKEN"]
N, CLIENTS = int(os.environ.get("N", "1000")), int(os.environ.get("CLIENTS", "16"))
arrivals, lock, bad_sigs = {}, threading.Lock(), [0]
secret = [None]

class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        t_arrival = time.time()
        sig = dict(p.split("=", 1) for p in self.headers["telemental-signature"].split(","))
        want = hmac.new(secret[0].encode(), f"{sig['t']}.".encode() + body, hashlib.sha256).hexdigest()
        ev = json.loads(body)
        with lock:
            if not hmac.compare_digest(want, sig["v1"]):
                bad_sigs[0] += 1
            arrivals.setdefault(ev["id"], (t_arrival, ev["occurred_at"]))
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass

def call(method, path, body):
    req = urllib.request.Request(BASE + path, method=method, data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())

ThreadingHTTPServer.request_queue_size = 256  # the default backlog of 5 drops connections
server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=server.serve_forever, daemon=True).start()
hook = call("POST", "/v1/webhooks", {"url": f"http://127.0.0.1:{server.server_port}/hook", "events": ["referral.created"]})
secret[0] = hook["secret"]

def create(i):
    call("POST", "/v1/referrals", {"subject": f"Patient/wh-{i}", "reason": "not_accessible", "urgency": "urgent"})

t0 = time.time()
with ThreadPoolExecutor(CLIENTS) as pool:
    list(pool.map(create, range(N)))
t_created = time.time()
while len(arrivals) < N and time.time() - t_created < 120:
    time.sleep(0.01)
with lock:
    got = dict(arrivals)
if len(got) < N:
    sys.exit(f"only {len(got)} of {N} events arrived")
last = max(a for a, _ in got.values())
delays = sorted((a - datetime.fromisoformat(o.replace("Z", "+00:00")).timestamp()) * 1000 for a, o in got.values())
q = lambda p: delays[min(len(delays) - 1, int(p * len(delays)))]
print(f"referrals created: {N} in {t_created - t0:.2f}s ({N / (t_created - t0):.0f}/s, {CLIENTS} client threads)")
print(f"events delivered: {len(got)} in {last - t0:.2f}s -> {len(got) / (last - t0):.0f} events/s; bad signatures: {bad_sigs[0]}")
print(f"change-to-delivery delay: p50 {q(0.50):.1f} ms, p99 {q(0.99):.1f} ms, max {delays[-1]:.1f} ms")
