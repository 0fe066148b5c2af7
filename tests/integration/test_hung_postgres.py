"""A hung PostgreSQL as the agent sees it: the postgresql probe kind
(agent/pg_probe.c: a new connection and a query within one timeout) and the
agent's own check and status query, against a real PostgreSQL (meridian_harness)
that is frozen with SIGSTOP (postmaster and every backend: the kernel still
completes TCP handshakes on its port) and against small sockets run by this
file. The controller is fake_controller.py: it records every heartbeat, so
the tests see exactly what the agent reported.

  frozen_server   while the server is frozen: the postgresql probe reports
                  not ok (its own timeout, never an ok from an earlier
                  connection) although a tcp probe of the same port still
                  connects; the member is reported healthy false, role
                  unknown, its pg check critical; after SIGCONT all ok again.
                  The probe's target in heartbeats carries no password.
  probe_errors    a closed port (connect error), a socket that accepts but
                  never answers the startup packet (timeout, said so), a query
                  that fails (its error), a good one (ok).
Waits are bounded with room for a loaded machine; no timing is asserted (the
time from the freeze to the first failed probe is printed).
"""
import json
import socket
import threading
import time

from fake_controller import FakeController
from meridian_harness import (Agent, PgCluster, dead_port, fixture, log,
                              require_env, run_all, test, wait_until)

WAIT = 40  # seconds: generous on a loaded 2-core machine
PROBE_TIMEOUT_MS = 2000  # room for a loaded machine: a connect must fit in it


class Env:
    pass


@fixture
def env():
    require_env("MERIDIAN_BUILD_DIR")
    e = Env()
    e.ctl = FakeController()
    return e


def start_agent(e, name, extra):
    cfg = {"heartbeat_ms": 200, "isolation_timeout_ms": 6000, "request_timeout_ms": 1500,
           "peer_tokens": [{"name": "peers", "token": "meridian-test-peer-token-0123456789",
                            "role": "agent"}]}
    cfg.update(extra)
    a = Agent(name, "eu", e.ctl.url, log_level="debug", extra=cfg)
    e.ctl.token = a.cfg["token"]
    a.start()
    return a


def beats(e, node):
    with e.ctl.lock:
        return list(e.ctl.beats.get(node, []))


def probes_of(beat):
    return {p["region"]: p for p in (beat or {}).get("probes", [])}


def last_probes(e, node):
    return probes_of(e.ctl.last_beat(node))


def member_of(beat, name):
    for m in (beat or {}).get("members", []):
        if m["name"] == name:
            return m
    return None


def check_of(beat, name):
    for c in (beat or {}).get("checks", []):
        if c["name"] == name:
            return c
    return None


@test
def frozen_server():
    e = env()
    pg = PgCluster.create("hung-pg")
    # trust authentication ignores the password: it is there to show that
    # heartbeats never carry it
    conn = "host=127.0.0.1 port=%d user=postgres dbname=postgres password=not-reported" % pg.port
    probe = {"interval_ms": 300, "timeout_ms": PROBE_TIMEOUT_MS}
    a = start_agent(e, "hp", {
        "members": [{"service": "orders", "name": "orders-h", "kind": "postgresql",
                     "conninfo": pg.conninfo()}],
        "checks": [{"name": "pg", "kind": "postgresql", "conninfo": pg.conninfo(),
                    "member": "orders-h", "interval_ms": 1000, "timeout_ms": 1000}],
        "probes": [dict(probe, region="us", kind="postgresql", target=conn),
                   dict(probe, region="ap", kind="tcp", target="127.0.0.1:%d" % pg.port)]})

    def all_ok():
        b = e.ctl.last_beat("hp")
        ps, m = probes_of(b), member_of(b, "orders-h")
        return (len(ps) == 2 and all(p["ok"] for p in ps.values()) and m
                and m["healthy"] and m["role"] == "primary" and b)
    b = wait_until(all_ok, WAIT, what="probes ok and a healthy primary")
    us = probes_of(b)["us"]
    assert us["target"] == "host=127.0.0.1 port=%d dbname=postgres user=postgres" % pg.port, us
    assert "not-reported" not in json.dumps(b), "a password reached a heartbeat"

    frozen = pg.freeze()
    t0 = time.monotonic()
    log("froze postgres %s: %d processes" % (pg.name, len(frozen)))
    try:
        n0 = len(beats(e, "hp"))
        first = wait_until(lambda: next((x for x in beats(e, "hp")[n0:]
                                         if not probes_of(x[1])["us"]["ok"]), None),
                           WAIT, what="the postgresql probe to fail on the frozen server")
        log("postgresql probe not ok %.2f s after the freeze (timeout %d ms): %s"
            % (first[0] - t0, PROBE_TIMEOUT_MS, probes_of(first[1])["us"]["error"]))
        err = probes_of(first[1])["us"]["error"]
        assert "timeout after %d ms" % PROBE_TIMEOUT_MS in err, err
        # the agent's own view: status query and pg check time out
        b = wait_until(lambda: (x := e.ctl.last_beat("hp")) and (m := member_of(x, "orders-h"))
                       and not m["healthy"] and m["role"] == "unknown" and x, WAIT,
                       what="the member reported unhealthy, role unknown")
        c = wait_until(lambda: (x := check_of(e.ctl.last_beat("hp"), "pg"))
                       and x["status"] == "critical" and x, WAIT, what="the pg check critical")
        assert any(w in c["output"].lower() for w in ("timed out", "timeout", "not connected")), c
        # hold the freeze a while: no probe run may pass meanwhile, while
        # the tcp probe of the same port still connects (the kernel answers)
        time.sleep(2 * PROBE_TIMEOUT_MS / 1000.0)
        during = [x[1] for x in beats(e, "hp") if x[0] >= first[0]]
        assert len(during) >= 5, len(during)
        ok_runs = [probes_of(x)["us"] for x in during if probes_of(x)["us"]["ok"]]
        assert not ok_runs, "a postgresql probe passed on a frozen server: %s" % ok_runs
        assert any(probes_of(x)["ap"]["ok"] for x in during), \
            "the tcp probe was expected to still connect to the frozen server's port"
        assert all(not member_of(x, "orders-h")["healthy"] for x in during[-3:]), during[-3:]
    finally:
        pg.thaw()
    t1 = time.monotonic()
    n1 = len(beats(e, "hp"))

    def first_beat(pred):
        return next((x[0] - t1 for x in beats(e, "hp")[n1:] if pred(x[1])), None)
    b = wait_until(all_ok, WAIT, what="probes, check and member ok again after SIGCONT")
    log("after SIGCONT: postgresql probe ok in %.2f s, pg check passing in %.2f s, member "
        "healthy in %.2f s, all at once in %.2f s"
        % (first_beat(lambda x: probes_of(x)["us"]["ok"]),
           first_beat(lambda x: check_of(x, "pg")["status"] == "passing"),
           first_beat(lambda x: member_of(x, "orders-h")["healthy"]), time.monotonic() - t1))
    assert check_of(b, "pg")["status"] == "passing", b
    assert a.alive(), "agent died"
    assert a.stop() == 0


class Silent:
    """A TCP port that accepts connections and never answers (a server
    hung before it reads the startup packet)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)  # held open, never read
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


@test
def probe_errors():
    e = env()
    pg = PgCluster.create("probe-pg")
    silent = Silent()
    try:
        base = {"kind": "postgresql", "interval_ms": 300, "timeout_ms": PROBE_TIMEOUT_MS}
        a = start_agent(e, "pe", {"probes": [
            dict(base, region="closed",
                 target="host=127.0.0.1 port=%d user=postgres" % dead_port()),
            dict(base, region="silent", target="host=127.0.0.1 port=%d user=postgres"
                 % silent.port),
            dict(base, region="badquery", target=pg.conninfo(), query="SELECT 1/0"),
            dict(base, region="good", target=pg.conninfo(), query="SELECT count(*) FROM pg_class"),
        ]})

        def settled():
            ps = last_probes(e, "pe")
            return (len(ps) == 4 and ps["good"]["ok"] and not ps["closed"]["ok"]
                    and not ps["silent"]["ok"] and not ps["badquery"]["ok"] and ps)
        ps = wait_until(settled, WAIT, what="each probe's verdict")
        assert ps["good"]["error"] is None, ps["good"]
        assert ps["closed"]["error"].startswith("connect:"), ps["closed"]
        assert "refused" in ps["closed"]["error"].lower(), ps["closed"]
        assert ps["silent"]["error"] == ("timeout after %d ms: no answer to the startup packet"
                                         % PROBE_TIMEOUT_MS), ps["silent"]
        assert ps["badquery"]["error"].startswith("query:"), ps["badquery"]
        assert "division by zero" in ps["badquery"]["error"], ps["badquery"]
        assert a.stop() == 0
    finally:
        silent.close()


if __name__ == "__main__":
    run_all()
