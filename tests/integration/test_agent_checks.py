"""meridian-agent's http checks, its http/tcp probes of other regions and
fence mode "stop", against small HTTP servers run by this file, a real
PostgreSQL on loopback (meridian_harness) and the fake controller style of
test_agent_pg.py (it records every heartbeat, so the tests see exactly what
the agent reported, and it hands out the commands a test asks for).

  http_checks     status (2xx, expect_status), weight critical/warning and
                  the member's health, a server that stopped (refused), one
                  slower than the timeout, a body over the 64 KiB limit,
                  recovery; output stays under MRD_PROTO_OUTPUT_MAX; an
                  empty expect_body is refused by --check-config
  http_body_substring  expect_body: passing only while the body contains it
  probes          http probes of two "regions" and one tcp probe: ok while
                  the targets answer, ok false with an error when one is
                  stopped or answers 503, ok again after recovery
  fence_stop      fence mode stop: a failing stop command gives a failed
                  result with its error and leaves PostgreSQL writable; the
                  real stop command (pg_ctl stop) gives done with the
                  shutdown checkpoint as final position (past the last
                  write), PostgreSQL is down and the member is reported
                  fenced, not healthy; the
                  unfence command (pg_ctl start) makes it a writable primary
Waits are bounded with room for a loaded machine; no timing is asserted.
"""
import http.server
import json
import threading
import time

import psycopg2

from fake_controller import FakeController
from meridian_harness import (PGBIN, Agent, PgCluster, TempDir, fixture, free_port, program_path,
                              require_env, run, run_all, test, wait_until)

WAIT = 20  # seconds: generous on a loaded 2-core machine


# ---------------------------------------------------------------- target servers
# (the fake controller is fake_controller.py, shared with test_agent_pg.py)


class Target:
    """An HTTP server on a fixed loopback port whose answer per path the test
    sets: (status, body, delay in seconds). stop() closes the port (the
    agent sees connection refused), start() opens it again."""

    def __init__(self):
        self.port = free_port()
        self.lock = threading.Lock()
        self.paths = {"/health": (200, b"ok\n", 0.0)}
        self.server = None
        self.start()

    def url(self, path="/health"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def set(self, path="/health", status=200, body=b"ok\n", delay=0.0):
        with self.lock:
            self.paths[path] = (status, body, delay)

    def start(self):
        tgt = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with tgt.lock:
                    status, body, delay = tgt.paths.get(self.path, (404, b"no\n", 0.0))
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the agent gave up (timeout)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


# ---------------------------------------------------------------- fixtures


class Env:
    pass


@fixture
def env():
    require_env("MERIDIAN_BUILD_DIR")
    e = Env()
    e.ctl = FakeController()
    e.web = Target()
    e.us = Target()
    e.ap = Target()
    return e


def start_agent(e, name, region, extra):
    cfg = {"heartbeat_ms": 200, "isolation_timeout_ms": 3000, "request_timeout_ms": 1000,
           "peer_tokens": [{"name": "peers", "token": "meridian-test-peer-token-0123456789",
                            "role": "agent"}]}
    cfg.update(extra)
    a = Agent(name, region, e.ctl.url, log_level="debug", extra=cfg)
    e.ctl.token = a.cfg["token"]
    a.start()
    return a


def checks_of(e, node):
    return {c["name"]: c for c in (e.ctl.last_beat(node) or {}).get("checks", [])}


def probes_of(e, node):
    return {p["region"]: p for p in (e.ctl.last_beat(node) or {}).get("probes", [])}


def member_of(e, node, name):
    for m in (e.ctl.last_beat(node) or {}).get("members", []):
        if m["name"] == name:
            return m
    return None


def refused(text):
    """The text of a failed connection to a closed port. curl says "Couldn't
    connect to server"; when libuv reports the socket's error before curl
    looks at it (common/http_client.c passes CURL_CSELECT_ERR) curl says
    only "select/poll returned error"."""
    t = (text or "").lower()
    return "connect" in t or "refused" in t or "select/poll returned error" in t


def wait_check(e, node, name, status, what, output=None):
    """Waits until check `name` of `node` reports `status` (and, if given,
    `output` in its output, case-insensitive); returns the check."""
    def ok():
        c = checks_of(e, node).get(name)
        return (c and c["status"] == status
                and (output is None or output.lower() in c["output"].lower()) and c)
    return wait_until(ok, WAIT, what="check %s %s (%s)" % (name, status, what))


# ---------------------------------------------------------------- tests


@test
def http_checks():
    e = env()
    # an exec member stands for what the critical check guards
    member = {"service": "web", "name": "web-h", "kind": "exec",
              "status_command": ["/bin/echo", "replica"],
              "promote_command": ["/bin/true"],
              "fence": {"mode": "exec", "command": ["/bin/true"]}}
    ck = {"kind": "http", "interval_ms": 1000, "timeout_ms": 1000}
    e.web.set("/teapot", 418, b"short and stout\n")
    e.web.set("/big", 200, b"x" * (100 * 1024))
    h = start_agent(e, "h", "eu", {
        "members": [member],
        "checks": [
            dict(ck, name="web", url=e.web.url(), member="web-h"),
            dict(ck, name="web-warn", url=e.web.url(), weight="warning"),
            dict(ck, name="teapot", url=e.web.url("/teapot"), expect_status=418,
                 weight="warning"),
            dict(ck, name="big", url=e.web.url("/big"), weight="warning"),
            {"name": "chatty", "kind": "exec", "weight": "warning", "interval_ms": 1000,
             "timeout_ms": 1000, "command": ["/bin/sh", "-c", "head -c 5000 /dev/zero | tr '\\0' y"]},
        ]})

    # all pass while the answers match
    wait_until(lambda: len(checks_of(e, "h")) == 5, WAIT, what="all five checks reported")
    c = wait_check(e, "h", "web", "passing", "200", "HTTP 200")
    assert c["output"] == "HTTP 200", c
    wait_check(e, "h", "web-warn", "passing", "200")
    wait_check(e, "h", "teapot", "passing", "expected 418", "HTTP 418")
    wait_until(lambda: (m := member_of(e, "h", "web-h")) and m["healthy"], WAIT,
               what="member healthy while its critical check passes")
    # a body over the client's 64 KiB response limit fails the check
    wait_check(e, "h", "big", "warning", "body over 64 KiB", "too_large")
    # output is bounded: the exec check printed 5000 bytes
    chatty = wait_check(e, "h", "chatty", "passing", "exec output")
    assert 0 < len(chatty["output"]) < 1024 and chatty["output"].startswith("yyy"), \
        len(chatty["output"])

    # a different status: critical (member unhealthy) or warning, by weight
    e.web.set("/health", 503, b"down\n")
    wait_check(e, "h", "web", "critical", "503", "HTTP 503")
    wait_check(e, "h", "web-warn", "warning", "503", "HTTP 503")
    wait_until(lambda: (m := member_of(e, "h", "web-h")) and not m["healthy"], WAIT,
               what="member unhealthy while its critical check fails")
    # expect_status is exact: a 200 is a failure when 418 is expected
    e.web.set("/teapot", 200, b"coffee\n")
    wait_check(e, "h", "teapot", "warning", "200 but 418 expected", "HTTP 200")

    # recovery
    e.web.set("/health", 200, b"ok\n")
    e.web.set("/teapot", 418, b"short and stout\n")
    wait_check(e, "h", "web", "passing", "recovered from 503")
    wait_check(e, "h", "web-warn", "passing", "recovered from 503")
    wait_check(e, "h", "teapot", "passing", "418 again")
    wait_until(lambda: member_of(e, "h", "web-h")["healthy"], WAIT, what="member healthy again")

    # slower than the check's timeout (1 s): timeout
    e.web.set("/health", 200, b"ok\n", delay=3.0)
    wait_check(e, "h", "web", "critical", "slow answer", "timeout")
    wait_check(e, "h", "web-warn", "warning", "slow answer", "timeout")
    e.web.set("/health", 200, b"ok\n")
    wait_check(e, "h", "web", "passing", "fast again")

    # server stopped: connection refused
    e.web.stop()
    try:
        c = wait_check(e, "h", "web", "critical", "server stopped")
        assert refused(c["output"]) and "HTTP" not in c["output"], c
        c = wait_check(e, "h", "web-warn", "warning", "server stopped")
        assert refused(c["output"]) and "HTTP" not in c["output"], c
        wait_until(lambda: not member_of(e, "h", "web-h")["healthy"], WAIT,
                   what="member unhealthy while the server is down")
    finally:
        e.web.start()
    wait_check(e, "h", "web", "passing", "server back", "HTTP 200")
    wait_check(e, "h", "web-warn", "passing", "server back")
    wait_until(lambda: member_of(e, "h", "web-h")["healthy"], WAIT, what="member healthy again")
    assert h.alive(), "agent died"
    assert h.stop() == 0

    # expect_body: an empty one is refused by the configuration check
    tmp = TempDir("agent-http-body")
    bad = dict(h.cfg, checks=[dict(ck, name="web", url=e.web.url(), expect_body="")])
    with open(tmp.join("bad.json"), "w") as f:
        json.dump(bad, f)
    r = run([program_path("meridian-agent"), "--config", tmp.join("bad.json"),
             "--check-config"], check=False)
    assert r.returncode == 1 and "expect_body" in r.stdout, r


@test
def http_body_substring():
    """expect_body: the check passes only while the answer's body contains
    it (also after a NUL byte), whatever the status says."""
    e = env()
    e.web.set("/ready", 200, b"status: \x00 ready\n")
    ck = {"kind": "http", "interval_ms": 500, "timeout_ms": 500, "weight": "warning"}
    b = start_agent(e, "b", "eu", {"checks": [
        dict(ck, name="ready", url=e.web.url("/ready"), expect_body="ready"),
        dict(ck, name="any", url=e.web.url("/ready")),
    ]})
    wait_check(e, "b", "ready", "passing", "body contains ready", "HTTP 200")
    e.web.set("/ready", 200, b"status: starting\n")
    c = wait_check(e, "b", "ready", "warning", "body lacks ready", "body lacks")
    assert c["output"] == 'HTTP 200, body lacks "ready"', c
    wait_check(e, "b", "any", "passing", "no body expectation")
    e.web.set("/ready", 200, b"ready")
    wait_check(e, "b", "ready", "passing", "ready again", "HTTP 200")
    assert b.stop() == 0


@test
def probes():
    e = env()
    p = start_agent(e, "p", "eu", {"probes": [
        {"region": "us", "kind": "http", "target": e.us.url(), "interval_ms": 300,
         "timeout_ms": 1000},
        {"region": "ap", "kind": "http", "target": e.ap.url(), "interval_ms": 300,
         "timeout_ms": 1000},
        {"region": "sa", "kind": "tcp", "target": "127.0.0.1:%d" % e.us.port,
         "interval_ms": 300, "timeout_ms": 1000},
    ]})

    def all_ok():
        ps = probes_of(e, "p")
        return len(ps) == 3 and all(x["ok"] and x["error"] is None for x in ps.values()) and ps
    ps = wait_until(all_ok, WAIT, what="three probes ok")
    assert ps["us"]["target"] == e.us.url() and ps["ap"]["target"] == e.ap.url(), ps
    assert ps["sa"]["target"] == "127.0.0.1:%d" % e.us.port, ps
    assert all(x["latency_ms"] >= 0 for x in ps.values()), ps

    # one region's target stops: only its probe fails, with an error
    e.ap.stop()
    try:
        ap = wait_until(lambda: (x := probes_of(e, "p")["ap"]) and not x["ok"] and x, WAIT,
                        what="probe ap to fail while its target is down")
        assert refused(ap["error"]) and "HTTP" not in ap["error"], ap
        ps = probes_of(e, "p")
        assert ps["us"]["ok"] and ps["sa"]["ok"], ps
    finally:
        e.ap.start()
    wait_until(all_ok, WAIT, what="probe ap ok again")

    # an answer other than 2xx fails an http probe too
    e.us.set("/health", 503, b"down\n")
    us = wait_until(lambda: (x := probes_of(e, "p")["us"]) and not x["ok"] and x, WAIT,
                    what="probe us to fail on 503")
    assert "503" in us["error"], us
    assert probes_of(e, "p")["sa"]["ok"], "the tcp probe still connects"
    e.us.set("/health", 200, b"ok\n")
    wait_until(all_ok, WAIT, what="probe us ok again")

    # the tcp probe fails when its port closes
    e.us.stop()
    try:
        sa = wait_until(lambda: (x := probes_of(e, "p")["sa"]) and not x["ok"] and x, WAIT,
                        what="tcp probe to fail while the port is closed")
        assert sa["error"] and "refused" in sa["error"].lower(), sa
    finally:
        e.us.start()
    wait_until(all_ok, WAIT, what="all probes ok again")
    assert p.stop() == 0


def write_works(pg):
    try:
        pg.sql("INSERT INTO t(v) VALUES ('x')")
        return True
    except psycopg2.Error:
        return False


def pg_down(pg):
    try:
        pg.sql_value("SELECT 1")
    except psycopg2.Error:
        return True
    return False


@test
def fence_stop():
    e = env()
    pg = PgCluster.create("fence-stop")
    pg.sql("CREATE TABLE t (id bigserial PRIMARY KEY, v text)")
    e.ctl.services["orders"] = {"epoch": 1, "primary_region": "eu"}
    pgctl = ["runuser", "-u", "postgres", "--", PGBIN + "/pg_ctl", "-D", pg.data]

    def pg_member(fence):
        return {"service": "orders", "name": "orders-f", "kind": "postgresql",
                "conninfo": pg.conninfo(connect_timeout=2), "data_dir": pg.data,
                "command_timeout_ms": 60000, "fence": fence}

    # a stop command that fails: the result is failed with its error
    f1 = start_agent(e, "f1", "eu", {"members": [pg_member(
        {"mode": "stop", "command": ["/bin/sh", "-c", "echo cannot stop postgres >&2; exit 1"]})]})
    wait_until(lambda: (m := member_of(e, "f1", "orders-f")) and m["role"] == "primary"
               and m["healthy"], WAIT, what="f1 reports a writable primary")
    e.ctl.command("f1", "stop-fail", "orders", "orders-f", "fence", 1)
    res = e.ctl.result("stop-fail")
    assert res["status"] == "failed", res
    assert "exit 1" in res["error"] and "cannot stop postgres" in res["error"], res
    assert write_works(pg), "a failed stop must leave PostgreSQL writable"
    time.sleep(0.5)
    m = member_of(e, "f1", "orders-f")
    assert m["role"] == "primary" and not m["fenced"], m
    assert f1.stop() == 0

    # the real stop command, and pg_ctl start as the unfence command
    f2 = start_agent(e, "f2", "eu", {"members": [pg_member(
        {"mode": "stop", "command": pgctl + ["-m", "fast", "-w", "stop"],
         "unfence_command": pgctl + ["-l", pg.log_path, "-w", "start"]})]})
    wait_until(lambda: (m := member_of(e, "f2", "orders-f")) and m["role"] == "primary"
               and m["healthy"], WAIT, what="f2 reports a writable primary")
    # the last write before the stop: the fence's final position (the
    # shutdown checkpoint in the control file) must be past it
    write_works(pg)
    last = pg.current_lsn()
    e.ctl.command("f2", "stop-1", "orders", "orders-f", "fence", 1)
    res = e.ctl.result("stop-1", timeout=60)
    assert res["status"] == "done" and res["error"] is None, res
    assert pg_down(pg), "PostgreSQL must be stopped by the fence"
    assert not pg.running()
    assert (res.get("position") or 0) >= last > 0, (res, last)
    ctl_data = run(["runuser", "-u", "postgres", "--", PGBIN + "/pg_controldata", "-D", pg.data])
    ckpt = [ln.split(":", 1)[1].strip() for ln in ctl_data.stdout.splitlines()
            if ln.startswith("Latest checkpoint location:")]
    hi, lo = ckpt[0].split("/")
    assert res["position"] == (int(hi, 16) << 32) | int(lo, 16), (res, ckpt)
    m = wait_until(lambda: (m := member_of(e, "f2", "orders-f")) and m["fenced"]
                   and m["role"] == "unknown" and m and not m["healthy"] and m, WAIT,
                   what="f2 to report the stopped member fenced")
    # it stays so (the status query keeps failing; nothing unfences it)
    time.sleep(1.0)
    m = member_of(e, "f2", "orders-f")
    assert m["fenced"] and m["role"] != "primary", m
    assert pg_down(pg)

    e.ctl.command("f2", "start-1", "orders", "orders-f", "unfence", 1)
    res = e.ctl.result("start-1", timeout=90)
    assert res["status"] == "done", res
    wait_until(lambda: write_works(pg), WAIT, what="writes after unfence (pg_ctl start)")
    wait_until(lambda: (m := member_of(e, "f2", "orders-f")) and m["role"] == "primary"
               and not m["fenced"] and m["healthy"], WAIT,
               what="f2 to report a writable primary again")
    assert f2.stop() == 0


if __name__ == "__main__":
    run_all()
