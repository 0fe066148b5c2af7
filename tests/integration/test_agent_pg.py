"""meridian-agent against a real PostgreSQL primary and a pg_basebackup
replica on loopback (meridian_harness), one agent per node (a: primary in
region eu, b: replica in region us), peer leases between them.

The controller side is a small fake controller (http.server) run by this
file: it records every heartbeat and answers with the epochs, commands and
"recorded" flag each test needs. The real controller cannot be told to send
an arbitrary command (a stale epoch, a repeated id); the lead may move the
tests that do not need that to the real controller.

The tests share one set of clusters and agents and run in order:
  command_line   --check-config, bad configuration, usage, corrupt epoch file
  lag            lag grows while replay is paused, returns to 0 after resume;
                 b's first controller is down, it uses the next one
  checks         postgresql/http/tcp/exec checks (timeout, output), tcp probes
  lease_epoch    a replica agent that has seen epoch N+1 refuses a lease of N,
                 also after a restart
  fence          fence makes writes fail while reads work, its result carries
                 the final position; unfence (pushed by a poke) restores; the
                 result goes out in an urgent heartbeat with the agent's URL
  stale_epoch    a stale-epoch command is refused, also after an agent restart
  at_most_once   a command id is not executed twice across a restart
  failsafe       no recorded contact but every peer lease: stays writable
  self_fence     neither recorded contact nor a peer lease: fences itself, and
                 stays fenced until the controller unfences it
  promote_wait   promote waits for the granted lease to end, then promotes
  superseded     a writable primary that the store no longer names primary
                 fences itself at once; the member promoted in the epoch not
  rejoin         the diverged old primary is fenced and rejoined with
                 deploy/hooks/pg-rejoin (pg_rewind): it replicates the new one
  exec_member    a member of kind exec: status, promote, fence, unfence
Waits are bounded with room for a loaded machine; the only timing asserted
is a lower bound (a promote never before the lease it granted ended).
"""
import json
import os
import time

import psycopg2

from fake_controller import FakeController
from meridian_harness import (Agent, PgCluster, fixture, free_port, dead_port, http_json,
                              require_env, run_all, source_dir, test, wait_until)

ISOLATION_MS = 3000
PEER_TOKEN = "meridian-test-peer-token-0123456789"


def write_fails(pg):
    """An INSERT fails because the server is read-only."""
    try:
        pg.sql("INSERT INTO t(v) VALUES ('x')")
    except psycopg2.Error as e:
        return "read-only" in str(e)
    return False


def write_works(pg):
    try:
        pg.sql("INSERT INTO t(v) VALUES ('x')")
        return True
    except psycopg2.Error:
        return False


def lease(agent, service, epoch, node="test", ttl=1000, token=PEER_TOKEN):
    return http_json("POST", agent.url + "/v1/peer/lease",
                     {"service": service, "epoch": epoch, "node": node, "ttl_ms": ttl}, token)



# ---------------------------------------------------------------- environment
# (the fake controller is fake_controller.py, shared with test_agent_checks.py)


class Env:
    pass


@fixture
def env():
    """Primary p, replica r, fake controller ctl, agents a (p) and b (r)."""
    require_env("MERIDIAN_BUILD_DIR")
    e = Env()
    e.p = PgCluster.create("primary")
    e.p.sql("CREATE TABLE t (id bigserial PRIMARY KEY, v text)")
    e.r = e.p.make_replica("replica")
    wait_until(lambda: [x for x in e.p.replication_state() if x["state"] == "streaming"], 30,
               what="replica streaming")
    e.ctl = FakeController()
    e.ctl.services["orders"] = {"epoch": 1, "primary_region": "eu", "primary_position": 0}
    e.ctl.primary_node = "a"
    e.closed_port = dead_port()
    common = {"heartbeat_ms": 200, "isolation_timeout_ms": ISOLATION_MS,
              "request_timeout_ms": 500,
              "peer_tokens": [{"name": "peers", "token": PEER_TOKEN, "role": "agent"}]}
    port_a, port_b = free_port(), free_port()
    ca = dict(common)
    ca.update({
        "peers": [{"name": "b", "url": "http://127.0.0.1:%d" % port_b, "token": PEER_TOKEN,
                   "services": ["orders"]}],
        "members": [{"service": "orders", "name": "orders-a", "kind": "postgresql",
                     "conninfo": e.p.conninfo(connect_timeout=2), "data_dir": e.p.data,
                     "rejoin_command": [os.path.join(source_dir(), "deploy/hooks/pg-rejoin")]}],
        "checks": [
            {"name": "pg-a", "kind": "postgresql", "conninfo": e.p.conninfo(),
             "interval_ms": 500, "timeout_ms": 400, "member": "orders-a"},
            {"name": "http-ok", "kind": "http", "url": e.ctl.url + "/health",
             "weight": "warning", "interval_ms": 300, "timeout_ms": 300},
            {"name": "http-bad", "kind": "http", "url": e.ctl.url + "/down",
             "weight": "warning", "interval_ms": 300, "timeout_ms": 300},
            {"name": "tcp", "kind": "tcp", "target": "127.0.0.1:%d" % e.p.port,
             "interval_ms": 300, "timeout_ms": 300, "member": "orders-a"},
            {"name": "exec-warn", "kind": "exec", "weight": "warning", "interval_ms": 300,
             "timeout_ms": 300, "command": ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]},
            {"name": "exec-slow", "kind": "exec", "weight": "warning", "interval_ms": 1000,
             "timeout_ms": 200, "command": ["/bin/sh", "-c", "sleep 5"]},
        ],
        "probes": [
            {"region": "us", "kind": "tcp", "target": "127.0.0.1:%d" % e.r.port},
            {"region": "ap", "kind": "tcp", "target": "127.0.0.1:%d" % e.closed_port},
        ],
    })
    cb = dict(common)
    cb.update({
        "peers": [{"name": "a", "url": "http://127.0.0.1:%d" % port_a, "token": PEER_TOKEN}],
        "members": [{"service": "orders", "name": "orders-b", "kind": "postgresql",
                     "conninfo": e.r.conninfo(connect_timeout=2)}],
        "checks": [{"name": "pg-b", "kind": "postgresql", "conninfo": e.r.conninfo(),
                    "interval_ms": 500, "timeout_ms": 400, "member": "orders-b"}],
    })
    e.a = Agent("a", "eu", e.ctl.url, log_level="debug", extra=ca, port=port_a)
    # b's first controller is down: it must move on to the next one
    e.dead_ctl = "http://127.0.0.1:%d" % dead_port()
    e.b = Agent("b", "us", [e.dead_ctl, e.ctl.url], log_level="debug", extra=cb, port=port_b)
    e.ctl.token = e.a.cfg["token"]
    e.a.start()
    e.b.start()
    return e


def restart(agent):
    rc = agent.stop()
    assert rc == 0, "agent %s exited %s on SIGTERM" % (agent.name, rc)
    agent.start()


def log_text(agent):
    return agent.proc.log_text()


def member(e, node, name):
    return e.ctl.last_member(node, name)


@test
def command_line():
    """--check-config, a bad configuration (exit 1, the key named), no
    arguments (exit 2): no PostgreSQL needed."""
    from meridian_harness import TempDir, program_path, run
    tmp = TempDir("agent-cli")
    good = {"node": "n", "region": "eu", "controllers": ["http://127.0.0.1:9"],
            "token": "t", "state_dir": tmp.path}
    bad = dict(good, heartbeat_ms="fast")
    for name, cfg in (("good", good), ("bad", bad)):
        with open(tmp.join(name + ".json"), "w") as f:
            json.dump(cfg, f)
    agent = program_path("meridian-agent")
    r = run([agent, "--config", tmp.join("good.json"), "--check-config"], check=False)
    assert r.returncode == 0 and "configuration ok" in r.stdout, r
    r = run([agent, "--config", tmp.join("bad.json")], check=False)
    assert r.returncode == 1 and "heartbeat_ms" in r.stdout, r
    r = run([agent], check=False)
    assert r.returncode == 2 and "usage" in r.stdout, r
    # a corrupt epoch file stops the agent: it must not forget its epochs
    with open(os.path.join(tmp.path, "epochs.json"), "w") as f:
        f.write("{not json")
    r = run([agent, "--config", tmp.join("good.json")], check=False, timeout_s=20)
    assert r.returncode == 1 and "epochs.json" in r.stdout, r


@test
def lag():
    e = env()
    # a replayed commit gives the replica a last replay timestamp
    e.p.sql("INSERT INTO t(v) VALUES ('first')")
    wait_until(lambda: (m := member(e, "b", "orders-b")) and m["role"] == "replica"
               and m["lag_bytes"] == 0 and m["lag_ms"] == 0 and m["replay_timestamp_ms"] > 0
               and m, 30, what="replica b at lag 0")
    e.r.pause_replay()
    e.p.sql("INSERT INTO t(v) SELECT repeat('x', 1000) FROM generate_series(1, 2000)")
    m = wait_until(lambda: (m := member(e, "b", "orders-b")) and (m["lag_bytes"] or 0) > 1000000
                   and (m["lag_ms"] or 0) > 0 and m, 20, what="lag to grow while paused")
    assert m["receive_position"] > m["replay_position"], m
    time.sleep(0.6)
    m2 = member(e, "b", "orders-b")
    assert m2["lag_ms"] > m["lag_ms"], (m, m2)
    e.r.resume_replay()
    wait_until(lambda: (m := member(e, "b", "orders-b")) and m["lag_bytes"] == 0
               and m["lag_ms"] == 0 and m["healthy"], 20, what="lag back to 0 after resume")
    am = member(e, "a", "orders-a")
    assert am["role"] == "primary" and am["position"] > 0 and am["timeline"] == 1, am
    # b reached the fake controller although the first of its list is down
    assert ('msg="heartbeat failed" controller=%s' % e.dead_ctl) in log_text(e.b)
    assert am["lag_bytes"] == 0 and am["healthy"], am


@test
def standbys():
    """The primary's member reports its pg_stat_replication: the replica
    streaming, its name and positions; a replica reports none."""
    e = env()
    e.p.sql("INSERT INTO t(v) VALUES ('seen by the standby')")
    rep = e.p.replication_state()
    assert len(rep) == 1, rep
    lsn = e.p.current_lsn()

    def streaming():
        m = member(e, "a", "orders-a")
        sb = (m or {}).get("standbys") or []
        return (len(sb) == 1 and sb[0]["state"] == "streaming"
                and (sb[0]["replay_position"] or 0) >= lsn and m)
    m = wait_until(streaming, 30, what="a reporting b streaming up to %d" % lsn)
    sb = m["standbys"][0]
    assert sb["name"] == rep[0]["application_name"], (sb, rep)
    assert sb["sync_state"] == "async" and sb["address"] == "127.0.0.1", sb
    assert sb["sent_position"] >= sb["flush_position"] >= sb["replay_position"] > 0, sb
    assert sb["replay_lag_ms"] is None or sb["replay_lag_ms"] >= 0, sb
    assert not member(e, "b", "orders-b").get("standbys"), member(e, "b", "orders-b")
    # the replica gone: the primary reports no standby any more (then it
    # comes back: the environment is shared with the next tests)
    e.r.stop("fast")
    wait_until(lambda: (m := member(e, "a", "orders-a")) and not m.get("standbys"), 30,
               what="a reporting no standby after b stopped")
    e.r.start()
    wait_until(streaming, 30, what="a reporting b streaming again")


@test
def checks():
    e = env()

    def report():
        req = e.ctl.last_beat("a") or {}
        cs = {c["name"]: c for c in req.get("checks", [])}
        ps = {p["target"]: p for p in req.get("probes", [])}
        return len(cs) == 6 and len(ps) == 2 and (cs, ps)
    cs, ps = wait_until(report, 20, what="every check and probe reported")
    assert cs["pg-a"]["status"] == "passing", cs["pg-a"]
    assert cs["http-ok"]["status"] == "passing" and "200" in cs["http-ok"]["output"]
    assert cs["http-bad"]["status"] == "warning" and "503" in cs["http-bad"]["output"]
    assert cs["tcp"]["status"] == "passing", cs["tcp"]
    w = cs["exec-warn"]
    assert w["status"] == "warning" and "exit 3" in w["output"] and "out" in w["output"], w
    assert "err" in w["output"], w
    slow = cs["exec-slow"]
    assert slow["status"] == "warning" and "timeout" in slow["output"], slow
    ok = ps["127.0.0.1:%d" % e.r.port]
    assert ok["ok"] and ok["region"] == "us" and ok["error"] is None, ok
    bad = ps["127.0.0.1:%d" % e.closed_port]
    assert not bad["ok"] and "refused" in bad["error"], bad
    # warnings do not make a member unhealthy
    assert member(e, "a", "orders-a")["healthy"]


@test
def lease_epoch():
    e = env()
    st, ans = lease(e.b, "orders", 1)
    assert st == 200 and ans["granted"] and ans["ttl_ms"] == 1000, ans
    st, ans = lease(e.b, "orders", 1, token="wrong-token")
    assert st == 401, (st, ans)
    st, ans = lease(e.b, "orders", "x")
    assert st == 400 and "epoch" in ans["error"]["message"], ans
    st, ans = lease(e.b, "nosuch", 1)
    assert st == 200 and not ans["granted"] and "no member" in ans["reason"], ans
    with e.ctl.lock:
        e.ctl.services["orders"]["epoch"] = 2
    wait_until(lambda: (e.ctl.last_beat("b") or {}).get("epochs", {}).get("orders") == 2, 10,
               what="agent b to report epoch 2")
    st, ans = lease(e.b, "orders", 1)
    assert st == 200 and not ans["granted"] and ans["epoch"] == 2, ans
    assert "seen epoch 2" in ans["reason"], ans
    st, ans = lease(e.b, "orders", 2)
    assert st == 200 and ans["granted"], ans
    # the epoch file: also after a restart
    restart(e.b)
    wait_until(lambda: lease(e.b, "orders", 1)[0] == 200, 20, what="agent b back")
    st, ans = lease(e.b, "orders", 1)
    assert not ans["granted"] and ans["epoch"] == 2, ans


@test
def fence():
    e = env()
    assert write_works(e.p)
    m_before = member(e, "a", "orders-a")
    e.ctl.command("a", "fence-1", "orders", "orders-a", "fence", 2)
    res = e.ctl.result("fence-1")
    assert res["status"] == "done", res
    assert write_fails(e.p), "writes must fail on a fenced primary"
    assert e.p.sql_value("SELECT count(*) FROM t") > 0, "reads must work"
    wait_until(lambda: (m := member(e, "a", "orders-a")) and m["fenced"]
               and m["role"] == "fenced", 10, what="heartbeat to report fenced")
    # the final position of the fenced primary comes with the result
    assert res["position"] >= m_before["position"] > 0, (res, m_before)
    # unfence through a poke (the leader pushes a command): not in any answer
    st, ans = http_json("POST", e.a.url + "/v1/agent/poke",
                        {"commands": [{"id": "unfence-1", "service": "orders",
                                       "member": "orders-a", "kind": "unfence", "epoch": 2}]},
                        PEER_TOKEN)
    assert st == 200 and ans["accepted"] == 1, (st, ans)
    res = e.ctl.result("unfence-1")
    assert res["status"] == "done", res
    beat = e.ctl.beat_with_result("a", "unfence-1")
    assert beat["urgent"] is True and beat["api_url"] == e.a.url, beat
    st, ans = http_json("POST", e.a.url + "/v1/agent/poke", {"commands": [{"id": "x"}]},
                        PEER_TOKEN)
    assert st == 400 and "commands[0].service" in ans["error"]["message"], (st, ans)
    wait_until(lambda: write_works(e.p), 10, what="writes after unfence")
    wait_until(lambda: (m := member(e, "a", "orders-a")) and not m["fenced"]
               and m["role"] == "primary", 10, what="heartbeat to report primary")


@test
def stale_epoch():
    e = env()
    e.ctl.command("a", "stale-1", "orders", "orders-a", "fence", 1)
    res = e.ctl.result("stale-1")
    assert res["status"] == "refused" and "stale epoch 1 < 2" in res["error"], res
    assert write_works(e.p), "a refused fence must not fence"
    restart(e.a)
    e.ctl.command("a", "stale-2", "orders", "orders-a", "fence", 1)
    res = e.ctl.result("stale-2")
    assert res["status"] == "refused", res
    assert write_works(e.p)


@test
def at_most_once():
    e = env()
    e.ctl.command("a", "fence-2", "orders", "orders-a", "fence", 2)
    assert e.ctl.result("fence-2")["status"] == "done"
    assert write_fails(e.p)
    e.ctl.command("a", "unfence-2", "orders", "orders-a", "unfence", 2)
    assert e.ctl.result("unfence-2")["status"] == "done"
    wait_until(lambda: write_works(e.p), 10, what="writes after unfence")
    restart(e.a)
    # the controller sends fence-2 again (say it lost the result)
    with e.ctl.lock:
        del e.ctl.results["fence-2"]
    e.ctl.command("a", "fence-2", "orders", "orders-a", "fence", 2)
    res = e.ctl.result("fence-2")
    assert res["status"] == "done", res
    time.sleep(0.5)
    assert write_works(e.p), "fence-2 must not run twice"
    assert "command already executed" in log_text(e.a)


@test
def failsafe():
    """No recorded contact for twice the isolation timeout, but b grants
    every lease: a stays writable."""
    e = env()
    wait_until(lambda: (m := member(e, "a", "orders-a")) and m["role"] == "primary", 10,
               what="a primary")
    with e.ctl.lock:
        e.ctl.recorded = False
    try:
        time.sleep(2 * ISOLATION_MS / 1000.0 + 1.0)
        assert write_works(e.p), "peer leases must keep the primary writable"
        assert "isolated" not in log_text(e.a)
    finally:
        with e.ctl.lock:
            e.ctl.recorded = True


@test
def self_fence():
    """No recorded contact and no lease from b (agent b stopped)."""
    e = env()
    assert e.b.stop() == 0
    with e.ctl.lock:
        e.ctl.recorded = False
    t0 = time.monotonic()
    wait_until(lambda: write_fails(e.p), ISOLATION_MS / 1000.0 + 10, what="a to fence itself")
    assert time.monotonic() - t0 >= 2.0, "fenced while the lease from b still held"
    assert "isolated: fencing the primary" in log_text(e.a)
    wait_until(lambda: (m := member(e, "a", "orders-a")) and m["fenced"], 10,
               what="heartbeat to report fenced")
    # a self-fenced primary stays fenced with contact back ...
    with e.ctl.lock:
        e.ctl.recorded = True
    time.sleep(1.0)
    assert write_fails(e.p)
    # ... until the controller unfences it
    e.ctl.command("a", "unfence-3", "orders", "orders-a", "unfence", 2)
    assert e.ctl.result("unfence-3")["status"] == "done"
    wait_until(lambda: write_works(e.p), 10, what="writes after unfence")
    e.b.start()


@test
def promote_wait():
    e = env()
    # a asks b for a lease every beat; b is then ordered to promote
    wait_until(lambda: "peer lease granted" in e.b.proc.log_text(since_start=True), 20,
               what="b to grant a lease")
    time.sleep(0.5)
    e.ctl.command("b", "promote-1", "orders", "orders-b", "promote", 3)
    res = e.ctl.result("promote-1", timeout=40)
    assert res["status"] == "done", res
    waited = e.ctl.results["promote-1"][0] - e.ctl.delivered["promote-1"]
    assert waited >= 2.0, "promoted %.2f s after delivery, before the lease ended" % waited
    assert "promote waits for a granted peer lease to end" in log_text(e.b)
    assert e.r.sql_value("SELECT pg_is_in_recovery()") is False
    wait_until(lambda: (m := member(e, "b", "orders-b")) and m["role"] == "primary", 10,
               what="b to report primary")
    # b grants no lease of the old epoch any more
    st, ans = lease(e.b, "orders", 2)
    assert st == 200 and not ans["granted"], ans


@test
def superseded():
    """The store names b primary in epoch 3: a, still writable (a split brain
    made by this test), fences itself at once; b, promoted in epoch 3, not."""
    e = env()
    # the old primary diverges: it takes a write after b's promotion
    assert write_works(e.p)
    with e.ctl.lock:
        e.ctl.services["orders"].update(epoch=3, primary_member="orders-b", primary_region="us")
    wait_until(lambda: write_fails(e.p), 10, what="a to fence itself")
    assert "superseded: fencing the primary" in log_text(e.a)
    time.sleep(0.5)
    assert write_works(e.r), "the member promoted in this epoch stays writable"


@test
def rejoin():
    e = env()
    e.ctl.command("a", "fence-3", "orders", "orders-a", "fence", 3)
    assert e.ctl.result("fence-3")["status"] == "done"
    e.ctl.command("a", "rejoin-1", "orders", "orders-a", "rejoin", 3,
                  {"primary_conninfo": e.r.conninfo(), "primary_region": "us"})
    res = e.ctl.result("rejoin-1", timeout=120)
    assert res["status"] == "done", res
    assert e.p.sql_value("SELECT pg_is_in_recovery()") is True
    e.r.sql("INSERT INTO t(v) VALUES ('after-rejoin')")
    wait_until(lambda: e.p.sql_value("SELECT count(*) FROM t WHERE v = 'after-rejoin'") == 1,
               20, what="a row written on the new primary to reach the rejoined node")
    assert write_fails(e.p), "the rejoined node is a read-only replica"
    wait_until(lambda: (m := member(e, "a", "orders-a")) and m["role"] == "replica"
               and m["timeline"] == 2 and not m["fenced"] and m["lag_bytes"] == 0, 20,
               what="heartbeat to report a replica on timeline 2")
    assert "rejoined as a replica" in log_text(e.a)


@test
def exec_member():
    """A member of kind exec: role from status_command, promote/fence/unfence
    through commands (a state file stands for the managed system)."""
    e = env()
    from meridian_harness import TempDir
    tmp = TempDir("agent-exec")
    state = tmp.join("role")
    with open(state, "w") as f:
        f.write("replica\n")

    def setter(role):
        return ["/bin/sh", "-c", "echo %s > %s" % (role, state)]
    c = Agent("c", "ap", e.ctl.url, log_level="debug", extra={
        "heartbeat_ms": 200, "isolation_timeout_ms": ISOLATION_MS, "request_timeout_ms": 500,
        "peer_tokens": [{"name": "peers", "token": PEER_TOKEN, "role": "agent"}],
        "members": [{"service": "cache", "name": "cache-c", "kind": "exec",
                     "status_command": ["/bin/cat", state],
                     "promote_command": setter("primary"),
                     "fence": {"mode": "exec", "command": setter("fenced"),
                               "unfence_command": setter("primary")}}]})
    c.start()
    wait_until(lambda: (m := member(e, "c", "cache-c")) and m["role"] == "replica"
               and m["healthy"], 20, what="exec member reported as a replica")
    e.ctl.command("c", "c-promote", "cache", "cache-c", "promote", 1)
    assert e.ctl.result("c-promote", timeout=30)["status"] == "done"
    wait_until(lambda: member(e, "c", "cache-c")["role"] == "primary", 10,
               what="exec member primary")
    e.ctl.command("c", "c-fence", "cache", "cache-c", "fence", 1)
    assert e.ctl.result("c-fence")["status"] == "done"
    wait_until(lambda: (m := member(e, "c", "cache-c")) and m["role"] == "fenced"
               and m["fenced"], 10, what="exec member fenced")
    e.ctl.command("c", "c-unfence", "cache", "cache-c", "unfence", 1)
    assert e.ctl.result("c-unfence")["status"] == "done"
    wait_until(lambda: (m := member(e, "c", "cache-c")) and m["role"] == "primary"
               and not m["fenced"], 10, what="exec member unfenced")
    # a rejoin without a configured hook fails with a clear message
    e.ctl.command("c", "c-rejoin", "cache", "cache-c", "rejoin", 1)
    res = e.ctl.result("c-rejoin")
    assert res["status"] == "failed" and "no rejoin command" in res["error"], res
    assert c.stop() == 0


if __name__ == "__main__":
    run_all()
