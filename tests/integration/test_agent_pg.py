#!/usr/bin/python3
"""Integration test of meridian-agent against a real PostgreSQL primary and a
replica made with pg_basebackup, both on loopback under MERIDIAN_TEST_TMP.

The controller side is a small fake controller (http.server) run by this
test: it records every heartbeat and answers with the epochs, commands and
"recorded" flag each scenario needs. (The real controller cannot yet be told
to send an arbitrary command such as a stale-epoch one; the lead may switch
the scenarios that do not need that to the real controller.)

Scenarios, in order (each prints "ok <name>"):
  lag            lag grows while replay is paused, returns to 0 after resume
  lease_epoch    a replica agent that has seen epoch N+1 refuses a lease of N
  fence          fence makes writes fail while reads work; unfence restores
  stale_epoch    a stale-epoch command is refused, also after an agent restart
  at_most_once   a command id is not executed twice across a restart
  failsafe       no recorded contact but every peer lease: stays writable
  self_fence     neither recorded contact nor peer leases: fences itself
  promote_wait   promote waits for the granted lease to end, then promotes
Fails (never skips) when a MERIDIAN_* variable it needs is missing.
"""
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

PGBIN = "/usr/lib/postgresql/15/bin"
TOKEN = "agent-token-for-tests"
PEER_TOKEN = "peer-token-for-tests"


def need_env(name):
    v = os.environ.get(name)
    if not v:
        print(f"FAIL: environment variable {name} is not set", file=sys.stderr)
        sys.exit(1)
    return v


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_until(what, fn, timeout=20.0, interval=0.05):
    """Polls fn until it returns a true value; fails with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # noqa: BLE001 - keep polling, report at the end
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def run_pg(*args, check=True):
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=check,
                          capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- PostgreSQL


class Cluster:
    def __init__(self, base, name, port):
        self.dir = os.path.join(base, name)
        self.data = os.path.join(self.dir, "data")
        self.port = port
        self.name = name
        self.started = False

    @property
    def conninfo(self):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=2"

    def opts(self):
        return (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                f"-c wal_level=replica -c max_wal_senders=10 -c hot_standby=on "
                f"-c wal_log_hints=on")

    def start(self):
        run_pg(f"{PGBIN}/pg_ctl", "-D", self.data, "-w", "-t", "60", "-l",
               os.path.join(self.dir, "log"), "-o", self.opts(), "start")
        self.started = True

    def stop(self):
        if self.started:
            run_pg(f"{PGBIN}/pg_ctl", "-D", self.data, "-w", "-t", "60", "-m", "fast", "stop",
                   check=False)
            self.started = False

    def sql(self, query, check=True):
        r = subprocess.run([f"{PGBIN}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U",
                            "postgres", "-d", "postgres", "-qAtX", "-v", "ON_ERROR_STOP=1",
                            "-c", query], capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"{self.name}: {query!r} failed: {r.stderr.strip()}")
        return r

    def value(self, query):
        return self.sql(query).stdout.strip()

    def write_fails(self):
        r = self.sql("INSERT INTO t(v) VALUES ('x')", check=False)
        return r.returncode != 0 and "read-only" in r.stderr

    def write_works(self):
        return self.sql("INSERT INTO t(v) VALUES ('x')", check=False).returncode == 0


def make_primary_and_replica(base):
    os.makedirs(base, exist_ok=True)
    shutil.chown(base, "postgres", "postgres")
    p = Cluster(base, "primary", free_port())
    r = Cluster(base, "replica", free_port())
    for c in (p, r):
        os.makedirs(c.dir)
        shutil.chown(c.dir, "postgres", "postgres")
    run_pg(f"{PGBIN}/initdb", "-D", p.data, "-A", "trust", "-U", "postgres")
    p.start()
    p.sql("CREATE TABLE t (id bigserial PRIMARY KEY, v text)")
    run_pg(f"{PGBIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(p.port), "-U", "postgres",
           "-D", r.data, "-R", "-X", "stream", "-c", "fast")
    r.start()
    wait_until("replica streaming",
               lambda: p.value("SELECT count(*) FROM pg_stat_replication "
                               "WHERE state = 'streaming'") == "1")
    return p, r


# ---------------------------------------------------------------- fake controller


class FakeController:
    """Answers heartbeats like a controller: per node a list of pending
    commands (kept until the agent reports their result, then acked)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.beats = {}        # node -> list of (monotonic time, request)
        self.results = {}      # command id -> (monotonic time, result)
        self.pending = {}      # node -> list of commands
        self.delivered = {}    # command id -> monotonic time first delivered
        self.services = {}     # service -> {epoch, primary_region, primary_position}
        self.recorded = True
        self.primary_node = None  # whose member position feeds primary_position
        self.port = free_port()
        ctl = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                if self.path != "/v1/agent/heartbeat":
                    return self.reply(404, {"error": {"code": "not_found", "message": "x"}})
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.reply(401, {"error": {"code": "unauthorized", "message": "x"}})
                n = int(self.headers.get("Content-Length", "0"))
                req = json.loads(self.rfile.read(n))
                self.reply(200, ctl.answer(req))

            def reply(self, status, obj):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def answer(self, req):
        now = time.monotonic()
        node = req["node"]
        with self.lock:
            self.beats.setdefault(node, []).append((now, req))
            if node == self.primary_node:
                for m in req.get("members", []):
                    if m["role"] == "primary" and m["service"] in self.services:
                        self.services[m["service"]]["primary_position"] = m["position"]
            ack = []
            for res in req.get("results", []):
                self.results.setdefault(res["id"], (now, res))
                ack.append(res["id"])
                self.pending[node] = [c for c in self.pending.get(node, [])
                                      if c["id"] != res["id"]]
            cmds = list(self.pending.get(node, []))
            for c in cmds:
                self.delivered.setdefault(c["id"], now)
            services = {m["service"]: self.services[m["service"]]
                        for m in req.get("members", []) if m["service"] in self.services}
            return {"recorded": self.recorded, "heartbeat_ms": 200, "services": services,
                    "commands": cmds, "ack": ack}

    def command(self, node, cid, service, member, kind, epoch, args=None):
        with self.lock:
            self.pending.setdefault(node, []).append(
                {"id": cid, "service": service, "member": member, "kind": kind,
                 "epoch": epoch, "args": args or {}})

    def result(self, cid, timeout=20.0):
        def get():
            with self.lock:
                return self.results.get(cid)
        return wait_until(f"result of command {cid}", get, timeout)[1]

    def last_member(self, node, member):
        with self.lock:
            beats = self.beats.get(node, [])
            if not beats:
                return None
            for m in beats[-1][1].get("members", []):
                if m["name"] == member:
                    return m
        return None

    def beats_since(self, node, t):
        with self.lock:
            return [b for (tb, b) in self.beats.get(node, []) if tb >= t]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- agents


class Agent:
    def __init__(self, base, build, name, region, member, cluster, ctl, peers, iso_ms=3000):
        self.name = name
        self.dir = os.path.join(base, f"agent-{name}")
        self.state = os.path.join(self.dir, "state")
        os.makedirs(self.state, exist_ok=True)
        self.port = free_port()
        self.bin = os.path.join(build, "meridian-agent")
        self.log_path = os.path.join(self.dir, "agent.log")
        self.proc = None
        self.member = member
        self.cfg = {
            "node": name, "region": region, "controllers": [ctl.url], "token": TOKEN,
            "heartbeat_ms": 200, "isolation_timeout_ms": iso_ms, "request_timeout_ms": 500,
            "listen": f"127.0.0.1:{self.port}",
            "peer_tokens": [{"name": "peers", "token": PEER_TOKEN, "role": "agent"}],
            "peers": peers, "state_dir": self.state, "log_level": "debug",
            "members": [{"service": "orders", "name": member, "kind": "postgresql",
                         "conninfo": cluster.conninfo, "promote_timeout_ms": 30000}],
            "checks": [{"name": f"pg-{name}", "kind": "postgresql", "conninfo": cluster.conninfo,
                        "interval_ms": 500, "timeout_ms": 400, "member": member}],
        }

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        path = os.path.join(self.dir, "agent.json")
        with open(path, "w") as f:
            json.dump(self.cfg, f, indent=1)
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([self.bin, "--config", path], stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"agent {self.name} did not stop on SIGTERM")
            if rc != 0:
                raise AssertionError(f"agent {self.name} exited {rc} on SIGTERM")
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()


def lease(agent, service, epoch, node="test", ttl=1000, token=PEER_TOKEN):
    body = json.dumps({"service": service, "epoch": epoch, "node": node,
                       "ttl_ms": ttl}).encode()
    req = urllib.request.Request(f"{agent.url}/v1/peer/lease", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


# ---------------------------------------------------------------- scenarios


def scenario_lag(ctl, p, r, a, b):
    # a replayed commit gives the replica a last replay timestamp
    p.sql("INSERT INTO t(v) VALUES ('first')")
    wait_until("replica lag 0 at start",
               lambda: (m := ctl.last_member("b", "orders-b")) and m["role"] == "replica"
               and m["lag_bytes"] == 0 and m["lag_ms"] == 0 and m["replay_timestamp_ms"] > 0,
               timeout=30)
    r.sql("SELECT pg_wal_replay_pause()")
    p.sql("INSERT INTO t(v) SELECT repeat('x', 1000) FROM generate_series(1, 2000)")
    seen = []

    def lagging():
        m = ctl.last_member("b", "orders-b")
        seen[:] = [m]
        return (m["lag_bytes"] or 0) > 1000000 and (m["lag_ms"] or 0) > 0 and m

    try:
        m = wait_until("lag grows while replay is paused", lagging)
    except AssertionError as e:
        raise AssertionError(f"{e}; last member report {seen}") from None
    assert m["receive_position"] > m["replay_position"], m
    time.sleep(0.6)
    m2 = ctl.last_member("b", "orders-b")
    assert m2["lag_ms"] >= m["lag_ms"], (m, m2)
    r.sql("SELECT pg_wal_replay_resume()")
    wait_until("lag back to 0 after resume",
               lambda: (m := ctl.last_member("b", "orders-b")) and m["lag_bytes"] == 0
               and m["lag_ms"] == 0 and m["healthy"])
    am = ctl.last_member("a", "orders-a")
    assert am["role"] == "primary" and am["position"] > 0 and am["timeline"] == 1, am


def scenario_lease_epoch(ctl, p, r, a, b):
    st, ans = lease(b, "orders", 1)
    assert st == 200 and ans["granted"] and ans["ttl_ms"] == 1000, ans
    st, ans = lease(b, "orders", 1, token="wrong")
    assert st == 401, (st, ans)
    st, ans = lease(b, "orders", "x")
    assert st == 400 and "epoch" in ans["error"]["message"], ans
    with ctl.lock:
        ctl.services["orders"]["epoch"] = 2
    wait_until("agent b saw epoch 2",
               lambda: ctl.beats_since("b", time.monotonic() - 0.2)
               and ctl.beats_since("b", 0)[-1]["epochs"].get("orders") == 2)
    st, ans = lease(b, "orders", 1)
    assert st == 200 and not ans["granted"] and ans["epoch"] == 2, ans
    assert "seen epoch 2" in ans["reason"], ans
    st, ans = lease(b, "orders", 2)
    assert st == 200 and ans["granted"], ans
    # also after a restart (the epoch file)
    b.stop()
    b.start()
    wait_until("agent b back", lambda: lease(b, "orders", 1)[0] == 200, timeout=20)
    st, ans = lease(b, "orders", 1)
    assert not ans["granted"] and ans["epoch"] == 2, ans


def scenario_fence(ctl, p, r, a, b):
    assert p.write_works()
    ctl.command("a", "fence-1", "orders", "orders-a", "fence", 2)
    res = ctl.result("fence-1")
    assert res["status"] == "done", res
    assert p.write_fails(), "writes must fail on a fenced primary"
    assert int(p.value("SELECT count(*) FROM t")) > 0, "reads must work"
    wait_until("heartbeat reports fenced",
               lambda: (m := ctl.last_member("a", "orders-a")) and m["fenced"]
               and m["role"] == "fenced")
    ctl.command("a", "unfence-1", "orders", "orders-a", "unfence", 2)
    res = ctl.result("unfence-1")
    assert res["status"] == "done", res
    wait_until("writes work after unfence", p.write_works, timeout=10)
    wait_until("heartbeat reports primary",
               lambda: (m := ctl.last_member("a", "orders-a")) and not m["fenced"]
               and m["role"] == "primary")


def scenario_stale_epoch(ctl, p, r, a, b):
    ctl.command("a", "stale-1", "orders", "orders-a", "fence", 1)
    res = ctl.result("stale-1")
    assert res["status"] == "refused" and "stale epoch 1 < 2" in res["error"], res
    assert p.write_works(), "a refused fence must not fence"
    a.stop()
    a.start()
    ctl.command("a", "stale-2", "orders", "orders-a", "fence", 1)
    res = ctl.result("stale-2")
    assert res["status"] == "refused", res
    assert p.write_works()


def scenario_at_most_once(ctl, p, r, a, b):
    ctl.command("a", "fence-2", "orders", "orders-a", "fence", 2)
    assert ctl.result("fence-2")["status"] == "done"
    assert p.write_fails()
    ctl.command("a", "unfence-2", "orders", "orders-a", "unfence", 2)
    assert ctl.result("unfence-2")["status"] == "done"
    wait_until("writes work", p.write_works, timeout=10)
    a.stop()
    a.start()
    # the controller sends fence-2 again (say it lost the result)
    with ctl.lock:
        del ctl.results["fence-2"]
    ctl.command("a", "fence-2", "orders", "orders-a", "fence", 2)
    res = ctl.result("fence-2")
    assert res["status"] == "done", res
    time.sleep(0.5)
    assert p.write_works(), "fence-2 must not run twice"
    assert "command already executed" in a.log_text()


def scenario_failsafe(ctl, p, r, a, b):
    """No recorded contact for 2x isolation, but b grants every lease."""
    wait_until("a primary and writable",
               lambda: (m := ctl.last_member("a", "orders-a")) and m["role"] == "primary")
    with ctl.lock:
        ctl.recorded = False
    time.sleep(2 * 3.0 + 1.0)
    assert p.write_works(), "failsafe: peer leases must keep the primary writable"
    assert "isolated" not in a.log_text()
    with ctl.lock:
        ctl.recorded = True


def scenario_self_fence(ctl, p, r, a, b):
    """No recorded contact and no lease from b (agent b stopped)."""
    b.stop()
    with ctl.lock:
        ctl.recorded = False
    t0 = time.monotonic()
    wait_until("a fences itself", p.write_fails, timeout=3.0 + 10)
    assert time.monotonic() - t0 >= 2.0, "must not fence while the lease still holds"
    assert "isolated: fencing the primary" in a.log_text()
    wait_until("heartbeat reports fenced",
               lambda: (m := ctl.last_member("a", "orders-a")) and m["fenced"])
    # a self-fenced primary stays fenced even with contact back ...
    with ctl.lock:
        ctl.recorded = True
    time.sleep(1.0)
    assert p.write_fails()
    # ... until the controller unfences it
    ctl.command("a", "unfence-3", "orders", "orders-a", "unfence", 2)
    assert ctl.result("unfence-3")["status"] == "done"
    wait_until("writes work", p.write_works, timeout=10)
    b.start()


def scenario_promote_wait(ctl, p, r, a, b):
    # a holds leases from b (it asks every beat); b is ordered to promote
    wait_until("b up and granting",
               lambda: "peer lease granted" in b.log_text(), timeout=20)
    time.sleep(0.5)
    ctl.command("b", "promote-1", "orders", "orders-b", "promote", 3)
    res = ctl.result("promote-1", timeout=40)
    assert res["status"] == "done", res
    waited = ctl.results["promote-1"][0] - ctl.delivered["promote-1"]
    assert waited >= 2.0, f"promote ran {waited:.2f}s after delivery, before the lease ended"
    assert "promote waits for a granted peer lease to end" in b.log_text()
    assert r.value("SELECT pg_is_in_recovery()") == "f"
    wait_until("b reports primary",
               lambda: (m := ctl.last_member("b", "orders-b")) and m["role"] == "primary")
    # b no longer grants a an epoch-2 lease
    st, ans = lease(b, "orders", 2)
    assert st == 200 and not ans["granted"], ans


def main():
    tmp = need_env("MERIDIAN_TEST_TMP")
    build = need_env("MERIDIAN_BUILD_DIR")
    base = tempfile.mkdtemp(prefix="agent-", dir=tmp)
    os.chmod(base, 0o755)
    ctl = FakeController()
    p = r = None
    agents = []
    ok = False
    try:
        p, r = make_primary_and_replica(os.path.join(base, "pg"))
        with ctl.lock:
            ctl.services["orders"] = {"epoch": 1, "primary_region": "eu", "primary_position": 0}
            ctl.primary_node = "a"
        a = Agent(base, build, "a", "eu", "orders-a", p, ctl, [])
        b = Agent(base, build, "b", "us", "orders-b", r, ctl, [])
        a.cfg["peers"] = [{"name": "b", "url": b.url, "token": PEER_TOKEN,
                           "services": ["orders"]}]
        b.cfg["peers"] = [{"name": "a", "url": a.url, "token": PEER_TOKEN}]
        agents = [a, b]
        a.start()
        b.start()
        for name, fn in [("lag", scenario_lag), ("lease_epoch", scenario_lease_epoch),
                         ("fence", scenario_fence), ("stale_epoch", scenario_stale_epoch),
                         ("at_most_once", scenario_at_most_once),
                         ("failsafe", scenario_failsafe), ("self_fence", scenario_self_fence),
                         ("promote_wait", scenario_promote_wait)]:
            t = time.monotonic()
            fn(ctl, p, r, a, b)
            for ag in agents:
                assert ag.alive(), f"agent {ag.name} died during {name}"
            print(f"ok {name} ({time.monotonic() - t:.1f}s)", flush=True)
        for ag in agents:
            ag.stop()
        ok = True
    finally:
        if not ok:
            for ag in agents:
                try:
                    print(f"---- log of agent {ag.name} (last 60 lines)", file=sys.stderr)
                    print("".join(ag.log_text().splitlines(True)[-60:]), file=sys.stderr)
                except OSError:
                    pass
        for ag in agents:
            try:
                ag.stop()
            except AssertionError as e:
                print(e, file=sys.stderr)
        for c in (p, r):
            if c:
                c.stop()
        ctl.close()
        if ok:
            shutil.rmtree(base, ignore_errors=True)
    print("all agent scenarios passed")


if __name__ == "__main__":
    main()
