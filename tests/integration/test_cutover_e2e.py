# meridian-test: e2e
"""Cutover targets end to end: three regions on loopback (mrd_deploy.py)
with the real PowerDNS and etcd of tests/run.sh and a webhook receiver in
this process. Each test uses its own PowerDNS zone and etcd prefix.

  switchover_moves_dns_and_registry  dig and etcd carry the new epoch; an
                                     older-epoch write is refused by the compare
  failover_with_powerdns_stopped     the dns step retries and reports it; the
                                     record converges when PowerDNS returns
  drift_is_reported_and_repaired     hand edits of the record and the key are
                                     events and are written back; a newer epoch
                                     in etcd is a fencing event, left alone
  webhook_signed_idempotent          signature, the same Idempotency-Key and
                                     body on retries, one event after dedup
  leader_change_between_steps        SIGKILL the leader while the op waits in
                                     its dns step: it completes once, same epoch

PowerDNS "stopped" is SIGSTOP of the server of tests/run.sh (its PID from
MERIDIAN_TEST_PDNS_PID / the pid file in MERIDIAN_TEST_PDNS_CONF_DIR) and
SIGCONT to bring it back: requests time out like a dead host's, and the run's
own cleanup still stops the same process.
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test

VALUES = {"eu": "10.77.0.1", "us": "10.77.0.2", "ap": "10.77.0.3"}


def env():
    return {k: h.require_env(k) for k in (
        "MERIDIAN_TEST_PDNS_API", "MERIDIAN_TEST_PDNS_KEY", "MERIDIAN_TEST_PDNS_DNS_PORT",
        "MERIDIAN_TEST_ETCD", "MERIDIAN_TEST_PDNS_PID", "MERIDIAN_TEST_PDNS_CONF_DIR")}


def unique(tag):
    return "%s%d%d" % (tag, os.getpid(), int(time.monotonic() * 1000) % 1000000)


# ---- PowerDNS -------------------------------------------------------------

def pdns_req(e, method, path, body=None):
    req = urllib.request.Request(e["MERIDIAN_TEST_PDNS_API"] + "/api/v1/servers/localhost" + path,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 method=method,
                                 headers={"X-API-Key": e["MERIDIAN_TEST_PDNS_KEY"],
                                          "Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=5) as r:
        data = r.read()
        return json.loads(data) if data else None


def pdns_zone(e, tag):
    zone = unique(tag) + ".meridian.test."
    pdns_req(e, "POST", "/zones", {"name": zone, "kind": "Native", "nameservers": []})
    return zone


def pdns_set(e, zone, name, rtype, content):
    pdns_req(e, "PATCH", "/zones/" + zone, {"rrsets": [{
        "name": name, "type": rtype, "ttl": 5, "changetype": "REPLACE",
        "records": [{"content": content, "disabled": False}]}]})


def dig(e, name, rtype="A"):
    out = subprocess.run(["dig", "@127.0.0.1", "-p", e["MERIDIAN_TEST_PDNS_DNS_PORT"], "+short",
                          "+time=1", "+tries=1", name, rtype],
                         capture_output=True, text=True, timeout=10).stdout
    return [l.strip().strip('"') for l in out.splitlines() if l.strip()]


def pdns_server_pid(e):
    try:
        with open(os.path.join(e["MERIDIAN_TEST_PDNS_CONF_DIR"], "pdns.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        pass
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", e["MERIDIAN_TEST_PDNS_PID"]],
                         capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else int(e["MERIDIAN_TEST_PDNS_PID"])


class PdnsPause:
    """SIGSTOP/SIGCONT of the run's PowerDNS; always resumed at test end.
    The runuser that tests/run.sh started it with stops itself when its child
    stops (su's job control) and must be continued too, or run.sh's TERM at
    cleanup stays pending on a stopped process."""

    def __init__(self, e):
        self.pid = pdns_server_pid(e)
        self.parent = int(e["MERIDIAN_TEST_PDNS_PID"])
        self.stopped = False
        h._register(self)

    def stop(self):
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True

    def resume(self):
        if self.stopped:
            for pid in (self.parent, self.pid):
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            self.stopped = False

    def _cleanup(self):
        self.resume()


# ---- etcd -------------------------------------------------------------------

def b64(s):
    return base64.b64encode(s.encode()).decode()


def etcd_call(e, path, body):
    req = urllib.request.Request(e["MERIDIAN_TEST_ETCD"] + path, data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=5) as r:
        return json.loads(r.read())


def etcd_get(e, key):
    res = etcd_call(e, "/v3/kv/range", {"key": b64(key)})
    kvs = res.get("kvs") or []
    return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None


def etcd_put(e, key, value):
    etcd_call(e, "/v3/kv/put", {"key": b64(key), "value": b64(value)})


def registry(e, prefix):
    """(epoch, primary JSON) of the service in etcd, or (None, None)."""
    ep = etcd_get(e, prefix + "/services/orders/epoch")
    pv = etcd_get(e, prefix + "/services/orders/primary")
    return (int(ep) if ep and ep.isdigit() else ep), (json.loads(pv) if pv else None)


# ---- deployment ---------------------------------------------------------------

def deploy(tag, webhooks=None, service_extra=None, registry_changes=None, with_dns=True, **kw):
    e = env()
    zone = pdns_zone(e, tag)
    name = "orders." + zone
    prefix = "/meridian-test/" + unique(tag)
    dns = {"driver": "pdns", "api_url": e["MERIDIAN_TEST_PDNS_API"],
           "api_key": e["MERIDIAN_TEST_PDNS_KEY"], "zone": zone, "name": name, "type": "A",
           "ttl": 5, "values": VALUES, "timeout_ms": 1000, "required": True}
    reg = {"driver": "etcd", "endpoints": [e["MERIDIAN_TEST_ETCD"]], "prefix": prefix,
           "timeout_ms": 1000, "required": True}
    reg.update(registry_changes or {})
    d = Deployment(profile="default", dns=dns if with_dns else None, registry=reg, webhooks=webhooks,
                   service_extra=service_extra, **kw)
    d.wait_ready()
    # a steady writer keeps the replicas' replay lag (in ms) fresh: without
    # writes it grows past max_lag_ms and no replica is a candidate
    d.writer_start(interval_s=0.1)
    d.e, d.zone, d.name, d.prefix = e, zone, name, prefix
    return d


def wait_targets(d, epoch, region, timeout_s=30):
    """dig and etcd both say (epoch, region)."""
    def ok():
        txt = dig(d.e, "_meridian." + d.name, "TXT")
        ep, prim = registry(d.e, d.prefix)
        return (dig(d.e, d.name) == [VALUES[region]]
                and txt == ["epoch=%d primary=%s" % (epoch, region)]
                and ep == epoch and prim and prim["primary_region"] == region
                and prim["epoch"] == epoch)
    h.wait_until(ok, timeout_s, interval_s=0.2,
                 what="dns and registry at epoch %d, primary %s" % (epoch, region))


def switchover(d, to, timeout_s=30):
    """Starts a switchover; retries while the leader refuses it for a
    transient reason (409: its snapshot still lists the last op; 422: a
    replica's heartbeat or check late on a loaded machine)."""
    def start():
        try:
            return d.start_op("switchover", to=to)
        except h.HarnessError as e:
            if "409" not in str(e) and "422" not in str(e):
                raise
            h.log("switchover refused, retrying: %s; plan: %s"
                  % (e, str(d.leader().get("/v1/services/orders/plan?to=" + to)[1])[:800]))
            return None
    return h.wait_until(start, timeout_s, interval_s=0.5, what="switchover to %s accepted" % to)


def events(d, kind):
    code, body = d.any_controller().get("/v1/events?service=orders&limit=1000")
    assert code == 200, body
    return [ev for ev in body["events"] if ev["kind"] == kind]


def urllib_get(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as r:
        return r.status, r.read().decode()


def drivers(d):
    return d.service(d.leader())["drivers"]


# ---- tests ----------------------------------------------------------------------

@test
def switchover_moves_dns_and_registry():
    d = deploy("sw")
    # the leader establishes epoch 1 in both targets by itself
    wait_targets(d, 1, "eu")
    op_id = switchover(d, "us")
    op = d.wait_op(op_id, 90, until=("rejoin", "done", "aborted", "failed"))
    assert op["step"] in ("rejoin", "done"), op
    assert op["epoch"] == 2, op
    wait_targets(d, 2, "us", 10)
    assert dig(d.e, d.name) == [VALUES["us"]]
    svc = d.service(d.leader())
    assert svc["epoch"] == 2 and svc["primary_region"] == "us", svc
    applied = events(d, "cutover.applied")
    assert {ev["detail"]["driver"] for ev in applied if ev["detail"]["epoch"] == 2} == \
        {"registry", "dns"}, applied

    def verified():
        drv = drivers(d)
        return all(drv[k]["desired"] and drv[k]["desired"]["epoch"] == 2
                   and drv[k]["observed"] and drv[k]["observed"]["epoch"] == 2
                   and drv[k]["in_sync"] and drv[k]["last_verified_at"]
                   for k in ("dns", "registry"))
    h.wait_until(verified, 15, interval_s=0.2, what="drivers verified at epoch 2")

    # A write of an older epoch (the driver's own transaction, epoch 1) is
    # refused by the compare and the key keeps the newer value.
    ek = d.prefix + "/services/orders/epoch"
    pk = d.prefix + "/services/orders/primary"
    old = json.dumps({"primary_region": "eu", "endpoint": VALUES["eu"], "epoch": 1,
                      "changed_at": "2026-01-01T00:00:00.000Z"})
    put = [{"request_put": {"key": b64(ek), "value": b64("%020d" % 1)}},
           {"request_put": {"key": b64(pk), "value": b64(old)}}]
    res = etcd_call(d.e, "/v3/kv/txn", {
        "compare": [{"key": b64(ek), "target": "VALUE", "result": "LESS",
                     "value": b64("%020d" % 1)}],
        "success": put,
        "failure": [{"request_txn": {
            "compare": [{"key": b64(ek), "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": put, "failure": [{"request_range": {"key": b64(ek)}}]}}]})
    assert not res.get("succeeded"), res
    nested = res["responses"][0]["response_txn"]
    assert not nested.get("succeeded"), res
    ep, prim = registry(d.e, d.prefix)
    assert ep == 2 and prim["primary_region"] == "us", (ep, prim)


@test
def failover_with_powerdns_stopped():
    d = deploy("fo")
    wait_targets(d, 1, "eu")
    pause = PdnsPause(d.e)
    pause.stop()
    d.agents["eu"].kill9()
    d.pg["eu"].kill9()

    def op_in_dns():
        op = d.latest_operation()
        return op if op and op["kind"] == "failover" and op["step"] == "dns" else None
    op = h.wait_until(op_in_dns, 90, interval_s=0.2, what="failover waiting in its dns step")

    def reported():
        o = d.operation(op["id"])
        st = [s for s in o["steps"] if s["step"] == "dns"]
        return o if (st and st[0]["attempts"] >= 2 and "failed" in st[0]["detail"]
                     and o["step"] == "dns") else None
    o = h.wait_until(reported, 30, interval_s=0.2, what="dns retries reported in the operation")
    h.log("dns step while PowerDNS is stopped: %s" % [s for s in o["steps"]
                                                     if s["step"] == "dns"][0])
    drv = drivers(d)["dns"]
    assert drv["last_error"] and drv["attempts"] >= 2, drv
    assert events(d, "cutover.retry"), "no retry event"
    # the registry step (etcd is up) is done with the new epoch already
    ep, prim = registry(d.e, d.prefix)
    assert ep == 2 and prim["primary_region"] == "us", (ep, prim)
    pause.resume()
    d.wait_op(op["id"], 60, until=("rejoin", "done", "failed"))
    wait_targets(d, 2, "us", 20)


@test
def drift_is_reported_and_repaired():
    d = deploy("dr", service_extra={"reconcile_interval_ms": 1000})
    wait_targets(d, 1, "eu")
    h.wait_until(lambda: drivers(d)["dns"]["in_sync"] and drivers(d)["registry"]["in_sync"],
                 15, interval_s=0.2, what="both drivers in sync")
    before = len(events(d, "cutover.drift"))
    # by hand: the A record to another address, the primary key to another region
    pdns_set(d.e, d.zone, d.name, "A", "10.99.99.99")
    assert dig(d.e, d.name) == ["10.99.99.99"]
    etcd_put(d.e, d.prefix + "/services/orders/primary",
             json.dumps({"primary_region": "ap", "endpoint": VALUES["ap"], "epoch": 1,
                         "changed_at": "2026-01-01T00:00:00.000Z"}))
    t0 = time.monotonic()
    wait_targets(d, 1, "eu", 10)  # one 1 s interval, plus a loaded machine
    h.log("drift repaired %.2f s after the hand edits" % (time.monotonic() - t0))
    drift = events(d, "cutover.drift")[before:]
    assert {ev["detail"]["driver"] for ev in drift} >= {"dns", "registry"}, drift
    assert len(events(d, "cutover.repaired")) >= 2
    drv = drivers(d)
    assert drv["dns"]["drift_total"] >= 1 and drv["registry"]["repairs_total"] >= 1, drv
    code, text = urllib_get(d.leader().url + "/metrics")
    assert code == 200
    for driver in ("dns", "registry"):
        line = [l for l in text.splitlines() if l.startswith(
            'meridian_cutover_drift_total{service="orders",driver="%s"}' % driver)]
        assert line and int(line[0].split()[-1]) >= 1, (driver, line)

    # A newer epoch in etcd is not drift to overwrite: a fencing event.
    etcd_put(d.e, d.prefix + "/services/orders/epoch", "%020d" % 99)
    etcd_put(d.e, d.prefix + "/services/orders/primary",
             json.dumps({"primary_region": "ap", "endpoint": VALUES["ap"], "epoch": 99,
                         "changed_at": "2026-01-01T00:00:00.000Z"}))
    h.wait_until(lambda: events(d, "cutover.fencing"), 10, interval_s=0.2,
                 what="fencing event for the newer epoch")
    time.sleep(2.5)
    ep, prim = registry(d.e, d.prefix)
    assert ep == 99 and prim["primary_region"] == "ap", (ep, prim)

    # A configuration reload (SIGHUP) rebuilds the drivers; repair goes on.
    leader = d.leader()
    leader.write_config(services=[dict(d.service_cfg, reconcile_interval_ms=700)])
    leader.proc.signal(signal.SIGHUP)
    h.wait_until(lambda: drivers(d)["dns"].get("known") and
                 drivers(d)["reconcile_interval_ms"] == 700, 10, interval_s=0.2,
                 what="drivers rebuilt after the reload")
    pdns_set(d.e, d.zone, d.name, "A", "10.99.99.98")
    h.wait_until(lambda: dig(d.e, d.name) == [VALUES["eu"]], 10, interval_s=0.2,
                 what="dns repaired after the reload")


class Receiver:
    """A webhook receiver: per Idempotency-Key, answers 500 to the first two
    deliveries, then (slow=True) accepts the third but answers too late (the
    sender times out: a lost answer), then 200. Dedups on the key."""

    def __init__(self, secret, slow=False):
        self.secret = secret.encode()
        self.slow = slow
        self.seen = []           # (key, signature ok, body)
        self.accepted = []       # keys of deliveries processed (before dedup)
        self.events = {}         # key -> body, after dedup
        self.lock = threading.Lock()
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                key = self.headers.get("Idempotency-Key")
                sig = self.headers.get("X-Meridian-Signature", "")
                good = "sha256=" + hmac.new(rec.secret, body, hashlib.sha256).hexdigest()
                with rec.lock:
                    rec.seen.append((key, hmac.compare_digest(sig, good), body))
                    tries = sum(1 for s in rec.seen if s[0] == key)
                    status = 500 if tries <= 2 else 200
                    if status == 200:
                        rec.accepted.append(key)
                        if key not in rec.events:
                            rec.events[key] = json.loads(body)
                if rec.slow and tries == 3:
                    time.sleep(1.5)  # past the sender's timeout_ms
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        h._register(self)

    def _cleanup(self):
        self.server.shutdown()
        self.server.server_close()


@test
def webhook_signed_idempotent():
    rec = Receiver("s3cret-for-the-test", slow=True)
    hooks = [{"url": rec.url, "secret": "s3cret-for-the-test", "max_attempts": 6,
              "timeout_ms": 500, "backoff_base_ms": 50, "backoff_max_ms": 300}]
    d = deploy("wh", webhooks=hooks)
    wait_targets(d, 1, "eu")
    op_id = switchover(d, "us")
    d.wait_op(op_id, 90, until=("done", "failed"))
    h.wait_until(lambda: "orders:2" in rec.events, 20, interval_s=0.1,
                 what="the epoch 2 event delivered")
    with rec.lock:
        tries = [s for s in rec.seen if s[0] == "orders:2"]
    assert all(s[1] for s in tries), "bad signature: %s" % tries
    ev = rec.events["orders:2"]
    assert ev["epoch"] == 2 and ev["new_region"] == "us" and ev["old_region"] == "eu", ev
    # 500, 500, accepted but answered too late, 200: four requests with the
    # same key and body, two accepted, one event after dedup
    h.wait_until(lambda: drivers(d)["webhooks"]["delivered_epoch"] == 2, 20, interval_s=0.2,
                 what="the leader reports the webhook delivered")
    time.sleep(1.0)
    with rec.lock:
        tries = [x for x in rec.seen if x[0] == "orders:2"]
        assert len(tries) == 4, [(x[0], x[1]) for x in rec.seen]
        assert len({x[2] for x in tries}) == 1, "retries must carry the same body"
        assert rec.accepted == ["orders:2", "orders:2"], rec.accepted
        assert sorted(rec.events) == ["orders:2"], rec.events


@test
def leader_change_between_steps():
    rec = Receiver("leader-change-secret")
    d = deploy("lc", webhooks=[{"url": rec.url, "secret": "leader-change-secret",
                                "backoff_base_ms": 50, "backoff_max_ms": 200}])
    wait_targets(d, 1, "eu")
    pause = PdnsPause(d.e)
    pause.stop()
    op_id = switchover(d, "us")
    h.wait_until(lambda: d.operation(op_id)["step"] == "dns", 90, interval_s=0.2,
                 what="switchover waiting in its dns step")
    ep, prim = registry(d.e, d.prefix)
    assert ep == 2 and prim["primary_region"] == "us", (ep, prim)
    old = d.leader()
    old.kill9()
    h.log("killed the leader %s with the operation in its dns step" % old.name)
    others = [c for c in d.controllers() if c is not old]
    new = h.wait_for_leader(others, 60)[0]
    h.log("new leader %s" % new.name)
    pause.resume()
    op = d.wait_op(op_id, 60, until=("rejoin", "done", "failed"))
    assert op["step"] in ("rejoin", "done"), op
    assert op["epoch"] == 2, op
    wait_targets(d, 2, "us", 20)
    svc = d.service(new)
    assert svc["epoch"] == 2 and svc["primary_region"] == "us", svc
    code, body = new.get("/v1/operations?service=orders")
    assert [str(o["id"]) for o in body["operations"]] == [str(op_id)], body
    h.wait_until(lambda: "orders:2" in rec.events, 20, interval_s=0.1,
                 what="the epoch 2 webhook")
    time.sleep(1.0)
    with rec.lock:
        h.log("webhook deliveries across the leader change: %d" % len(rec.seen))
        assert sorted(rec.events) == ["orders:2"], rec.events
        assert all(x[1] for x in rec.seen), "bad signature"


@test
def best_effort_registry_does_not_block():
    """A best-effort registry that cannot be reached: the switchover
    completes (dns is required and up) while the registry keeps retrying,
    reported in the service's drivers."""
    d = deploy("be", registry_changes={"required": False,
                                       "endpoints": ["http://127.0.0.1:%d" % h.dead_port()]})
    op_id = switchover(d, "us")
    op = d.wait_op(op_id, 90, until=("rejoin", "done", "aborted", "failed"))
    assert op["step"] in ("rejoin", "done"), op
    assert dig(d.e, d.name) == [VALUES["us"]]

    def retrying():
        reg = drivers(d)["registry"]
        return reg if (reg["desired"] and reg["desired"]["epoch"] == 2
                       and reg["attempts"] >= 3 and reg["last_error"]
                       and reg["epoch"] < 2 and not reg["in_sync"]) else None
    reg = h.wait_until(retrying, 20, interval_s=0.2, what="registry retrying in the background")
    h.log("best-effort registry: %s" % {k: reg[k] for k in ("attempts", "last_error")})


@test
def webhook_without_dns_driver():
    """Webhooks fire from the operation's progress even when no dns driver
    holds the dns step (it is left in the tick that enters it)."""
    rec = Receiver("no-dns-secret")
    d = deploy("nd", with_dns=False, webhooks=[{"url": rec.url, "secret": "no-dns-secret",
                                                "backoff_base_ms": 50, "backoff_max_ms": 200}])
    op_id = switchover(d, "us")
    op = d.wait_op(op_id, 90, until=("rejoin", "done", "aborted", "failed"))
    assert op["step"] in ("rejoin", "done"), op
    h.wait_until(lambda: "orders:2" in rec.events, 20, interval_s=0.1,
                 what="the epoch 2 webhook without a dns driver")
    assert drivers(d)["dns"]["configured"] is False


@test
def bad_cutover_config_refuses_to_start():
    """mrd_cutover_config_check() at config load: the key is named."""
    e = env()
    tmp = h.TempDir("badcfg")
    svc = {"name": "orders", "primary_region": "eu",
           "members": [{"name": "orders-eu", "node": "node-eu", "region": "eu"}],
           "dns": {"driver": "pdns", "api_url": e["MERIDIAN_TEST_PDNS_API"], "api_key": "k",
                   "zone": "example.test", "name": "orders.example.test.", "type": "A",
                   "ttl": 5, "values": {"eu": "10.0.0.1"}}}
    cases = [("dns", dict(svc), "services[0].dns: dns.zone"),
             ("registry", dict(svc, dns=None, registry={"driver": "etcd", "endpoints": [],
                                                        "prefix": "/x"}),
              "services[0].registry: registry.endpoints"),
             ("webhooks", dict(svc, dns=None, webhooks=[{"url": "ftp://x", "secret": "s"}]),
              "services[0].webhooks: webhooks[0].url")]
    for name, service, want in cases:
        service = {k: v for k, v in service.items() if v is not None}
        c = h.Controller("ctl-" + name, "eu", h.require_env("MERIDIAN_TEST_PG"), tmp,
                         extra={"regions": [{"name": "eu", "priority": 1}],
                                "services": [service]})
        cp = h.run([h.program_path("meridian-controller"), "--config", c.config_path],
                   check=False, timeout_s=30)
        assert cp.returncode == 2, cp.stdout
        assert want in cp.stdout, "%s: %s" % (want, cp.stdout)


if __name__ == "__main__":
    h.run_all()
